# Region embeddings of the built-in example images with a tiny random teacher (runs in seconds on a CPU).
# For a real teacher: --cfg-options teacher.spec=ViT-B-32/openai
teacher = dict(spec="tiny-vit", device="auto", precision="fp32")
dataset = dict(ann_file="examples/shapes/annotations.json", img_dir="examples/shapes/images",
               proposals=None, max_regions=300)
region = dict(scales=(1.0, 1.5), batch_size=64)
store = dict(shard_size=2)
