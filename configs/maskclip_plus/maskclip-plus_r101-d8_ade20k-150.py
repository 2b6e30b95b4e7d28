# MaskCLIP+ on ADE20k-150 (annotation-free, as in the paper): the paper's student, DeepLabV2 on a dilated
# ResNet-101 (mmseg's ResNetV1c, output stride 8, ImageNet weights `open-mmlab://resnet101_v1c`, downloaded
# only because named here, when training starts), its head ending in the teacher's embedding size and
# classified by the text embeddings; it learns from MaskCLIP ViT-B/16 pseudo-labels over all 150 classes,
# then from its own predictions after 8k of 16k iterations (self-training).
# For multi-GPU training set norm_cfg's type to "SyncBN" (--cfg-options norm_cfg.type=SyncBN does not reach
# the copies below: edit the line).
_base_ = ["../_base_/datasets/ade20k_150.py", "../_base_/seg_runtime.py"]
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(type="MaskCLIPPlus", teacher="ViT-B-16/openai", vocabulary="ade20k-150", templates="maskclip",
             segmentor=dict(
                 type="EncoderDecoder", pretrained="open-mmlab://resnet101_v1c",
                 backbone=dict(type="ResNetV1c", depth=101, num_stages=4, out_indices=(0, 1, 2, 3),
                               dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=norm_cfg, norm_eval=False,
                               style="pytorch", contract_dilation=True),
                 # MaskCLIP's maskclip_plus configs: ASPPHeadV2, dilations 6 / 12 / 18 / 24, 1024 channels
                 decode_head=dict(type="DeepLabV2Head", in_channels=2048, in_index=3, channels=1024,
                                  dilations=(6, 12, 18, 24), dropout_ratio=0.0, norm_cfg=norm_cfg,
                                  align_corners=False)),
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
