# VL-PLM's detector on OV-COCO: no distillation, the text classifier trained over all 65 classes on the 48
# base classes' boxes plus the teacher's novel-class box pseudo-labels (configs/pseudo_boxes/ov-coco_vit-b-32.py,
# tools/pseudo_boxes.py), each pseudo-label's classification and box losses weighted by its score as in
# VL-PLM's code (pseudo_weight="one" weighs them as ground truth).
_base_ = ["./vild_r50_fpn_1x_ov-coco.py"]
data_root = "data/coco/"
model = dict(distill=dict(source="none"), inference_mode="text", gt_classes="all")
train_dataloader = dict(dataset=dict(feature_store=None,
                                     pseudo_annotations=[data_root + "annotations/pseudo_boxes_train2017.json"],
                                     pseudo_weight="score"))
