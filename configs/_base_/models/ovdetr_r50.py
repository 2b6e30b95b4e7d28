# OV-DETR (yuhangzang/OV-DETR's run_scripts.md): a Deformable DETR on a ResNet-50 (here through an FPN:
# 3 levels + a max-pool level, Deformable DETR's 4), 300 queries, 6 + 6 layers, max_len 15, prob 0.75,
# loss weights class 3 / L1 5 / GIoU 2 / embedding 2 and the same matching costs (ovd.models.ovdetr), with
# iterative box refinement and two-stage proposals (the model's defaults, the reference's --with_box_refine
# --two_stage), the 300 best (box, class) scores of each image kept (its post-processing, COCO and LVIS alike).
model = dict(
    type="OVDETRDetector", teacher="ViT-B-32/openai", vocabulary="ov-coco", templates="vild", conditional=True,
    backbone="resnet50", backbone_weights="IMAGENET1K_V1", trainable_layers=3, backbone_norm="frozen_bn",
    fpn_channels=256, fpn_levels=3,
    transformer=dict(d_model=256, encoder_layers=6, decoder_layers=6, ffn_dim=1024, heads=8, points=4, dropout=0.1,
                     num_queries=300),
    conditioning=dict(max_len=15, prob=0.75, classes="all", class_bank=None),
    min_size=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800), max_size=1333, detections_per_img=300,
    eval_batch_classes=15)
# Deformable DETR's augmentation, as the reference trains: a flip, then half the time its crop branch (shorter
# side to 400 / 500 / 600, a random crop of 384-600 pixels a side); the model then resizes every training image's
# shorter side to one of min_size's scales at random (at most 1333 a side), evaluation at the last, 800; an
# image the crop leaves without boxes is replaced by the next (the datasets' filter_empty, as the reference).
# The OV-COCO / OV-LVIS configs give it to their training set:
#   train_dataloader = dict(dataset=dict(pipeline={{_base_.detr_train_pipeline}}))
detr_train_pipeline = [
    dict(type="RandomHorizontalFlip", p=0.5),
    dict(type="RandomApply", p=0.5, transforms=[
        dict(type="RandomShortestSize", min_size=[400, 500, 600], antialias=True),
        dict(type="RandomSizeCrop", min_size=384, max_size=600)])]
