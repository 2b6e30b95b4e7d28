# Cityscapes, 19 evaluated classes (2975 train / 500 val; *_gtFine_labelTrainIds.png from cityscapesscripts'
# createTrainIdLabelImgs) through mmseg's CityscapesDataset (255 ignored). No zero-shot split: train
# annotation-free (pseudo_label.classes="all") or on every class.
# Every path derives from data_root: --cfg-options data_root=/datasets/...
data_root = "data/cityscapes/"
classes = "cityscapes-19"
crop_size = (512, 1024)
_pipeline_head = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="ovseg.seg_collate"),
    dataset=dict(type="MMSegDataset", vocabulary=classes, train_classes="all",
                 dataset=dict(type="CityscapesDataset", data_root=data_root,
                              data_prefix=dict(img_path="leftImg8bit/train", seg_map_path="gtFine/train"),
                              pipeline=[*_pipeline_head,
                                        dict(type="RandomResize", scale=(2048, 1024), ratio_range=(0.5, 2.0),
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
                 dataset=dict(type="CityscapesDataset", data_root=data_root,
                              data_prefix=dict(img_path="leftImg8bit/val", seg_map_path="gtFine/val"),
                              pipeline=[*_pipeline_head, dict(type="PackSegInputs")])))
test_dataloader = val_dataloader
val_evaluator = dict(type="SegMetric", vocabulary=classes)
test_evaluator = val_evaluator
