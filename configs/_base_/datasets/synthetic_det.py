# The synthetic shapes world (ovclip.synthetic) as a detection dataset: training on the 8 base shapes' boxes,
# testing on all 12 with the OV evaluator (AP50 novel / base). tools/bench_ov.py fills in a generated world's
# paths; by hand: python -c "from ovclip.synthetic import make_world; make_world('work_dirs/world')"
data_root = "work_dirs/world/"
vocabulary = "synthetic-shapes"  # builtin: the world's 12 shapes, 8 base / 4 novel
train_dataloader = dict(
    batch_size=4, num_workers=0,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="ovd.detection_collate"),
    dataset=dict(type="CocoDetection", ann_file=data_root + "train_base.json", img_dir=data_root + "train/images",
                 vocabulary=vocabulary, train_classes="base", pipeline=[dict(type="RandomHorizontalFlip", p=0.5)]))
test_dataloader = dict(
    batch_size=4, num_workers=0, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="ovd.detection_collate"),
    dataset=dict(type="CocoDetection", ann_file=data_root + "val.json", img_dir=data_root + "val/images",
                 vocabulary=vocabulary))
test_evaluator = dict(type="DetectionMetric", ann_file=data_root + "val.json", vocabulary=vocabulary,
                      name="synthetic")
