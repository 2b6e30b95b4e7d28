"""Vocabularies: class names with synonyms, dataset ids and base / novel splits."""
from __future__ import annotations

import difflib
import itertools
import json
import operator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from .errors import UserInputError

# The OV-COCO split of Bansal et al. / OVR-CNN used by ViLD, Detic and most follow-ups:
# 48 base and 17 novel classes out of COCO's 80 (the other 15 are not evaluated).
OV_COCO_BASE = (
    "person", "bicycle", "car", "motorcycle", "train", "truck", "boat", "bench", "bird",
    "horse", "sheep", "bear", "zebra", "giraffe", "backpack", "handbag", "suitcase",
    "frisbee", "skis", "kite", "surfboard", "bottle", "fork", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "pizza", "donut", "chair", "bed",
    "toilet", "tv", "laptop", "mouse", "remote", "microwave", "oven", "toaster",
    "refrigerator", "book", "clock", "vase", "toothbrush",
)
OV_COCO_NOVEL = (
    "airplane", "bus", "cat", "dog", "cow", "elephant", "umbrella", "tie", "snowboard",
    "skateboard", "cup", "knife", "cake", "couch", "keyboard", "sink", "scissors",
)

# Semantic segmentation benchmarks (data/segmentation_benchmarks.json: mmseg's class lists, in its label
# order); "zs-" + name: the same classes with the zero-shot (transductive) split of ZS3Net / SPNet that
# MaskCLIP+ reports (the file says where each unseen list comes from).
SEGMENTATION_BENCHMARKS = ("voc-20", "pascal-context-59", "coco-stuff-171", "cityscapes-19")
ZERO_SHOT_SPLITS = ("zs-voc-20", "zs-pascal-context-59", "zs-coco-stuff-171")
BUILTIN_VOCABULARIES = ("coco", "ov-coco", "lvis-v1", "ov-lvis", "ade20k-150", "synthetic-shapes",
                        *SEGMENTATION_BENCHMARKS, *ZERO_SHOT_SPLITS)


class VocabularyError(UserInputError, ValueError):
    """A vocabulary could not be built from what was given."""


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of classes, each with one or more names (synonyms)."""

    synonyms: tuple[tuple[str, ...], ...]
    ids: tuple[int, ...] | None = None
    split: tuple[str, ...] | None = None  # "base" / "novel" per class
    frequency: tuple[str, ...] | None = None  # LVIS "r" / "c" / "f" per class
    name: str = "custom"
    _index: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.synonyms:
            raise VocabularyError(f"vocabulary '{self.name}' is empty: give at least one class name")
        # Checked with whole-list operations first (21k classes in a few ms); the loop only finds the culprit.
        if min(map(len, self.synonyms)) == 0 or "" in map(str.strip, itertools.chain.from_iterable(self.synonyms)):
            i = next(i for i, names in enumerate(self.synonyms) if not names or any(not n.strip() for n in names))
            raise VocabularyError(f"vocabulary '{self.name}': class {i} has an empty name")
        firsts = list(map(str.lower, map(operator.itemgetter(0), self.synonyms)))
        seen = dict(zip(firsts, range(len(firsts))))
        if len(seen) != len(firsts):
            earlier: dict[str, int] = {}
            i = next(i for i, key in enumerate(firsts) if earlier.setdefault(key, i) != i)  # the first repeat
            first = earlier[firsts[i]]
            raise VocabularyError(
                f"vocabulary '{self.name}': class '{self.synonyms[i][0]}' appears twice "
                f"(positions {first} and {i}); merge them as synonyms with '|'")
        for attr in ("ids", "split", "frequency"):
            value = getattr(self, attr)
            if value is not None and len(value) != len(self.synonyms):
                raise VocabularyError(
                    f"vocabulary '{self.name}': {attr} has {len(value)} entries for {len(self)} classes")
        if self.split is not None and not set(self.split) <= {"base", "novel"}:
            raise VocabularyError(f"vocabulary '{self.name}': split entries must be 'base' or 'novel'")
        object.__setattr__(self, "_index", seen)

    def __len__(self) -> int:
        return len(self.synonyms)

    @property
    def names(self) -> list[str]:
        """The display name (first synonym) of every class."""
        return list(map(operator.itemgetter(0), self.synonyms))

    def index(self, name: str) -> int:
        """Position of the class whose display name is `name` (case-insensitive)."""
        try:
            return self._index[name.lower()]
        except KeyError:
            hint = difflib.get_close_matches(name.lower(), list(self._index), n=3)
            raise VocabularyError(
                f"unknown class '{name}' in vocabulary '{self.name}'"
                + (f"; did you mean {hint}?" if hint else "")) from None

    def indices(self, part: str) -> list[int]:
        """Class positions in the 'base' or 'novel' part of the split."""
        if self.split is None:
            raise VocabularyError(f"vocabulary '{self.name}' has no base/novel split")
        if part not in ("base", "novel"):
            raise VocabularyError(f"split part must be 'base' or 'novel', not '{part}'")
        return [i for i, s in enumerate(self.split) if s == part]

    @property
    def base(self) -> list[int]:
        """Positions of the base classes."""
        return self.indices("base")

    @property
    def novel(self) -> list[int]:
        """Positions of the novel classes."""
        return self.indices("novel")

    def subset(self, positions: Sequence[int], name: str | None = None) -> "Vocabulary":
        """A new vocabulary with only the classes at `positions`, in that order."""
        def pick(values):
            return None if values is None else tuple(values[i] for i in positions)
        return Vocabulary(tuple(self.synonyms[i] for i in positions), pick(self.ids), pick(self.split),
                          pick(self.frequency), name or f"{self.name}[subset]")

    def metainfo(self) -> dict:
        """A dataset's `metainfo` for this vocabulary (class names and split; mmengine saves it in checkpoints)."""
        return {"classes": tuple(self.names), "vocabulary": self.name, "split": self.split}

    def to_dict(self) -> dict:
        """A JSON-serialisable description (for metrics files and checkpoints)."""
        return {"name": self.name, "synonyms": [list(s) for s in self.synonyms],
                "ids": list(self.ids) if self.ids else None,
                "split": list(self.split) if self.split else None,
                "frequency": list(self.frequency) if self.frequency else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        """Inverse of `to_dict`."""
        opt = lambda k: tuple(d[k]) if d.get(k) else None  # noqa: E731
        return cls(tuple(tuple(s) for s in d["synonyms"]), opt("ids"), opt("split"),
                   opt("frequency"), d.get("name", "custom"))


def _clean(name: str) -> str:
    # LVIS spells names as identifiers ("aerosol_can"); CLIP wants words.
    return " ".join(name.replace("_", " ").split())


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for n in names:
        n = _clean(n)
        if n and n.lower() not in (o.lower() for o in out):
            out.append(n)
    return tuple(out)


def _package_json(filename: str) -> list:
    return json.loads(resources.files("ovclip.data").joinpath(filename).read_text())


def builtin_vocabulary(name: str) -> Vocabulary:
    """One of the vocabularies shipped with the package (see BUILTIN_VOCABULARIES)."""
    if name in ("coco", "ov-coco"):
        cats = _package_json("coco.json")
        syn = tuple((c["name"],) for c in cats)
        ids = tuple(c["id"] for c in cats)
        if name == "coco":
            return Vocabulary(syn, ids, name="coco")
        base, novel = set(OV_COCO_BASE), set(OV_COCO_NOVEL)
        keep = [i for i, s in enumerate(syn) if s[0] in base or s[0] in novel]
        split = tuple("base" if syn[i][0] in base else "novel" for i in keep)
        return Vocabulary(tuple(syn[i] for i in keep), tuple(ids[i] for i in keep), split, name="ov-coco")
    if name in ("lvis-v1", "ov-lvis"):
        cats = _package_json("lvis_v1.json")
        syn = tuple(_unique([c["name"], *c["synonyms"]]) for c in cats)
        freq = tuple(c["frequency"] for c in cats)
        split = tuple("novel" if f == "r" else "base" for f in freq) if name == "ov-lvis" else None
        return Vocabulary(syn, tuple(c["id"] for c in cats), split, freq, name=name)
    if name == "ade20k-150":
        cats = _package_json("ade20k_150.json")
        return Vocabulary(tuple((c["name"],) for c in cats), tuple(c["id"] for c in cats),
                          name="ade20k-150")
    if name in SEGMENTATION_BENCHMARKS or name in ZERO_SHOT_SPLITS:
        entry = _package_json("segmentation_benchmarks.json")[name.removeprefix("zs-")]
        classes = entry["classes"]
        split = None
        if name in ZERO_SHOT_SPLITS:
            novel = set(entry["zero_shot_novel"])
            split = tuple("novel" if c in novel else "base" for c in classes)
        return Vocabulary(tuple((c,) for c in classes), tuple(range(len(classes))), split, name=name)
    if name == "synthetic-shapes":
        entries = _package_json("synthetic_shapes.json")  # the CPU benchmark's world: 8 base, 4 novel shapes
        return Vocabulary(tuple((e["name"],) for e in entries), tuple(e["id"] for e in entries),
                          tuple(e["split"] for e in entries), name=name)
    raise VocabularyError(_unknown_builtin_message(name))


def _unknown_builtin_message(name: str) -> str:
    hint = difflib.get_close_matches(name, BUILTIN_VOCABULARIES, n=1)
    return (f"unknown builtin vocabulary '{name}'"
            + (f"; did you mean '{hint[0]}'?" if hint else "")
            + f" Builtins: {', '.join(BUILTIN_VOCABULARIES)}. For a custom list write class names "
              "separated by commas, synonyms by '|' (e.g. 'cat, dog, sofa|couch'), "
              "or give a .txt/.json file.")


def parse_vocabulary(text: str, name: str = "custom") -> Vocabulary:
    """Parse 'cat, dog, sofa|couch': commas (or newlines) separate classes, '|' separates synonyms."""
    classes = [c for part in text.replace("\n", ",").split(",") if (c := part.strip())]
    if not classes:
        raise VocabularyError(f"vocabulary '{name}' is empty: give class names like 'cat, dog, sofa|couch'")
    # Whole-list operations first (a 21k-class list parses in a few ms); the loop below only finds the culprit.
    if "|" in text:
        syn = [_unique(s for s in c.split("|") if s.strip()) if "|" in c else (_clean(c),) for c in classes]
    else:  # one name per class: `_clean` on the whole text at once (an entry it empties is reported below)
        cleaned = [c for part in " ".join(text.replace("\n", ",").replace("_", " ").split()).split(",")
                   if (c := part.strip())]
        syn = list(zip(cleaned)) if len(cleaned) == len(classes) else [(_clean(c),) for c in classes]
    lowered = list(map(str.lower, itertools.chain.from_iterable(syn)))
    if "" in lowered or () in syn or len(set(lowered)) != len(lowered):
        seen: dict[str, str] = {}
        for c, names in zip(classes, syn):
            if not names or not names[0]:
                raise VocabularyError(f"vocabulary '{name}': entry '{c}' has no name")
            for n in names:
                if n.lower() in seen:
                    raise VocabularyError(
                        f"vocabulary '{name}': '{n}' is given twice (in '{seen[n.lower()]}' and '{c}'); "
                        "each name may belong to one class only")
                seen[n.lower()] = c
    return Vocabulary(tuple(syn), name=name)


def vocabulary_from_file(path: str | Path) -> Vocabulary:
    """Read a vocabulary from a .txt file (one class per line, '|' for synonyms) or a .json file.

    JSON: a list of names, or a list of {"name", "synonyms"?, "id"?, "split"?} objects, or a
    COCO-style {"categories": [...]} object.
    """
    path = Path(path)
    if not path.is_file():
        raise VocabularyError(f"vocabulary file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".json":
        lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
        return parse_vocabulary(",".join(ln for ln in lines if ln), name=path.stem)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise VocabularyError(f"vocabulary file '{path}' is not valid JSON: {e}") from None
    if isinstance(data, dict):
        data = data.get("categories")
    if not isinstance(data, list):
        raise VocabularyError(f"vocabulary file '{path}': expected a list of classes or a 'categories' list")
    if all(isinstance(x, str) for x in data):
        return parse_vocabulary(",".join(data), name=path.stem)
    syn, ids, split = [], [], []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise VocabularyError(f"vocabulary file '{path}': entry {i} needs a string field 'name'")
        syn.append(_unique([entry["name"], *entry.get("synonyms", [])]))
        ids.append(entry.get("id"))
        split.append(entry.get("split"))
    return Vocabulary(tuple(syn), tuple(ids) if all(x is not None for x in ids) else None,
                      tuple(split) if all(x is not None for x in split) else None, name=path.stem)


def _all_strings(items: Sequence) -> bool:
    """Whether every item is a str (the common case tested by type in one pass: 21k names in under 1 ms)."""
    return set(map(type, items)) <= {str} or all(isinstance(s, str) for s in items)


def load_vocabulary(spec: "str | Path | Sequence[str] | Vocabulary") -> Vocabulary:
    """Resolve a builtin name, a file, a 'cat, dog, sofa|couch' string or a list of names."""
    if isinstance(spec, Vocabulary):
        return spec
    if isinstance(spec, Path):
        return vocabulary_from_file(spec)
    if isinstance(spec, (list, tuple)):
        if not _all_strings(spec):
            raise VocabularyError("a vocabulary list must contain class-name strings")
        return parse_vocabulary(",".join(spec))
    if not isinstance(spec, str):
        raise VocabularyError(f"cannot build a vocabulary from {type(spec).__name__}")
    text = spec.strip()
    if text in BUILTIN_VOCABULARIES:
        return builtin_vocabulary(text)
    if Path(text).suffix.lower() in (".txt", ".json") or Path(text).is_file():
        return vocabulary_from_file(text)
    if "," not in text and "|" not in text and difflib.get_close_matches(text, BUILTIN_VOCABULARIES, 1, 0.8):
        # A near-miss of a builtin name is far more likely a typo than a one-class vocabulary.
        raise VocabularyError(_unknown_builtin_message(text) + f" For a one-class vocabulary write '{text},'.")
    return parse_vocabulary(text)


def spec_key(spec: Any) -> Optional[tuple]:
    """A hashable key for a vocabulary spec whose meaning cannot change between two calls ('cat, dog', a
    builtin name, a list of names), so that a caller can remember the Vocabulary it parsed; None for a
    file (its contents may change) or a Vocabulary (nothing to parse)."""
    if isinstance(spec, str):
        return None if Path(spec.strip()).is_file() else ("text", spec)
    if isinstance(spec, (list, tuple)) and _all_strings(spec):
        return ("names", tuple(spec))
    return None


class LastVocabulary:
    """What a predictor was last asked to recognise: the spec's key (`spec_key`) and the Vocabulary it gave.
    `recall` returns that Vocabulary when the same text or list of names comes again and the model still
    holds it (a vocabulary set on the model directly is noticed), so that it is not parsed again."""

    def __init__(self):
        self.key: Optional[tuple] = None
        self.vocabulary: Optional[Vocabulary] = None

    def recall(self, spec: Any, current: Vocabulary) -> Optional[Vocabulary]:
        """The remembered Vocabulary for `spec` if `current` (the model's) is still it, else None."""
        key = spec_key(spec)
        return self.vocabulary if key is not None and key == self.key and current is self.vocabulary else None

    def remember(self, spec: Any, vocabulary: Vocabulary) -> None:
        """`spec` gave `vocabulary`, which the model now holds."""
        self.key, self.vocabulary = spec_key(spec), vocabulary


def match_categories(vocabulary: Vocabulary, categories: Sequence[dict], source: str) -> list[int]:
    """The dataset category id of every class: the vocabulary's own ids, which must all be among
    `categories`, or else its names matched (case-insensitively, '_' as space) to theirs."""
    if vocabulary.ids is not None:
        known = {c["id"] for c in categories}
        unknown = [i for i in vocabulary.ids if i not in known]
        if unknown:
            raise VocabularyError(f"vocabulary '{vocabulary.name}' has category ids {unknown[:10]} that are not "
                                  f"among the categories of {source}")
        return list(vocabulary.ids)
    by_name = {c["name"].replace("_", " ").lower(): c["id"] for c in categories}
    missing = [n for n in vocabulary.names if n.lower() not in by_name]
    if missing:
        raise VocabularyError(f"classes {missing[:10]} of vocabulary '{vocabulary.name}' are not categories of "
                              f"{source}; use the dataset's own class names")
    return [by_name[n.lower()] for n in vocabulary.names]
