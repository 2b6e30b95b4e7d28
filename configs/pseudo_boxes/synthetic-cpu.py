# Box pseudo-labels for the synthetic shapes world's 4 novel shapes (ovclip.synthetic), VL-PLM's recipe
# with the world's tiny teacher (model_zoo/synthetic) and its single caption template; the proposals are a
# base-trained ViLD-text's (tools/proposals.py --refine 10 --max-per-image 100). tools/bench_ov.py runs
# this for its "pseudo-labels" row; by hand:
#   python -c "from ovclip.synthetic import make_world; make_world('work_dirs/world')"
#   python tools/proposals.py configs/vild/vild_teacher-rn_fpn_synthetic-cpu.py CKPT --out work_dirs/world/proposals.json --refine 10 --max-per-image 100
#   python tools/pseudo_boxes.py configs/pseudo_boxes/synthetic-cpu.py --proposals work_dirs/world/proposals.json --out work_dirs/world/pseudo_boxes.json
_base_ = ["../_base_/pseudo_boxes/vl-plm.py"]  # pseudo, region and run: VL-PLM's values
data_root = "work_dirs/world/"
teacher = dict(spec=dict(config="model_zoo/synthetic/teacher.json", pretrained="model_zoo/synthetic/teacher.safetensors"),
               device="cpu", precision="fp32")
dataset = dict(ann_file=data_root + "train_base.json", img_dir=data_root + "train/images",
               proposals=data_root + "proposals.json", max_regions=100, min_score=0.0)
vocabulary = dict(name="synthetic-shapes", classes="novel", templates="single")
