# DetPro's prompt model and data (dyabel/detpro): 8 context vectors per foreground IoU bin (context
# grading), temperature 0.01, batches of 512 proposals from a region store; on DetPro's schedule. A config
# names the teacher, the vocabulary and the data.
_base_ = ["../schedules/detpro_prompts.py"]  # on the default runtime
iou_bins = [[0.5, 0.6], [0.6, 0.7], [0.7, 0.8], [0.8, 0.9], [0.9, 1.1]]  # the model's and the data's bins
model = dict(type="DetProPrompts", iou_bins=iou_bins, n_ctx=8, temperature=0.01)
train_dataloader = dict(
    batch_size=512, num_workers=2, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(type="ProposalEmbeddings", iou_bins=iou_bins))
