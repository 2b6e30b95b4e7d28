# OV-COCO (Bansal et al. split): train on the 48 base classes' boxes of COCO train2017, evaluate the
# 65 classes of val2017 together and report AP50 for novel (17), base (48) and all.
# Distillation regions: python tools/precompute.py configs/precompute/ov-coco_vit-b-32.py --out data/coco/vild_store
# Every path below derives from data_root (train2017/, val2017/, annotations/, the store): point it at your
# COCO folder with --cfg-options data_root=/datasets/coco/
data_root = "data/coco/"
train_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="ovd.detection_collate"),
    dataset=dict(type="CocoDetection", ann_file=data_root + "annotations/instances_train2017.json",
                 img_dir=data_root + "train2017", vocabulary="ov-coco", train_classes="base", filter_empty=True,
                 feature_store=data_root + "vild_store", max_distill_regions=300, on_bad_image="skip",
                 pipeline=[dict(type="RandomHorizontalFlip", p=0.5)]))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="ovd.detection_collate"),
    dataset=dict(type="CocoDetection", ann_file=data_root + "annotations/instances_val2017.json",
                 img_dir=data_root + "val2017", vocabulary="ov-coco", on_bad_image="error"))
test_dataloader = val_dataloader
# image_set="annotated": the protocol's 4836 val images with an annotation of the 65 classes ("all": every image)
val_evaluator = dict(type="DetectionMetric", ann_file=data_root + "annotations/instances_val2017.json",
                     vocabulary="ov-coco", name="ov-coco", image_set="annotated")
test_evaluator = val_evaluator
