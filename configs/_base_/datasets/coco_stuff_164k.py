# COCO-Stuff-164k, 171 classes (118k train / 5k val) through mmseg's COCOStuffDataset (labels 0..170, 255
# ignored; mmseg's tools/dataset_converters/coco_stuff164k.py writes them). The zero-shot (transductive)
# protocol of ZS3Net / SPNet that MaskCLIP+ reports: vocabulary 'zs-coco-stuff-171' (base / novel); training
# sees only the base classes' labels (train_classes="base"), the novel classes' pixels unlabelled; mIoU over
# base and novel and their harmonic mean hIoU.
# Every path derives from data_root: --cfg-options data_root=/datasets/...
data_root = "data/coco_stuff164k/"
classes = "zs-coco-stuff-171"
crop_size = (512, 512)
_pipeline_head = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="ovseg.seg_collate"),
    dataset=dict(type="MMSegDataset", vocabulary=classes, train_classes="base",
                 dataset=dict(type="COCOStuffDataset", data_root=data_root,
                              data_prefix=dict(img_path="images/train2017", seg_map_path="annotations/train2017"),
                              pipeline=[*_pipeline_head,
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
                 dataset=dict(type="COCOStuffDataset", data_root=data_root,
                              data_prefix=dict(img_path="images/val2017", seg_map_path="annotations/val2017"),
                              pipeline=[*_pipeline_head, dict(type="PackSegInputs")])))
test_dataloader = val_dataloader
val_evaluator = dict(type="SegMetric", vocabulary=classes)
test_evaluator = val_evaluator
