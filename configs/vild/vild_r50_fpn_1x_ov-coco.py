# ViLD (text + image distillation, ensemble at test time) on OV-COCO, ResNet-50 FPN, 12 epochs.
# First: python tools/precompute.py configs/precompute/ov-coco_vit-b-32.py --out data/coco/vild_store
_base_ = [
    "../_base_/models/vild_r50_fpn.py",
    "../_base_/datasets/ov_coco.py",
    "../_base_/schedules/schedule_1x.py",
    "../_base_/default_runtime.py",
]
model = dict(vocabulary="ov-coco")
