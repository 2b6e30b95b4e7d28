# MaskCLIP+ in the zero-shot (transductive) setting on PASCAL VOC 2012 (20 classes, background labelled as no
# class), as MaskCLIP's zero_shot/maskclip_plus_r50_deeplabv2_r101-d8_512x512_20k_voc12aug_20.py: the base
# classes' labels, MaskCLIP (CLIP RN50) pseudo-labels among the 5 novel classes on the unlabelled pixels for
# 2k iterations, then the student's own predictions (self-training) to 20k. Student: the ADE20k config's
# DeepLabV2 on a dilated ResNet-101 (mmseg, ImageNet weights open-mmlab://resnet101_v1c, downloaded only
# because named here). Reports mIoU_base / mIoU_novel / hIoU.
_base_ = ["../_base_/models/maskclip_plus_deeplabv2_r101.py", "../_base_/datasets/voc12_20.py",
          "../_base_/seg_runtime.py"]
model = dict(teacher="RN50/openai", vocabulary="zs-voc-20", templates="maskclip",
             temperature=0.01,
             pseudo_label=dict(classes="novel", self_train_from=2000, inference=dict(mode="whole")),
             inference=dict(mode="whole"))
train_cfg = dict(type="IterBasedTrainLoop", max_iters=20000, val_interval=4000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4))
param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=20000, by_epoch=False)]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
