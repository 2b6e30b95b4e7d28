# DetPro's learned prompts for OV-LVIS, as its paper and detpro.sh: ViT-B/32, 8 context vectors per IoU
# bin, the 866 base (frequent + common) classes, negatives with IoU in [0.1, 0.5) kept 1 in 10. The store:
# tools/precompute.py on LVIS v1 train with a base-trained RPN's proposals (as for ViLD's distillation).
_base_ = ["../_base_/models/detpro_prompts.py"]
model = dict(teacher="ViT-B-32/openai", vocabulary="ov-lvis")
data_root = "data/coco/"  # COCO images (train2017/); --cfg-options data_root=... lvis_root=... point at yours
lvis_root = "data/lvis/"
train_dataloader = dict(dataset=dict(ann_file=lvis_root + "lvis_v1_train.json", img_dir=data_root,
                                     feature_store=lvis_root + "vild_store", vocabulary="ov-lvis"))
