"""ovclip: the CLIP teacher shared by ovd (detection) and ovseg (segmentation).

The names below are imported when first used (PEP 562), so that `import ovclip.vocabulary` or an evaluator
does not pay for open_clip and the model code."""
from importlib import import_module
from typing import Any

_EXPORTS = {
    "DenseEmbeddings": "dense", "classify_dense": "dense", "dense_embeddings": "dense",
    "get_templates": "prompts", "PseudoBoxes": "pseudo_boxes", "label_regions": "pseudo_boxes",
    "RegionEmbeddings": "regions", "region_embeddings": "regions",
    "CorruptShardError": "store", "FeatureStore": "store", "StoreWriter": "store",
    "Teacher": "teacher", "TeacherError": "teacher", "TeacherWeightsUnavailable": "teacher", "load_teacher": "teacher",
    "text_embeddings": "text",
    "Vocabulary": "vocabulary", "VocabularyError": "vocabulary", "builtin_vocabulary": "vocabulary",
    "load_vocabulary": "vocabulary", "parse_vocabulary": "vocabulary",
}
__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # a submodule used as an attribute (ovclip.teacher.load_teacher after `import ovclip`)
        try:
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":  # a submodule that exists but misses a dependency
                raise
            raise AttributeError(f"module 'ovclip' has no attribute '{name}'") from None
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
