# ViLD on the synthetic shapes world (ovclip.synthetic): 8 base shapes annotated for training, 4 novel
# ones in the images but unannotated; the teacher is the tiny CLIP trained on the world's captions
# (model_zoo/synthetic). No ImageNet weights can be loaded offline, so the backbone is a copy of the
# teacher's own ModifiedResNet tower (its batch-norm statistics follow the data) under a 128-channel
# FPN, at 128 pixels upsampled to 256 inside the model. Its last stage (layer4) trains, as the paper
# trains its backbone: with the whole trunk frozen, ViLD-text inherits CLIP's features on novel shapes
# for free and the bench no longer measures what distillation adds (benchmarks/RESULTS.md has the
# figures, and why the 32 store regions and 550 iterations stay; steps cost the same). A
# MobileNetV3 FPN trained from scratch (backbone="mobilenet_v3_small", backbone_norm="gn") under-fits
# in a CPU budget: its image head reached cosine 0.65 with the teacher's region embeddings against 0.89
# with the teacher's frozen tower (see model_zoo/README.md).
# tools/bench_ov.py fills in the world's paths; by hand:
#   python -c "from ovclip.synthetic import make_world; make_world('work_dirs/world')"
_base_ = [
    "../_base_/models/vild_r50_fpn.py",
    "../_base_/datasets/synthetic_det.py",
    "../_base_/default_runtime.py",
]
data_root = "work_dirs/world/"
vocabulary = "synthetic-shapes"  # builtin: the world's 12 shapes, 8 base / 4 novel
teacher = dict(_delete_=True, config="model_zoo/synthetic/teacher.json",
               pretrained="model_zoo/synthetic/teacher.safetensors")
model = dict(
    teacher=teacher, vocabulary=vocabulary, templates="single", backbone="teacher",
    backbone_weights=None, trainable_layers=1, backbone_norm="bn", fpn_channels=128, fpn_levels=3,
    anchor_sizes=(16, 32, 64, 128), box_head_dim=512,
    temperature=0.05,
    distill=dict(source="online", num_regions=32, batch_size=128),
    detector=dict(min_size=256, max_size=256, rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=150,
                  rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128,
                  box_batch_size_per_image=128, box_detections_per_img=50, box_score_thresh=0.001,
                  roi_sampling_ratio=0))
train_cfg = dict(type="IterBasedTrainLoop", max_iters=500)
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=50),
                   dict(type="CosineAnnealingLR", by_epoch=False, begin=50, T_max=450, eta_min=1e-5)]
# A log line every 10 iterations (a CPU iteration takes seconds), a checkpoint every 100 (--resume after a kill).
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(by_epoch=False, interval=100, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)
