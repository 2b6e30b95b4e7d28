"""Run an exported model folder (`tools/export.py`) with onnxruntime alone: no torch is imported.

    from ovclip.deploy import OnnxDetector, OnnxSegmenter, load_exported
    det = OnnxDetector("exported/")
    out = det.predict("street.jpg", "bus, bicycle, traffic cone")
    out.boxes, out.scores, out.names
    seg = OnnxSegmenter("exported_seg/").predict("room.jpg", "wall, floor, sofa|couch")
    seg.labels, seg.areas()

A new vocabulary is embedded by the exported text encoder (the teacher's tokenizer and prompt templates
travel in the folder), once per vocabulary. Needs `pip install -e ".[deploy]"` (onnxruntime, tokenizers).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .results import Detections, Segmentation
from .errors import UserInputError
from .geometry import short_side_size, windows
from .io import rgb_array
from .prompt_text import format_prompts
from .vocabulary import LastVocabulary, Vocabulary, load_vocabulary

MANIFEST = "manifest.json"


class DeployError(UserInputError, ValueError):
    """An exported folder or an input to it is not usable, with the reason and the fix."""


def read_manifest(folder: "str | Path") -> dict[str, Any]:
    """The folder's manifest.json."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DeployError(f"'{folder}' has no {MANIFEST}: export a model there with "
                          f"`python tools/export.py CONFIG CHECKPOINT --out {folder}`")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != "ovclip-onnx":
        raise DeployError(f"{path} is not an ovclip ONNX export manifest")
    return manifest


def _session(path: Path, providers: Optional[Sequence[str]]):
    try:
        import onnxruntime as ort
    except ImportError:
        raise DeployError("running an exported model needs onnxruntime: pip install -e \".[deploy]\"") from None
    if not path.is_file():
        raise DeployError(f"{path} is missing from the exported folder; export it again with tools/export.py")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: not its notes on the graph's data-dependent shapes
    return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


def image_array(image: Any) -> np.ndarray:
    """A path, PIL image or HxWx3 array -> float32 (3, H, W) RGB in [0, 1], decoded as the torch API decodes
    it (`ovclip.io.rgb_array`: clear errors, 16-bit images scaled): uint8 is divided by 255, floats kept."""
    array = rgb_array(image)
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / scale


def group_average(embeddings: np.ndarray, groups: Sequence[int]) -> np.ndarray:
    """Normalise each row, average consecutive groups of rows of the given sizes, renormalise (as
    `ovclip.prompts.average_embeddings`)."""
    e = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
    means = np.stack([chunk.mean(0) for chunk in np.split(e, np.cumsum(groups)[:-1])])
    return (means / np.linalg.norm(means, axis=-1, keepdims=True)).astype(np.float32)


class OnnxTextEncoder:
    """The exported teacher text encoder: a vocabulary -> (C, D) unit embeddings, as the model's text source
    embeds it: each class the average of its templates x synonyms prompts (`ovclip.text.text_embeddings`), or,
    for DetPro's learned prompts, per learned context the average over synonyms, then over the contexts
    (`ovclip.learned_prompts.LearnedPrompts`)."""

    def __init__(self, folder: "str | Path", manifest: dict[str, Any], providers: Optional[Sequence[str]] = None,
                 batch_size: int = 256):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise DeployError("embedding a vocabulary needs tokenizers: pip install -e \".[deploy]\"") from None
        entry = manifest["text_encoder"]
        self.session = _session(Path(folder) / entry["file"], providers)
        self.tokenizer = Tokenizer.from_file(str(Path(folder) / entry["tokenizer"]))
        self.learned = entry["prompts"] == "learned"
        self.templates = [entry["prompt_format"]] if self.learned else list(entry["templates"])
        self.embed_dim, self.batch_size = int(entry["embed_dim"]), batch_size

    def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
        """(N, L) int64 token ids, as the teacher's tokenizer gives them."""
        return np.array([e.ids for e in self.tokenizer.encode_batch(list(prompts))], dtype=np.int64)

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """Unit embeddings of prompts: (N, D), or (bins, N, D) for learned prompts."""
        out = [self.session.run(None, {"tokens": self.tokenize(prompts[i:i + self.batch_size])})[0]
               for i in range(0, len(prompts), self.batch_size)]
        return np.concatenate(out, axis=-2)

    def __call__(self, vocabulary: Vocabulary) -> np.ndarray:
        prompts = [[p for name in names for p in format_prompts(self.templates, name)] for names in vocabulary.synonyms]
        e = self.encode([p for ps in prompts for p in ps])
        groups = [len(p) for p in prompts]
        if not self.learned:
            return group_average(e, groups)
        per_context = np.stack([group_average(b, groups) for b in e])
        return group_average(per_context.transpose(1, 0, 2).reshape(-1, e.shape[-1]), [len(e)] * len(groups))


class _OnnxModel:
    """What both runtimes share: the manifest, the text encoder and the current vocabulary."""

    kind = ""

    def __init__(self, folder: "str | Path", providers: Optional[Sequence[str]] = None):
        self.folder, self.manifest = Path(folder), read_manifest(folder)
        if self.manifest["kind"] != self.kind:
            raise DeployError(f"'{folder}' holds a {self.manifest['kind']}, not a {self.kind}")
        self.session = _session(self.folder / self.manifest["model"]["file"], providers)
        self.text = OnnxTextEncoder(folder, self.manifest, providers)
        self.embed_dim = int(self.manifest["model"]["embed_dim"])
        self._vocabulary: Vocabulary = Vocabulary.from_dict(self.manifest["vocabulary"])
        self._embeddings: Optional[np.ndarray] = None
        self._last = LastVocabulary()

    @property
    def vocabulary(self) -> Vocabulary:
        """The classes found now."""
        return self._vocabulary

    def set_vocabulary(self, vocabulary: "str | Sequence[str] | Vocabulary") -> Vocabulary:
        """Find these classes from now on (embedded at the next predict); the same text or list of names as
        the last call is not parsed again."""
        known = self._last.recall(vocabulary, self._vocabulary)
        if known is not None:
            return known
        vocab = load_vocabulary(vocabulary)
        if vocab != self._vocabulary:
            self._vocabulary, self._embeddings = vocab, None
        self._last.remember(vocabulary, self._vocabulary)
        return vocab

    def text_embeddings(self) -> np.ndarray:
        """(C, D) unit embeddings of the current vocabulary (computed once per vocabulary)."""
        if self._embeddings is None:
            self._embeddings = self.text(self._vocabulary)
        return self._embeddings

    def _checked_embeddings(self, text_embeddings: Optional[np.ndarray]) -> np.ndarray:
        if text_embeddings is None:
            raise DeployError(f"the {self.kind} needs the vocabulary's text embeddings: a (C, {self.embed_dim}) "
                              f"float array ({type(self).__name__}.text_embeddings() gives them)")
        emb = np.asarray(text_embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] != self.embed_dim:
            raise DeployError(f"text embeddings must be (C > 0, {self.embed_dim}) for this model (its teacher's "
                              f"embedding size), not {emb.shape}")
        return emb


class OnnxDetector(_OnnxModel):
    """An exported detector: `predict(image, vocabulary)` as `ovd.Detector`, on onnxruntime."""

    kind = "detector"

    def base_mask(self) -> np.ndarray:
        """Bool (C,): the classes the ensemble treats as base (all of them without a split)."""
        split = self._vocabulary.split
        return np.array([s == "base" for s in split]) if split is not None else np.ones(len(self._vocabulary), bool)

    def run(self, image: np.ndarray, text_embeddings: np.ndarray, base_mask: Optional[np.ndarray] = None) -> dict:
        """The graph's raw outputs for a float (3, H, W) image and (C, D) text embeddings."""
        emb = self._checked_embeddings(text_embeddings)
        base = np.ones(len(emb), bool) if base_mask is None else np.asarray(base_mask, dtype=bool)
        if base.shape != (len(emb),):
            raise DeployError(f"base_mask needs one entry per class ({len(emb)}), not shape {base.shape}")
        names = [o.name for o in self.session.get_outputs()]
        feeds = {"image": image, "text_embeddings": emb, "base_mask": base}
        wanted = {i.name for i in self.session.get_inputs()}  # the text-only mode's graph has no base mask
        values = self.session.run(None, {k: v for k, v in feeds.items() if k in wanted})
        return dict(zip(names, values))

    def predict(self, image: Any, vocabulary: "str | Sequence[str] | Vocabulary | None" = None,
                score_thr: float = 0.0) -> Detections:
        """Detect in one image (path, PIL image or HxWx3 array), optionally with another vocabulary, keeping
        detections scoring at least `score_thr`."""
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        out = self.run(image_array(image), self.text_embeddings(), self.base_mask())
        keep = out["scores"] >= score_thr
        labels = out["labels"][keep].astype(np.int64)
        names = self._vocabulary.names
        masks = out["masks"][keep][:, 0] if "masks" in out else None
        return Detections(out["boxes"][keep], out["scores"][keep], labels, [names[i] for i in labels], masks)


class OnnxSegmenter(_OnnxModel):
    """An exported segmenter: `predict(image, vocabulary)` as `ovseg.Segmenter`, on onnxruntime. The graph
    scores one window; around it this class does what `ovseg.models.common.infer_logits` does (short-side
    resize, sliding windows and their average, resize back), resizing with the exported resize.onnx."""

    kind = "segmenter"

    def __init__(self, folder: "str | Path", providers: Optional[Sequence[str]] = None):
        super().__init__(folder, providers)
        self.resizer = _session(self.folder / self.manifest["model"]["resize"], providers)
        self.labeller = _session(self.folder / self.manifest["model"]["labels"], providers)
        self.inference = dict(self.manifest["model"]["inference"])

    def resize(self, image: np.ndarray, size: Sequence[int], antialias: bool = False) -> np.ndarray:
        """(C, H, W) -> (C, size[0], size[1]), bilinear as torch resizes (`ovclip.resize.resize_bilinear`)."""
        return self.resizer.run(None, {"image": np.ascontiguousarray(image, dtype=np.float32),
                                       "size": np.asarray(size, dtype=np.int64),
                                       "antialias": np.array(antialias)})[0]

    def window_logits(self, window: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
        """(C, h, w) scores of one float (3, h, w) window for (C, D) text embeddings."""
        emb = self._checked_embeddings(text_embeddings)
        return self.session.run(None, {"image": np.ascontiguousarray(window), "text_embeddings": emb})[0]

    def logits(self, image: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
        """(C, H, W) scores of a float (3, H, W) image at its own size."""
        inf = self.inference
        height, width = image.shape[-2:]
        img = image
        if inf.get("short_side"):
            img = self.resize(image, short_side_size(height, width, inf["short_side"]), antialias=True)
        h, w = img.shape[-2:]
        if inf["mode"] == "whole":
            out = self.window_logits(img, text_embeddings)
        else:
            total, count = None, np.zeros((1, h, w), np.float32)
            for y0, x0, y1, x1 in windows(h, w, inf["crop_size"], inf["stride"]):
                part = self.window_logits(img[:, y0:y1, x0:x1], text_embeddings)
                if total is None:
                    total = np.zeros((part.shape[0], h, w), np.float32)
                total[:, y0:y1, x0:x1] += np.nan_to_num(part, neginf=-1e4)
                count[:, y0:y1, x0:x1] += 1
            out = total / count
        return self.resize(out, (height, width)) if (h, w) != (height, width) else out

    def predict(self, image: Any, vocabulary: "str | Sequence[str] | Vocabulary | None" = None) -> Segmentation:
        """Label every pixel of one image (path, PIL image or HxWx3 array) with a vocabulary class."""
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        logits = self.logits(image_array(image), self.text_embeddings())
        labels, scores = self.labeller.run(None, {"logits": np.ascontiguousarray(logits, dtype=np.float32)})
        return Segmentation(labels, scores, list(self._vocabulary.names))


def load_exported(folder: "str | Path", providers: Optional[Sequence[str]] = None) -> "OnnxDetector | OnnxSegmenter":
    """The runtime for an exported folder: an OnnxDetector or an OnnxSegmenter, as its manifest says."""
    kind = read_manifest(folder)["kind"]
    runtimes = {"detector": OnnxDetector, "segmenter": OnnxSegmenter}
    if kind not in runtimes:
        raise DeployError(f"'{folder}' holds a {kind!r} model, which this version cannot run")
    return runtimes[kind](folder, providers)
