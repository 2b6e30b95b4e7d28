# DetPro's learned prompts on the synthetic shapes world (ovclip.synthetic): 8 context vectors per IoU bin,
# trained on the teacher's embeddings of proposals (the feature store ViLD distils) labelled by IoU with
# the world's base boxes. Writes <work_dir>/prompts.safetensors; a ViLD config uses it with
#   model.templates = dict(type="learned", file=".../prompts.safetensors")
# tools/bench_ov.py fills in the world's paths and the store of ViLD-text's proposals; by hand:
#   python tools/proposals.py CONFIG CKPT --out work_dirs/world/proposals.json   (a base-trained detector)
#   python tools/precompute.py PRECOMPUTE_CONFIG --out work_dirs/world/store   (dataset: train_base.json, its
#       images and those proposals; region: the ViLD config's crop scales)
_base_ = ["../_base_/models/detpro_prompts.py"]
data_root = "work_dirs/world/"
vocabulary = "synthetic-shapes"
model = dict(teacher=dict(config="model_zoo/synthetic/teacher.json",
                          pretrained="model_zoo/synthetic/teacher.safetensors"),
             # the detector's temperature (the synthetic ViLD trains at 0.05), as the reference trains its prompts
             # and its detector both at 0.01: at 0.01 here the learned class embeddings collapsed (pairwise
             # cosine 0.998) and DetPro fell to 23.2 novel AP50 on tuning seed 3 (54.4 at 0.05)
             vocabulary=vocabulary, temperature=0.05)
train_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(ann_file=data_root + "train_base.json", img_dir=data_root + "train/images",
                 feature_store=data_root + "store", vocabulary=vocabulary))
