# ADE20k-150 (SceneParsing, ADEChallengeData2016): label PNGs hold 0 for "other" (ignored, the
# reduce-zero-label convention) and k for class k - 1 of objectInfo150. mIoU over the 2000 val images.
# Every path below derives from data_root: --cfg-options data_root=/datasets/ADEChallengeData2016/
data_root = "data/ade/ADEChallengeData2016/"
classes = "ade20k-150"
crop_size = 512
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="ovseg.seg_collate"),
    dataset=dict(type="SegDataset", img_dir=data_root + "images/training", ann_dir=data_root + "annotations/training",
                 classes=classes, reduce_zero_label=True, img_suffix=".jpg", on_bad_image="skip",
                 pipeline=[dict(type="RandomShortestSize", min_size=[256, 384, 512, 640, 768, 896, 1024],
                                max_size=4096),
                           dict(type="RandomCrop", size=crop_size, pad_if_needed=True),
                           dict(type="RandomHorizontalFlip", p=0.5),
                           dict(type="ColorJitter", brightness=0.125, contrast=0.5, saturation=0.5, hue=0.05)]))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="ovseg.seg_collate"),
    dataset=dict(type="SegDataset", img_dir=data_root + "images/validation",
                 ann_dir=data_root + "annotations/validation", classes=classes, reduce_zero_label=True,
                 img_suffix=".jpg"))
test_dataloader = val_dataloader
val_evaluator = dict(type="SegMetric", vocabulary=classes)
test_evaluator = val_evaluator
