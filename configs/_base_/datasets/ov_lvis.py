# OV-LVIS (ViLD): LVIS v1 train without the rare classes' annotations (the 337 rare classes are the
# novel ones), evaluated on LVIS v1 val over all 1203 classes: AP, APr, APc, APf for boxes and masks.
# LVIS v1 images are COCO 2017 images: data_root is the COCO root holding train2017/ and val2017/, lvis_root
# the folder of the LVIS annotation files (and the feature store). Point them at your folders with
#   --cfg-options data_root=/datasets/coco/ lvis_root=/datasets/lvis/
data_root = "data/coco/"
lvis_root = "data/lvis/"
train_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="ovd.detection_collate"),
    dataset=dict(type="CocoDetection", ann_file=lvis_root + "lvis_v1_train.json", img_dir=data_root,
                 vocabulary="ov-lvis", train_classes="base", filter_empty=True, with_masks=True,
                 feature_store=lvis_root + "vild_store", max_distill_regions=300, on_bad_image="skip",
                 pipeline=[dict(type="RandomHorizontalFlip", p=0.5)]))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="ovd.detection_collate"),
    dataset=dict(type="CocoDetection", ann_file=lvis_root + "lvis_v1_val.json", img_dir=data_root,
                 vocabulary="ov-lvis", on_bad_image="error"))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type="LvisMetric", ann_file=lvis_root + "lvis_v1_val.json", vocabulary="ov-lvis", iou_type="bbox"),
    dict(type="LvisMetric", ann_file=lvis_root + "lvis_v1_val.json", vocabulary="ov-lvis", iou_type="segm"),
]
test_evaluator = val_evaluator
