# The synthetic shapes world's semantic labels (ovclip.synthetic): PNG value 0 is background (labelled as
# no class: no loss, no metric, no pseudo-label; as VOC's background in the zero-shot protocol),
# k + 1 is shape k of the builtin 'synthetic-shapes' vocabulary (8 base, 4 novel shapes).
# Training keeps only base-class labels: the novel shapes are in the images, unlabelled.
# tools/bench_ov.py fills in the world's paths; by hand:
#   python -c "from ovclip.synthetic import make_world; make_world('work_dirs/world')"
data_root = "work_dirs/world/"
classes = "synthetic-shapes"
train_dataloader = dict(
    batch_size=8, num_workers=0,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="ovseg.seg_collate"),
    dataset=dict(type="SegDataset", img_dir=data_root + "train/images", ann_dir=data_root + "train/labels",
                 classes=classes, reduce_zero_label=True, zero_is_background=True, img_suffix=".png",
                 train_classes="base",
                 pipeline=[dict(type="RandomHorizontalFlip", p=0.5)]))
test_dataloader = dict(
    batch_size=8, num_workers=0, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="ovseg.seg_collate"),
    dataset=dict(type="SegDataset", img_dir=data_root + "val/images", ann_dir=data_root + "val/labels",
                 classes=classes, reduce_zero_label=True, zero_is_background=True, img_suffix=".png"))
test_evaluator = dict(type="SegMetric", vocabulary=classes)
test_cfg = dict(type="TestLoop")
