# MaskCLIP+ on the synthetic world: the student learns the 8 base shapes from their labels and the 4 novel
# shapes from MaskCLIP's pseudo-labels on unlabelled object pixels, then from its own predictions
# (self-training). No ImageNet backbone can be loaded offline, and a MobileNetV3 trained from scratch
# did not learn the shapes in a CPU budget (base mIoU 3-6 after 400-800 iterations), so the student's
# backbone is a frozen copy of the teacher's ModifiedResNet tower (its batch-norm statistics follow the
# data), and the DeepLabV3+ head with low-level fusion (stride-4 maps for small shapes) is trained.
#   python tools/train.py configs/maskclip_plus/maskclip-plus_teacher-rn_synthetic-cpu.py
_base_ = ["../_base_/datasets/synthetic_seg.py", "../_base_/schedules/synthetic_cpu_400it.py"]
model = dict(type="MaskCLIPPlus", vocabulary="synthetic-shapes", templates="single",
             teacher=dict(config="model_zoo/synthetic/teacher.json",
                          pretrained="model_zoo/synthetic/teacher.safetensors"),
             backbone="teacher", freeze_backbone=True, backbone_norm="bn", decoder="deeplabv3plus",
             temperature=0.05,
             pseudo_label=dict(classes="novel", self_train_from=300),
             inference=dict(mode="whole"))
