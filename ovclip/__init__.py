"""ovclip: the CLIP teacher shared by ovd (detection) and ovseg (segmentation)."""
from .dense import DenseEmbeddings, classify_dense, dense_embeddings
from .prompts import get_templates
from .regions import RegionEmbeddings, region_embeddings
from .store import CorruptShardError, FeatureStore, StoreWriter
from .teacher import Teacher, TeacherError, TeacherWeightsUnavailable, load_teacher
from .text import text_embeddings
from .vocabulary import Vocabulary, VocabularyError, builtin_vocabulary, load_vocabulary, parse_vocabulary

__all__ = [
    "DenseEmbeddings", "classify_dense", "dense_embeddings", "get_templates", "RegionEmbeddings",
    "region_embeddings", "CorruptShardError", "FeatureStore", "StoreWriter", "Teacher", "TeacherError",
    "TeacherWeightsUnavailable", "load_teacher", "text_embeddings", "Vocabulary", "VocabularyError",
    "builtin_vocabulary", "load_vocabulary", "parse_vocabulary",
]
__version__ = "0.1.0"
