# MaskCLIP (Zhou et al. 2022) zero-shot on ADE20k-150 with OpenAI's ViT-B/16: 85 prompt templates, key
# smoothing and prompt denoising, short side 512, 448-pixel sliding windows. As in MaskCLIP's code, both
# refinements act inside each window (prompt denoising first), and the windows' scores are averaged.
#   python tools/test.py configs/maskclip/maskclip_vit-b-16_ade20k-150.py
_base_ = ["../_base_/datasets/ade20k_150.py", "../_base_/seg_runtime.py"]
model = dict(type="MaskCLIP", teacher="ViT-B-16/openai", vocabulary="ade20k-150", templates="maskclip",
             key_smoothing=0.5, prompt_denoising=0.5,
             inference=dict(mode="slide", crop_size=448, stride=224, short_side=512))
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
