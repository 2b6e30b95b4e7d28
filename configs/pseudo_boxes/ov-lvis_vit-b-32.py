# VL-PLM's box pseudo-labels for OV-LVIS's 337 rare (novel) classes on LVIS v1 train, as
# configs/pseudo_boxes/ov-coco_vit-b-32.py does for OV-COCO (same teacher, proposals and thresholds).
#   python tools/proposals.py configs/vild/vild_r50_fpn_2x_ov-lvis.py CKPT --out data/lvis/proposals/rpn_refined_train.json --refine 10 --max-per-image 100
#   python tools/pseudo_boxes.py configs/pseudo_boxes/ov-lvis_vit-b-32.py --out data/lvis/pseudo_boxes_train.json
# LVIS v1 images are COCO 2017 images: data_root holds train2017/, lvis_root the LVIS files.
_base_ = ["../_base_/pseudo_boxes/vl-plm.py"]  # pseudo, region and run: VL-PLM's values
data_root = "data/coco/"
lvis_root = "data/lvis/"
teacher = dict(spec="ViT-B-32/openai", device="auto", precision="fp16")
dataset = dict(ann_file=lvis_root + "lvis_v1_train.json", img_dir=data_root,
               proposals=lvis_root + "proposals/rpn_refined_train.json", max_regions=100, min_score=0.0)
vocabulary = dict(name="ov-lvis", classes="novel", templates="vild")
