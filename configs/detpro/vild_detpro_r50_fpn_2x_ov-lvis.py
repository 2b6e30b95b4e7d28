# DetPro on OV-LVIS: ViLD (2x) with the prompts of configs/detpro/detpro_prompts_ov-lvis.py.
_base_ = ["../vild/vild_r50_fpn_2x_ov-lvis.py"]
model = dict(templates=dict(_delete_=True, type="learned", file="work_dirs/detpro_prompts_ov-lvis/prompts.safetensors"))
