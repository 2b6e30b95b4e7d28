# ViLD-style region embeddings for OV-COCO training: ViT-B/32 (OpenAI weights), 1x and 1.5x crops,
# up to 300 proposals per image from a COCO-results proposals file.
teacher = dict(spec="ViT-B-32/openai", device="auto", precision="fp16")
# Every path derives from data_root: --cfg-options data_root=/datasets/coco/
data_root = "data/coco/"
dataset = dict(ann_file=data_root + "annotations/instances_train2017.json", img_dir=data_root + "train2017",
               proposals=data_root + "proposals/rpn_train2017.json", max_regions=300, min_score=0.0)
region = dict(scales=(1.0, 1.5), batch_size=256)
store = dict(shard_size=256, flush_seconds=120)
run = dict(on_bad_image="skip")
