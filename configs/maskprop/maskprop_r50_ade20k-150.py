# Mask-proposal segmenter on ADE20k-150 with OpenAI's ViT-B/16 teacher: ResNet-50 (ImageNet weights,
# downloaded only because named here), 100 queries, 512x512 crops, 80k iterations. Train on a
# vocabulary with a base / novel split to measure transfer (ade20k-150 itself has none).
_base_ = ["../_base_/datasets/ade20k_150.py", "../_base_/seg_runtime.py"]
model = dict(type="MaskProposalSegmenter", teacher="ViT-B-16/openai", vocabulary="ade20k-150", templates="maskclip",
             backbone="resnet50", backbone_weights="IMAGENET1K_V2", backbone_norm="bn", output_stride=16,
             num_queries=100, hidden_dim=256, decoder_layers=6, temperature=0.01, teacher_crop_scale=1.0,
             inference=dict(mode="slide", crop_size=512, stride=341, short_side=512))
train_cfg = dict(type="IterBasedTrainLoop", max_iters=80000, val_interval=8000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-4, weight_decay=1e-4),
                     paramwise_cfg=dict(custom_keys={"backbone": dict(lr_mult=0.1)}),
                     clip_grad=dict(max_norm=0.01, norm_type=2))
param_scheduler = [dict(type="PolyLR", eta_min=0, power=0.9, begin=0, end=80000, by_epoch=False)]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=8000, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
