# MaskCLIP+ on ADE20k-150 with a SegFormer-B0 student (mmseg's segformer_mit-b0 model: MiT-B0 encoder with
# ImageNet weights, downloaded only because named here, and its all-MLP decoder), the decoder ending in the
# teacher's embedding size and classified by the text embeddings. Otherwise as the DeepLabV2 config.
_base_ = ["./maskclip-plus_r101-d8_ade20k-150.py"]
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(segmentor=dict(
    _delete_=True, type="EncoderDecoder",
    backbone=dict(type="MixVisionTransformer", in_channels=3, embed_dims=32, num_stages=4, num_layers=[2, 2, 2, 2],
                  num_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3], sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3),
                  mlp_ratio=4, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1,
                  init_cfg=dict(type="Pretrained", checkpoint="https://download.openmmlab.com/mmsegmentation/v0.5/"
                                "pretrain/segformer/mit_b0_20220624-7e0fe6dd.pth")),
    decode_head=dict(type="SegformerHead", in_channels=[32, 64, 160, 256], in_index=[0, 1, 2, 3], channels=256,
                     dropout_ratio=0.1, norm_cfg=norm_cfg, align_corners=False)))
# SegFormer's AdamW schedule (mmseg's segformer_mit-b0_8xb2-160k_ade20k-512x512), on this config's 16k iterations
optim_wrapper = dict(_delete_=True, type="OptimWrapper",
                     optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
                     paramwise_cfg=dict(custom_keys={"pos_block": dict(decay_mult=0.0),
                                                     "norm": dict(decay_mult=0.0), "head": dict(lr_mult=10.0)}))
param_scheduler = [dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
                   dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1500, end=16000, by_epoch=False)]
