# ViLD on a ResNet-50 FPN Faster R-CNN (torchvision), distilling a ViT-B/32 CLIP teacher.
# Paper settings: 63 ViLD prompt templates, temperature 0.01, region crops at 1x and 1.5x,
# up to 300 proposals per image for distillation, text / image loss weights 1.0 / 0.5.
model = dict(
    type="ViLDDetector",
    teacher="ViT-B-32/openai",
    vocabulary="ov-coco",
    templates="vild",
    backbone="resnet50",
    backbone_weights="IMAGENET1K_V1",
    trainable_layers=3,
    temperature=0.01,
    separate_heads=True,
    text_loss_weight=1.0,
    image_loss_weight=0.5,
    inference_mode="ensemble",
    with_mask=False,
    distill=dict(source="store", num_regions=300, scales=(1.0, 1.5), batch_size=64),
    # box_pre_nms_top_n: NMS looks at the best 1000 candidates of an image first, and at more only when
    # fewer than box_detections_per_img of them survive: the same detections, but a 21k-class vocabulary
    # costs no per-class NMS loop over tens of thousands of candidates (None: NMS over all of them).
    detector=dict(min_size=800, max_size=1333, box_detections_per_img=100, box_score_thresh=0.0001,
                  box_batch_size_per_image=512, box_pre_nms_top_n=1000),
)
