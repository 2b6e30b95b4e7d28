import csv
import json

import pytest

from ovclip.vocabulary import (BUILTIN_VOCABULARIES, Vocabulary, VocabularyError, builtin_vocabulary,
                               load_vocabulary, parse_vocabulary, vocabulary_from_file)

from .conftest import shared_data


def test_split_sizes():
    assert len(builtin_vocabulary("coco")) == 80
    ov = builtin_vocabulary("ov-coco")
    assert (len(ov), len(ov.base), len(ov.novel)) == (65, 48, 17)
    assert {ov.names[i] for i in ov.novel} >= {"cat", "dog", "umbrella", "couch", "scissors"}
    lvis = builtin_vocabulary("ov-lvis")
    assert (len(lvis), len(lvis.base), len(lvis.novel)) == (1203, 866, 337)
    assert all(lvis.frequency[i] == "r" for i in lvis.novel)
    assert builtin_vocabulary("lvis-v1").split is None
    assert len(builtin_vocabulary("ade20k-150")) == 150


def test_lvis_names_are_words_with_synonyms():
    lvis = builtin_vocabulary("lvis-v1")
    first = lvis.synonyms[0]
    assert first[0] == "aerosol can" and "spray can" in first
    assert not any("_" in n for s in lvis.synonyms for n in s)


def test_ov_coco_ids_match_real_coco():
    data = json.load(open(shared_data("coco_tiny", "annotations", "instances_val2017.json")))
    coco_ids = {c["name"]: c["id"] for c in data["categories"]}
    ov = builtin_vocabulary("ov-coco")
    assert all(coco_ids[n] == i for n, i in zip(ov.names, ov.ids))


def test_ade_names_match_object_info():
    rows = list(csv.DictReader(open(shared_data("ade20k_sample", "objectInfo150.csv"))))
    ade = builtin_vocabulary("ade20k-150")
    for name, row, idx in zip(ade.names, rows, ade.ids):
        assert int(row["Idx"]) == idx
        assert set(name.split()) <= set(row["Name"].split(";")), (name, row["Name"])


def test_parse_custom_string():
    v = load_vocabulary("cat, dog ,sofa|couch")
    assert v.names == ["cat", "dog", "sofa"]
    assert v.synonyms[2] == ("sofa", "couch")
    assert v.index("SOFA") == 2
    assert load_vocabulary("zebra").names == ["zebra"]


@pytest.mark.parametrize("text,match", [
    ("", "empty"), (" , ,", "empty"), ("cat, dog, cat", "twice"), ("sofa|couch, couch", "twice"),
    ("cat, Cat", "'Cat' is given twice"), ("cat, __, dog", "entry '__' has no name"), ("cat, _|_", "no name"),
    ("ice_cream, ice  cream", "'ice cream' is given twice"),
])
def test_bad_custom_vocabularies(text, match):
    with pytest.raises(VocabularyError, match=match):
        parse_vocabulary(text)


def test_parsing_cleans_each_name_as_one_would_by_hand():
    text = "  aerosol_can ,\tice   cream\n\nteddy_bear|Teddy , x "
    v = parse_vocabulary(text)
    assert v.synonyms == (("aerosol can",), ("ice cream",), ("teddy bear", "Teddy"), ("x",))
    names = [f"class_{i}  x" for i in range(500)]
    assert load_vocabulary(names).names == [f"class {i} x" for i in range(500)]
    with pytest.raises(VocabularyError, match=r"class 'A' appears twice \(positions 0 and 2\)"):
        from ovclip.vocabulary import Vocabulary
        Vocabulary((("a",), ("b",), ("A",)))
    with pytest.raises(VocabularyError, match="class 1 has an empty name"):
        Vocabulary((("a",), ("b", " ")))


def test_unknown_builtin_names_suggestion():
    with pytest.raises(VocabularyError, match="did you mean 'ov-coco'"):
        builtin_vocabulary("ov-cocoo")
    with pytest.raises(VocabularyError, match="unknown builtin vocabulary 'ov-lvs'"):
        load_vocabulary("ov-lvs")
    with pytest.raises(VocabularyError, match="unknown class 'kitten'"):
        load_vocabulary("cat, dog").index("kitten")


def test_vocabulary_files(tmp_path):
    txt = tmp_path / "v.txt"
    txt.write_text("cat\n# a comment\nsofa|couch\n\n")
    assert vocabulary_from_file(txt).synonyms == (("cat",), ("sofa", "couch"))
    js = tmp_path / "v.json"
    js.write_text(json.dumps({"categories": [{"id": 3, "name": "cat", "split": "base"},
                                             {"id": 7, "name": "dog", "synonyms": ["puppy"], "split": "novel"}]}))
    v = load_vocabulary(str(js))
    assert v.ids == (3, 7) and v.novel == [1] and v.synonyms[1] == ("dog", "puppy")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VocabularyError, match="bad.json.*not valid JSON"):
        load_vocabulary(str(bad))
    with pytest.raises(VocabularyError, match="does not exist"):
        load_vocabulary(str(tmp_path / "missing.txt"))


def test_roundtrip_and_subset():
    v = builtin_vocabulary("ov-coco")
    assert Vocabulary.from_dict(v.to_dict()) == v
    novel = v.subset(v.novel, "novel")
    assert len(novel) == 17 and novel.split == ("novel",) * 17
    assert set(BUILTIN_VOCABULARIES) == {"coco", "ov-coco", "lvis-v1", "ov-lvis", "ade20k-150", "synthetic-shapes",
                                         "voc-20", "pascal-context-59", "coco-stuff-171", "cityscapes-19",
                                         "zs-voc-20", "zs-pascal-context-59", "zs-coco-stuff-171"}
    shapes = builtin_vocabulary("synthetic-shapes")
    assert len(shapes.base) == 8 and [shapes.names[i] for i in shapes.novel] == ["star", "heart", "hexagon", "crescent"]


def test_spec_key_remembers_only_specs_that_cannot_change(tmp_path):
    from ovclip.vocabulary import Vocabulary, spec_key
    assert spec_key("cat, dog") == spec_key("cat, dog") != spec_key("cat, dogs")
    assert spec_key(["cat", "dog"]) == ("names", ("cat", "dog")) and spec_key(("cat", "dog")) == spec_key(["cat", "dog"])
    path = tmp_path / "v.txt"
    path.write_text("cat\n")
    assert spec_key(str(path)) is None  # a file may be edited between two calls
    assert spec_key(Vocabulary((("cat",),))) is None
