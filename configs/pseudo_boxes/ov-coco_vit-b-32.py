# VL-PLM's novel-class box pseudo-labels on OV-COCO train2017 (Zhao et al., ECCV 2022): ViT-B/32 (OpenAI
# weights) scores the top 100 class-agnostic proposals of a base-trained detector, refined 10 times by its
# RoI head, against the 17 novel classes (63 ViLD templates, softmax at T=0.01), fuses the probability with
# the RPN objectness (0.5 / 0.5), keeps scores > 0.8 and runs NMS 0.6 per class.
#   python tools/proposals.py configs/vild/vild_r50_fpn_1x_ov-coco.py CKPT --out data/coco/proposals/rpn_refined_train2017.json --refine 10 --max-per-image 100
#   python tools/pseudo_boxes.py configs/pseudo_boxes/ov-coco_vit-b-32.py --out data/coco/annotations/pseudo_boxes_train2017.json
# then train configs/vild/vild-text_r50_fpn_1x_ov-coco_pseudo-boxes.py on base boxes + these.
# Every path derives from data_root: --cfg-options data_root=/datasets/coco/
_base_ = ["../_base_/pseudo_boxes/vl-plm.py"]  # pseudo, region and run: VL-PLM's values
data_root = "data/coco/"
teacher = dict(spec="ViT-B-32/openai", device="auto", precision="fp16")
# The base classes' ground truth of this file is what a pseudo-label may not overlap (base_overlap_iou);
# its novel annotations are never read.
dataset = dict(ann_file=data_root + "annotations/instances_train2017.json", img_dir=data_root + "train2017",
               proposals=data_root + "proposals/rpn_refined_train2017.json", max_regions=100, min_score=0.0)
vocabulary = dict(name="ov-coco", classes="novel", templates="vild")
