# The synthetic shapes world's semantic labels (ovclip.synthetic) through mmseg's dataset and transforms:
# PNG value 0 is background (labelled as no class: no loss, no metric, no pseudo-label; as VOC's background in
# the zero-shot protocol of ZS3Net / MaskCLIP+), k + 1 is shape k of the builtin 'synthetic-shapes'
# vocabulary (8 base, 4 novel shapes). Training keeps only base-class labels: the novel shapes are in the
# images, unlabelled. tools/bench_ov.py fills in the world's paths; by hand:
#   python -c "from ovclip.synthetic import make_world; make_world('work_dirs/world')"
data_root = "work_dirs/world/"
classes = "synthetic-shapes"
train_dataloader = dict(
    batch_size=8, num_workers=0,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="ovseg.seg_collate"),
    dataset=dict(type="MMSegDataset", vocabulary=classes, zero_is_background=True, train_classes="base",
                 dataset=dict(type="SyntheticShapesDataset", data_root=data_root + "train",
                              data_prefix=dict(img_path="images", seg_map_path="labels"),
                              pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                                        dict(type="RandomFlip", prob=0.5), dict(type="PackSegInputs")])))
test_dataloader = dict(
    batch_size=8, num_workers=0, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="ovseg.seg_collate"),
    dataset=dict(type="MMSegDataset", vocabulary=classes, zero_is_background=True,
                 dataset=dict(type="SyntheticShapesDataset", data_root=data_root + "val",
                              data_prefix=dict(img_path="images", seg_map_path="labels"),
                              pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                                        dict(type="PackSegInputs")])))
test_evaluator = dict(type="SegMetric", vocabulary=classes)
test_cfg = dict(type="TestLoop")
