# VL-PLM's detector on OV-LVIS: no distillation, the text classifier over all 1203 classes trained on the
# common and frequent classes' boxes plus the teacher's rare-class box pseudo-labels
# (configs/pseudo_boxes/ov-lvis_vit-b-32.py), weighted by their scores. Pseudo-labels are boxes without
# masks, so this detector has no mask head and is evaluated on boxes.
_base_ = ["./vild_r50_fpn_2x_ov-lvis.py"]
data_root = "data/coco/"
lvis_root = "data/lvis/"
model = dict(distill=dict(source="none"), inference_mode="text", gt_classes="all", with_mask=False)
train_dataloader = dict(dataset=dict(feature_store=None, with_masks=False,
                                     pseudo_annotations=[lvis_root + "pseudo_boxes_train.json"],
                                     pseudo_weight="score"))
val_evaluator = [dict(type="LvisMetric", ann_file=lvis_root + "lvis_v1_val.json", vocabulary="ov-lvis",
                      iou_type="bbox")]
test_evaluator = val_evaluator
