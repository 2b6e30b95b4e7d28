# The CPU schedule of the synthetic-world segmenters (on the segmentation runtime): 400 iterations of
# AdamW with warm-up and cosine decay; a log line every 10 iterations (a CPU iteration takes seconds) and a
# checkpoint every 100, so that a killed run resumes (--resume) with little lost.
_base_ = ["../seg_runtime.py"]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=400)
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=40),
                   dict(type="CosineAnnealingLR", by_epoch=False, begin=40, T_max=360, eta_min=1e-5)]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(by_epoch=False, interval=100, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)
