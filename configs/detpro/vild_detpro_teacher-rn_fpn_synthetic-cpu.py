# DetPro on the synthetic world: the CPU ViLD config with the prompts of
# configs/detpro/detpro_prompts_synthetic-cpu.py (tools/bench_ov.py fills in the paths).
_base_ = ["../vild/vild_teacher-rn_fpn_synthetic-cpu.py"]
model = dict(templates=dict(_delete_=True, type="learned",
                            file="work_dirs/detpro_prompts_synthetic-cpu/prompts.safetensors"))
