# MaskCLIP zero-shot on the synthetic world with the tiny teacher of model_zoo/synthetic (no training):
#   python tools/test.py configs/maskclip/maskclip_synthetic-cpu.py
_base_ = ["../_base_/datasets/synthetic_seg.py", "../_base_/seg_runtime.py"]
model = dict(type="MaskCLIP", vocabulary="synthetic-shapes", templates="single",
             teacher=dict(config="model_zoo/synthetic/teacher.json",
                          pretrained="model_zoo/synthetic/teacher.safetensors"),
             key_smoothing=None, prompt_denoising=None, inference=dict(mode="whole"))
