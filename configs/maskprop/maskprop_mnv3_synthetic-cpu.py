# Mask-proposal segmenter (ZSSeg / MaskFormer style) on the synthetic world: 16 queries propose masks,
# trained on the 8 base shapes; each mask is classified by the student's distilled embedding and by the
# teacher's embedding of the masked region, ensembled.
#   python tools/train.py configs/maskprop/maskprop_mnv3_synthetic-cpu.py
_base_ = ["../_base_/datasets/synthetic_seg.py", "../_base_/schedules/synthetic_cpu_400it.py"]
model = dict(type="MaskProposalSegmenter", vocabulary="synthetic-shapes", templates="single",
             teacher=dict(config="model_zoo/synthetic/teacher.json",
                          pretrained="model_zoo/synthetic/teacher.safetensors"),
             backbone="mobilenet_v3_small", backbone_norm="gn", output_stride=16, num_queries=16, hidden_dim=128,
             decoder_layers=2, temperature=0.05, ensemble=dict(base=0.35, novel=0.65),
             inference=dict(mode="whole"))
