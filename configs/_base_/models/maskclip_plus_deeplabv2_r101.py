# MaskCLIP+'s student as in its paper and code: DeepLabV2 (`DeepLabV2Head`, MaskCLIP's ASPPHeadV2: dilations
# 6 / 12 / 18 / 24, 1024 channels) on a dilated ResNet-101 (mmseg's ResNetV1c, output stride 8, ImageNet
# weights `open-mmlab://resnet101_v1c`, downloaded only because named here, when training starts), the head
# ending in the teacher's embedding size and classified by the text embeddings.
# For multi-GPU training set norm_cfg's type to "SyncBN" (--cfg-options norm_cfg.type=SyncBN does not reach
# the copies below: edit the line).
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(type="MaskCLIPPlus",
             segmentor=dict(
                 type="EncoderDecoder", pretrained="open-mmlab://resnet101_v1c",
                 backbone=dict(type="ResNetV1c", depth=101, num_stages=4, out_indices=(0, 1, 2, 3),
                               dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=norm_cfg, norm_eval=False,
                               style="pytorch", contract_dilation=True),
                 decode_head=dict(type="DeepLabV2Head", in_channels=2048, in_index=3, channels=1024,
                                  dilations=(6, 12, 18, 24), dropout_ratio=0.0, norm_cfg=norm_cfg,
                                  align_corners=False)))
