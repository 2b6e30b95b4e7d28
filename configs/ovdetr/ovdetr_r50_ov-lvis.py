# OV-DETR on OV-LVIS (rare classes novel): the OV-COCO recipe on LVIS v1's base classes plus the teacher's
# pseudo-boxes of the rare ones; boxes only (the paper's mask branch is not built).
_base_ = ["../_base_/models/ovdetr_r50.py", "../_base_/datasets/ov_lvis.py", "../_base_/schedules/ovdetr_50e.py",
          "../_base_/default_runtime.py"]
data_root = "data/coco/"
lvis_root = "data/lvis/"
model = dict(vocabulary="ov-lvis",
             conditioning=dict(class_bank=lvis_root + "ovdetr_class_bank.safetensors"))
train_dataloader = dict(dataset=dict(pipeline={{_base_.detr_train_pipeline}}, with_masks=False, feature_store=None,
                                     pseudo_annotations=[lvis_root + "pseudo_boxes_train.json"],
                                     pseudo_weight="one"))
val_evaluator = [dict(type="LvisMetric", ann_file=lvis_root + "lvis_v1_val.json", vocabulary="ov-lvis",
                      iou_type="bbox")]
test_evaluator = val_evaluator
