# ViLD on OV-LVIS (rare classes novel), ResNet-50 FPN with a class-agnostic mask head, 24 epochs.
# Up to 300 detections per image, as LVIS evaluation expects.
_base_ = [
    "../_base_/models/vild_r50_fpn.py",
    "../_base_/datasets/ov_lvis.py",
    "../_base_/schedules/schedule_2x.py",
    "../_base_/default_runtime.py",
]
model = dict(vocabulary="ov-lvis", with_mask=True,
             detector=dict(box_detections_per_img=300, box_score_thresh=0.0001))
