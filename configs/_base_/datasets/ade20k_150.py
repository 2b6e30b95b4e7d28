# ADE20k-150 (SceneParsing, ADEChallengeData2016) through mmseg's ADE20KDataset and transforms: label PNGs
# hold 0 for "other" (ignored, reduce_zero_label) and k for class k - 1 of objectInfo150. Training as mmseg's
# ADE20k configs (random resize of 2048x512 by 0.5-2, 512 crops with at most 75% of one class, flip,
# photometric distortion), padded to the crop size (images 0, labels ignored) so that a batch stacks.
# mIoU over the 2000 val images. Every path derives from data_root:
#   --cfg-options data_root=/datasets/ADEChallengeData2016/
data_root = "data/ade/ADEChallengeData2016/"
classes = "ade20k-150"
crop_size = (512, 512)
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="ovseg.seg_collate"),
    dataset=dict(type="MMSegDataset", vocabulary=classes,
                 dataset=dict(type="ADE20KDataset", data_root=data_root,
                              data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
                              pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                                        dict(type="RandomResize", scale=(2048, 512), ratio_range=(0.5, 2.0),
                                             keep_ratio=True),
                                        dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
                                        dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion"),
                                        dict(type="Pad", size=crop_size, pad_val=dict(img=0, seg=255)),
                                        dict(type="PackSegInputs")])))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="ovseg.seg_collate"),
    dataset=dict(type="MMSegDataset", vocabulary=classes,
                 dataset=dict(type="ADE20KDataset", data_root=data_root,
                              data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
                              pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                                        dict(type="PackSegInputs")])))
test_dataloader = val_dataloader
val_evaluator = dict(type="SegMetric", vocabulary=classes)
test_evaluator = val_evaluator
