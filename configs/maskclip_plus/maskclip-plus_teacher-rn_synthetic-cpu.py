# MaskCLIP+ on the synthetic world: the student learns the 8 base shapes from their labels and the 4 novel
# shapes from MaskCLIP's pseudo-labels on unlabelled object pixels, then from its own predictions
# (self-training). The student is an mmseg DeepLabV3+ (EncoderDecoder, DepthwiseSeparableASPPHead with
# low-level fusion: stride-4 maps for small shapes) whose head ends in the teacher's embedding size, classified
# by the text embeddings. No ImageNet backbone can be loaded offline, and a MobileNetV3 trained from scratch
# did not learn the shapes in a CPU budget (base mIoU 3-6 after 400-800 iterations), so the backbone is a
# frozen copy of the teacher's ModifiedResNet tower (mmseg backbone "TeacherTrunk"; its batch-norm statistics
# follow the data) and the head is trained.
#   python tools/train.py configs/maskclip_plus/maskclip-plus_teacher-rn_synthetic-cpu.py
_base_ = ["../_base_/datasets/synthetic_seg.py", "../_base_/schedules/synthetic_cpu_400it.py"]
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(type="MaskCLIPPlus", vocabulary="synthetic-shapes", templates="single",
             teacher=dict(config="model_zoo/synthetic/teacher.json",
                          pretrained="model_zoo/synthetic/teacher.safetensors"),
             segmentor=dict(
                 type="EncoderDecoder",
                 backbone=dict(type="TeacherTrunk", out_indices=(0, 1, 2, 3)),
                 # the synthetic teacher's stages: 64 / 128 / 256 / 512 channels at strides 4 / 8 / 16 / 32
                 decode_head=dict(type="DepthwiseSeparableASPPHead", in_channels=512, in_index=3, channels=256,
                                  dilations=(1, 12, 24, 36), c1_in_channels=64, c1_channels=48, dropout_ratio=0.1,
                                  norm_cfg=norm_cfg, align_corners=False)),
             freeze_backbone=True, temperature=0.05,
             pseudo_label=dict(classes="novel", self_train_from=300),
             inference=dict(mode="whole"))
