# DetPro's learned prompts on the synthetic shapes world (ovclip.synthetic): 8 context vectors per IoU bin,
# trained on the teacher's embeddings of proposals (the feature store ViLD distils) labelled by IoU with
# the world's base boxes. Writes <work_dir>/prompts.safetensors; a ViLD config uses it with
#   model.templates = dict(type="learned", file=".../prompts.safetensors")
# tools/bench_ov.py fills in the world's paths and the store of ViLD-text's proposals; by hand:
#   python tools/proposals.py CONFIG CKPT --out work_dirs/world/proposals.json   (a base-trained detector)
#   python tools/precompute.py PRECOMPUTE_CONFIG --out work_dirs/world/store   (dataset: train_base.json, its
#       images and those proposals; region: the ViLD config's crop scales)
_base_ = ["../_base_/schedules/detpro_prompts.py"]  # on the default runtime
data_root = "work_dirs/world/"
vocabulary = "synthetic-shapes"
# context grading: one context per foreground IoU bin
iou_bins = [[0.5, 0.6], [0.6, 0.7], [0.7, 0.8], [0.8, 0.9], [0.9, 1.1]]
model = dict(type="DetProPrompts", iou_bins=iou_bins,
             teacher=dict(config="model_zoo/synthetic/teacher.json", pretrained="model_zoo/synthetic/teacher.safetensors"),
             # the detector's temperature (the synthetic ViLD trains at 0.05), as the reference trains its prompts
             # and its detector both at 0.01: at 0.01 here the learned class embeddings collapsed (pairwise
             # cosine 0.998) and DetPro fell to 23.2 novel AP50 on tuning seed 3 (54.4 at 0.05)
             vocabulary=vocabulary, n_ctx=8, temperature=0.05)
train_dataloader = dict(
    batch_size=512, num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(type="ProposalEmbeddings", iou_bins=iou_bins,
                 ann_file=data_root + "train_base.json", img_dir=data_root + "train/images",
                 feature_store=data_root + "store", vocabulary=vocabulary))
