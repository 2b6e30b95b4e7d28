# DetPro: ViLD (OV-COCO, 1x) whose class embeddings come from the prompts learned by
# configs/detpro/detpro_prompts_ov-coco.py instead of ViLD's 63 hand-written templates; the vocabulary can
# still be swapped at test time (--vocab), the learned context embedding any class name.
_base_ = ["../vild/vild_r50_fpn_1x_ov-coco.py"]
model = dict(templates=dict(_delete_=True, type="learned", file="work_dirs/detpro_prompts_ov-coco/prompts.safetensors"))
