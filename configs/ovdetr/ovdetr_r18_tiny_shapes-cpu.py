# A CPU-sized OV-DETR run on the built-in shapes example (4 images, circle / square base, triangle novel)
# with the tiny random teacher: a fraction of a second per iteration, for tests and smoke runs.
_base_ = ["./ovdetr_teacher-rn_synthetic-cpu.py"]
data_root = "examples/shapes/"
vocabulary = data_root + "vocabulary.json"
model = dict(teacher="tiny-vit", vocabulary=vocabulary, backbone="resnet18",
             backbone_weights=None, trainable_layers=5, backbone_norm="frozen_bn", fpn_levels=2,
             transformer=dict(d_model=64, encoder_layers=1, decoder_layers=2, ffn_dim=128, num_queries=10),
             conditioning=dict(max_len=4), min_size=128, max_size=128)
train_dataloader = dict(
    batch_size=2,
    dataset=dict(ann_file=data_root + "annotations.json", img_dir=data_root + "images", vocabulary=vocabulary,
                 filter_empty=True))
test_dataloader = dict(
    batch_size=2,
    dataset=dict(ann_file=data_root + "annotations.json", img_dir=data_root + "images", vocabulary=vocabulary))
test_evaluator = dict(ann_file=data_root + "annotations.json", vocabulary=vocabulary, name="shapes")
train_cfg = dict(max_iters=20)
param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=5)]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=10, max_keep_ckpts=2))
