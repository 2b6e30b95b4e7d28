# A CPU-sized ViLD run on the built-in shapes example (4 images, circle / square base, triangle novel)
# with the tiny random teacher and online distillation: seconds per iteration, for tests and smoke runs.
_base_ = [
    "../_base_/models/vild_r50_fpn.py",
    "../_base_/default_runtime.py",
]
data_root = "examples/shapes/"
vocabulary = data_root + "vocabulary.json"
model = dict(
    teacher="tiny-vit", vocabulary=vocabulary, templates="single", backbone="resnet18", backbone_weights=None,
    trainable_layers=5,
    distill=dict(source="online", num_regions=16, batch_size=32),
    detector=dict(min_size=128, max_size=128, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
                  rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50, box_batch_size_per_image=64,
                  box_detections_per_img=50, box_score_thresh=0.001))
train_dataloader = dict(
    batch_size=2, num_workers=0,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="ovd.detection_collate"),
    dataset=dict(type="CocoDetection", ann_file=data_root + "annotations.json", img_dir=data_root + "images",
                 vocabulary=vocabulary, train_classes="base", filter_empty=True,
                 pipeline=[dict(type="RandomHorizontalFlip", p=0.5)]))
val_dataloader = dict(
    batch_size=2, num_workers=0, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="ovd.detection_collate"),
    dataset=dict(type="CocoDetection", ann_file=data_root + "annotations.json", img_dir=data_root + "images",
                 vocabulary=vocabulary))
test_dataloader = val_dataloader
val_evaluator = dict(type="DetectionMetric", ann_file=data_root + "annotations.json", vocabulary=vocabulary,
                     name="shapes")
test_evaluator = val_evaluator
train_cfg = dict(type="IterBasedTrainLoop", max_iters=20, val_interval=20)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
# A small learning rate: the cosine logits (temperature 0.01) spike at 0.01 on 2-image batches.
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.002, momentum=0.9, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=5)]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(by_epoch=False, interval=10, max_keep_ckpts=2))
log_processor = dict(by_epoch=False, window_size=5)
