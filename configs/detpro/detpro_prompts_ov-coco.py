# DetPro's learned prompts for OV-COCO: 8 context vectors per IoU bin ([0.5, 0.6) ... [0.9, 1.1)) on
# ViT-B/32, trained on the region store of configs/precompute/ov-coco_vit-b-32.py (proposals of a
# base-trained RPN), labelled by IoU with the 48 base classes' boxes. Then ViLD with them:
#   python tools/train.py configs/detpro/vild_detpro_r50_fpn_1x_ov-coco.py
_base_ = ["../_base_/models/detpro_prompts.py"]
data_root = "data/coco/"
model = dict(teacher="ViT-B-32/openai", vocabulary="ov-coco")
train_dataloader = dict(dataset=dict(ann_file=data_root + "annotations/instances_train2017.json",
                                     img_dir=data_root + "train2017", feature_store=data_root + "vild_store",
                                     vocabulary="ov-coco"))
