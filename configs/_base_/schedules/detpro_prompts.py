# DetPro's prompt schedule (dyabel/detpro, prompt/run.py): SGD at lr 2e-3 without momentum or weight
# decay, cosine annealing over 6 epochs stepped per epoch, batches of 512 proposals, no gradient clipping.
_base_ = ["../default_runtime.py"]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=6)
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=2e-3, momentum=0.0, weight_decay=0.0))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, T_max=6, eta_min=0.0)]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(by_epoch=True, interval=1, max_keep_ckpts=2))
custom_hooks = [dict(type="PlainCheckpointHook"), dict(type="SavePromptsHook")]  # replaces the runtime's list
log_processor = dict(by_epoch=True, window_size=20)
