"""The synthetic shapes world (`world`), the tiny CLIP trained on it as the CPU benchmark's teacher
(`tiny_clip`) and what the benchmark's rows share (`bench`). Nothing in ovclip's teacher core imports
this package: the world's vocabulary ships as data (`ovclip/data/synthetic_shapes.json`)."""
from .world import NOVEL_SHAPES, SHAPES, caption_sample, make_world, scene, shape_mask, vocabulary_entries

__all__ = ["NOVEL_SHAPES", "SHAPES", "caption_sample", "make_world", "scene", "shape_mask", "vocabulary_entries"]
