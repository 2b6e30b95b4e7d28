# The benchmark's "pseudo-labels" row: ViLD-text (no distillation) on the synthetic world, its text
# classifier trained over all 12 shapes on the 8 base shapes' boxes plus the teacher's novel-shape box
# pseudo-labels (configs/pseudo_boxes/synthetic-cpu.py), weighted by their scores as in VL-PLM.
_base_ = ["./vild_teacher-rn_fpn_synthetic-cpu.py"]
data_root = "work_dirs/world/"
model = dict(distill=dict(source="none"), inference_mode="text", gt_classes="all")
train_dataloader = dict(dataset=dict(pseudo_annotations=[data_root + "pseudo_boxes.json"], pseudo_weight="score"))
