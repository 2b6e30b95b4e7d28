# MaskCLIP+ on ADE20k-150 (annotation-free, as in the paper): the paper's student, DeepLabV2 on a dilated
# ResNet-101 (mmseg's ResNetV1c, output stride 8, ImageNet weights `open-mmlab://resnet101_v1c`, downloaded
# only because named here, when training starts), its head ending in the teacher's embedding size and
# classified by the text embeddings; it learns from MaskCLIP ViT-B/16 pseudo-labels over all 150 classes,
# then from its own predictions after 8k of 16k iterations (self-training).
_base_ = ["../_base_/models/maskclip_plus_deeplabv2_r101.py", "../_base_/datasets/ade20k_150.py",
          "../_base_/seg_runtime.py"]
model = dict(teacher="ViT-B-16/openai", vocabulary="ade20k-150", templates="maskclip",
             temperature=0.01,
             pseudo_label=dict(classes="all", key_smoothing=0.5, prompt_denoising=0.5, self_train_from=8000,
                               inference=dict(mode="slide", crop_size=448, stride=224)),
             inference=dict(mode="slide", crop_size=512, stride=341, short_side=512))
train_cfg = dict(type="IterBasedTrainLoop", max_iters=16000, val_interval=4000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4))
param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=16000, by_epoch=False)]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
