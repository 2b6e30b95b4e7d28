# MaskCLIP+ on the synthetic world: a DeepLabV3 with a MobileNetV3-small backbone (trained from scratch,
# GroupNorm) learns the 8 base shapes from their labels and the 4 novel shapes from MaskCLIP's
# pseudo-labels on unlabelled pixels, then from its own predictions (self-training).
#   python tools/train.py configs/maskclip_plus/maskclip-plus_mnv3_synthetic-cpu.py
_base_ = ["../_base_/datasets/synthetic_seg.py", "../_base_/seg_runtime.py"]
model = dict(type="MaskCLIPPlus", vocabulary="synthetic-shapes", templates="single",
             teacher=dict(config="model_zoo/synthetic/teacher.json",
                          pretrained="model_zoo/synthetic/teacher.safetensors"),
             backbone="mobilenet_v3_small", backbone_norm="gn", output_stride=16, temperature=0.05,
             pseudo_label=dict(classes="novel", self_train_from=300),
             inference=dict(mode="whole"))
train_cfg = dict(type="IterBasedTrainLoop", max_iters=400)
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=40),
                   dict(type="CosineAnnealingLR", by_epoch=False, begin=40, T_max=360, eta_min=1e-5)]
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(by_epoch=False, interval=400, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=50)
