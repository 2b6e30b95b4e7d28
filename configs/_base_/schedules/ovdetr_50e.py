# OV-DETR's schedule: 50 epochs of AdamW 2e-4 (backbone, sampling offsets and reference points x0.1),
# weight decay 1e-4, dropped x0.1 at epoch 40, gradients clipped at 0.1; batch 2 x 8 GPUs. The backbone
# slowed is the ResNet (the reference's backbone.0, here backbone.body): the FPN in front of it is new, as
# the reference's input projections are, and trains at the full rate.
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=50, val_interval=50)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=2e-4, weight_decay=1e-4),
                     paramwise_cfg=dict(custom_keys={"backbone.body": dict(lr_mult=0.1),
                                                     "sampling_offsets": dict(lr_mult=0.1),
                                                     "reference_points": dict(lr_mult=0.1)}),
                     clip_grad=dict(max_norm=0.1, norm_type=2))
param_scheduler = [dict(type="MultiStepLR", begin=0, end=50, by_epoch=True, milestones=[40], gamma=0.1)]
auto_scale_lr = dict(enable=False, base_batch_size=16)
