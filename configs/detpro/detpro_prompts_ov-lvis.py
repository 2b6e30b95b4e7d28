# DetPro's learned prompts for OV-LVIS, as its paper and detpro.sh: ViT-B/32, 8 context vectors per IoU
# bin, the 866 base (frequent + common) classes, negatives with IoU in [0.1, 0.5) kept 1 in 10. The store:
# tools/precompute.py on LVIS v1 train with a base-trained RPN's proposals (as for ViLD's distillation).
_base_ = ["../_base_/schedules/detpro_prompts.py"]  # on the default runtime
data_root = "data/coco/"
# context grading: one context per foreground IoU bin
iou_bins = [[0.5, 0.6], [0.6, 0.7], [0.7, 0.8], [0.8, 0.9], [0.9, 1.1]]
model = dict(type="DetProPrompts", iou_bins=iou_bins, teacher="ViT-B-32/openai", vocabulary="ov-lvis", n_ctx=8, temperature=0.01)
train_dataloader = dict(
    batch_size=512, num_workers=2, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(type="ProposalEmbeddings", iou_bins=iou_bins,
                 ann_file="data/lvis/lvis_v1_train.json", img_dir=data_root,
                 feature_store="data/lvis/vild_store", vocabulary="ov-lvis"))
