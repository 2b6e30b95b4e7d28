# VL-PLM's recipe for box pseudo-labels (Zhao et al., ECCV 2022), shared by configs/pseudo_boxes/: the
# teacher's softmax over the target classes at T=0.01, fused 0.5 / 0.5 with the RPN objectness, scores
# > 0.8 kept, NMS 0.6 per class, boxes under 5 px dropped, regions cropped at 1x and 1.5x.
# base_overlap_iou=None is VL-PLM's exact recipe; 0.5 (this project's default) also drops pseudo-labels
# that overlap a base-class ground-truth box.
pseudo = dict(temperature=0.01, objectness_weight=0.5, score_thr=0.8, nms_iou=0.6, min_size=5.0,
              base_overlap_iou=0.5, max_per_image=None)
region = dict(scales=(1.0, 1.5), batch_size=256)
run = dict(on_bad_image="skip")
