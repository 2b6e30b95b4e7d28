"""Teacher box pseudo-labels (VL-PLM's recipe): the labelling rule on hand-made embeddings, the resumable
dataset job, its tool, and its errors."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ovclip.pseudo_boxes_job as job
from ovclip.cli import run_tool
from ovclip.coco import AnnotationError
from ovclip.options import ConfigError
from ovclip.pseudo_boxes import annotation_quality, label_regions, labelled_classes, match_quality, pseudo_boxes
from ovclip.vocabulary import Vocabulary, VocabularyError

from .conftest import load_tool, random_image, write_config

ROOT = Path(__file__).resolve().parents[1]
E = torch.eye(4)  # unit embeddings along each class's text embedding: classes 0, 1 base, 2, 3 novel
NOVEL = [2, 3]


def test_hand_made_regions_give_the_expected_pseudo_labels():
    boxes = torch.tensor([[0, 0, 20, 20], [1, 1, 21, 21], [1, 1, 21, 21], [40, 40, 60, 60],
                          [70, 0, 90, 20], [0, 70, 20, 90], [100, 100, 103, 103], [40, 0, 60, 20]], dtype=torch.float32)
    between = torch.nn.functional.normalize(torch.tensor([0, 0, 0.8, 0.6]), dim=0)
    emb = torch.stack([E[2], E[2], E[3], E[2], between, E[2], E[2], E[0]])
    objectness = torch.tensor([0.9, 0.8, 0.8, 0.5, 1.0, 0.9, 0.9, 0.95])
    base = torch.tensor([[0, 69, 20, 91]], dtype=torch.float32)  # the box of row 5 overlaps it (IoU 0.91)
    p = label_regions(boxes, objectness, emb, E, NOVEL, base)
    # Row 0: probability 1/(1+e^-100) of class 2, score 0.5*0.9 + 0.5*1 = 0.95. Row 1: same class, IoU 0.82
    # with row 0 and a lower score (0.9): suppressed. Row 2: class 3, not suppressed by a class-2 box.
    # Row 3: 0.5*0.5 + 0.5 = 0.75 <= 0.8. Row 4: p = softmax(100*[0.8, 0.6]) = 1/(1+e^-20) of class 2, score
    # 0.5 + 0.5*p > 0.8: kept. Row 5: overlaps the base box. Row 6: 3 pixels wide. Row 7 (a base object):
    # novel probabilities 0.5 / 0.5 -> 0.5*0.95 + 0.25 = 0.725, under the threshold.
    # Best first.
    assert p.boxes.tolist() == [boxes[4].tolist(), boxes[0].tolist(), boxes[2].tolist()]
    assert p.labels.tolist() == [2, 2, 3]
    p4 = 1 / (1 + math.exp(-100 * (0.8 - 0.6)))
    assert p.class_probs[0].item() == pytest.approx(p4, rel=1e-6)
    assert p.scores.tolist() == pytest.approx([0.5 + 0.5 * p4, 0.95, 0.9], rel=1e-6)
    # VL-PLM's exact recipe (no base-overlap step) keeps row 5; a stricter threshold or a cap keep fewer.
    ref = label_regions(boxes, objectness, emb, E, NOVEL, base, base_overlap_iou=None)
    assert boxes[5].tolist() in ref.boxes.tolist() and len(ref) == 4
    assert len(label_regions(boxes, objectness, emb, E, NOVEL, base, score_thr=0.96)) == 1
    assert len(label_regions(boxes, objectness, emb, E, NOVEL, base, max_per_image=2)) == 2
    # The threshold is strict: 0.5*0.5 + 0.5*1 = 0.75 exactly is not above 0.75.
    assert len(label_regions(boxes[3:4], objectness[3:4], emb[3:4], E, NOVEL, score_thr=0.75)) == 0


def test_only_the_requested_classes_are_labelled():
    vocab = Vocabulary((("cat",), ("dog",), ("zebra",), ("okapi",)), split=("base", "base", "novel", "novel"))
    assert labelled_classes(vocab) == NOVEL and labelled_classes(vocab, "all") == [0, 1, 2, 3]
    assert labelled_classes(vocab, ["okapi"]) == [3]
    with pytest.raises(VocabularyError, match="unknown class 'okapy'.*okapi"):
        labelled_classes(vocab, ["okapy"])
    boxes = torch.tensor([[0, 0, 20, 20], [30, 30, 50, 50]], dtype=torch.float32)
    p = label_regions(boxes, torch.ones(2), torch.stack([E[2], E[3]]), E, [3])
    # With class 3 alone in the softmax every box is "class 3" with probability 1: the zebra box too, which is
    # why the base-overlap step and the objectness matter. No other label ever appears.
    assert p.labels.tolist() == [3, 3]
    with pytest.raises(ConfigError, match="unknown pseudo-label setting.*'score_thresh'"):
        label_regions(boxes, torch.ones(2), torch.stack([E[2], E[3]]), E, [3], score_thresh=0.5)


def test_pseudo_boxes_embeds_clipped_boxes_with_the_teacher(tiny_vit):
    image = random_image(48, 64, seed=3)
    boxes = torch.tensor([[-10, -10, 30, 30], [50, 40, 52, 42], [10, 10, 40, 40]], dtype=torch.float32)
    text = torch.nn.functional.normalize(torch.randn(3, tiny_vit.embed_dim, generator=torch.Generator().manual_seed(0)),
                                         dim=-1)
    p = pseudo_boxes(tiny_vit, image, boxes, torch.ones(3), text, [1, 2], score_thr=0.0)
    # The first box is clipped to the image, the 2-pixel one is left out (min_size 5); IoU 0.29: both stay.
    assert sorted(p.boxes.tolist()) == [[0.0, 0.0, 30.0, 30.0], [10.0, 10.0, 40.0, 40.0]]
    assert set(p.labels.tolist()) <= {1, 2} and torch.all(p.scores > 0.5)


def test_match_quality_counts_each_truth_once():
    pseudo = {1: (np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]]), np.array([0.9, 0.8, 0.7]),
                  np.array([2, 2, 3]))}
    truth = {1: (np.array([[0, 0, 10, 10]]), np.array([2])), 2: (np.array([[5, 5, 9, 9]]), np.array([3]))}
    q = match_quality(pseudo, truth)
    assert q["precision"] == pytest.approx(100 / 3) and q["recall"] == pytest.approx(50.0)
    assert q["per_class"][2]["precision"] == 50.0 and q["per_class"][3]["recall"] == 0.0


def make_dataset(root: Path, n: int = 4) -> dict:
    """n images with one base box each, a vocabulary file with a split, and proposals with objectness."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    images, anns, props = [], [], []
    for i in range(n):
        Image.fromarray(random_image(48, 64, seed=i).permute(1, 2, 0).numpy()).save(root / "img" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 64, "height": 48})
        anns.append({"id": i + 1, "image_id": i, "category_id": 1, "bbox": [2, 2, 20, 20]})
        anns.append({"id": 100 + i, "image_id": i, "category_id": 2, "bbox": [30, 10, 30, 30]})  # novel: withheld
        props += [{"image_id": i, "bbox": b, "score": s} for b, s in
                  (([2, 2, 20, 20], 0.99), ([30, 10, 30, 30], 0.98), ([30, 12, 29, 28], 0.97), ([5, 30, 9, 9], 0.9))]
    categories = [{"id": 1, "name": "thing", "split": "base"}, {"id": 2, "name": "blob", "split": "novel"},
                  {"id": 3, "name": "spot", "split": "novel"}]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    (root / "vocab.json").write_text(json.dumps(categories))
    (root / "props.json").write_text(json.dumps(props))
    return {"teacher": {"spec": "tiny-vit", "device": "cpu"},
            "dataset": {"ann_file": str(root / "ann.json"), "img_dir": str(root / "img"),
                        "proposals": str(root / "props.json")},
            "vocabulary": {"name": str(root / "vocab.json"), "templates": "single"},
            "pseudo": {"score_thr": 0.5}}


def test_job_writes_pseudo_annotations_and_resumes(tmp_path, monkeypatch):
    cfg = make_dataset(tmp_path)
    out = str(tmp_path / "pseudo.json")
    stats = job.run_pseudo_boxes(cfg, out, progress=False)
    assert stats["images"] == 4 and stats["bad_images"] == 0 and stats["pseudo_labels"] > 0
    # A rerun finds every image done; with the last line torn (a killed job), it redoes that image alone.
    calls = []
    real = job.pseudo_boxes
    monkeypatch.setattr(job, "pseudo_boxes", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert job.run_pseudo_boxes(cfg, out, progress=False)["skipped_done"] == 4 and not calls
    part = job.parts_dir(out) / "rank0.jsonl"
    part.write_text(part.read_text()[:-20])
    again = job.run_pseudo_boxes(cfg, out, progress=False)
    assert (again["images"], again["skipped_done"], len(calls)) == (1, 3, 1)
    written = job.write_pseudo_annotations(cfg, out)
    data = json.loads(Path(out).read_text())
    assert not job.parts_dir(out).exists() and data["info"]["pseudo"] and len(data["images"]) == 4
    anns = data["annotations"]
    assert len(anns) == written["pseudo_labels"] == stats["pseudo_labels"]
    assert all(a["pseudo"] and a["id"] < 0 and a["category_id"] in (2, 3) and a["score"] > 0.5 for a in anns)
    # The proposal on the base object's box is dropped whatever the teacher says of it.
    assert not any(a["bbox"] == [2, 2, 20, 20] for a in anns)
    assert len({a["id"] for a in anns}) == len(anns)


def test_resuming_with_other_settings_is_refused(tmp_path):
    cfg = make_dataset(tmp_path, n=1)
    out = str(tmp_path / "pseudo.json")
    job.run_pseudo_boxes(cfg, out, progress=False)
    cfg["pseudo"]["score_thr"] = 0.9
    with pytest.raises(ConfigError, match="other settings.*pseudo.*remove"):
        job.run_pseudo_boxes(cfg, out, progress=False)


@pytest.mark.parametrize("entries,match", [
    ([{"image_id": 0, "bbox": [0, 0, 1]}], r"props.json: \[0\]: 'bbox' must be four numbers"),
    ([{"image_id": 0, "bbox": [0, 0, 5, 5], "score": 0.5}, {"bbox": [0, 0, 5, 5], "score": 0.5}],
     r"props.json: \[1\]: missing field 'image_id'"),
    ([{"image_id": 0, "bbox": [0, 0, 5, 5]}], r"props.json: \[0\]: missing field 'score'"),
    ([{"image_id": 0, "bbox": [0, 0, 5, 5], "score": "high"}], r"\[0\]: field 'score' must be"),
    ([{"image_id": 77, "bbox": [0, 0, 5, 5], "score": 0.5}], r"image id\(s\) not in .*ann.json.*77"),
    ({"image_id": 0}, "expected a list"),
])
def test_malformed_proposals_are_named(tmp_path, entries, match):
    cfg = make_dataset(tmp_path, n=1)
    (tmp_path / "props.json").write_text(json.dumps(entries))
    with pytest.raises(AnnotationError, match=match):
        job.run_pseudo_boxes(cfg, str(tmp_path / "p.json"), progress=False)


def test_config_errors(tmp_path):
    cfg = make_dataset(tmp_path, n=1)
    with pytest.raises(ConfigError, match="unknown key 'score_thresh' in config section 'pseudo'.*score_thr"):
        job.run_pseudo_boxes({**cfg, "pseudo": {"score_thresh": 0.5}}, str(tmp_path / "p.json"), progress=False)
    with pytest.raises(ConfigError, match="config needs vocabulary.name"):
        job.run_pseudo_boxes({**cfg, "vocabulary": {}}, str(tmp_path / "p.json"), progress=False)
    with pytest.raises(ConfigError, match="objectness_weight must be in"):
        job.run_pseudo_boxes({**cfg, "pseudo": {"objectness_weight": 2}}, str(tmp_path / "p.json"), progress=False)


def tool():
    return load_tool("pseudo_boxes")


def test_tool_writes_the_file_and_names_a_missing_proposals_file(tmp_path, capsys):
    cfg = make_dataset(tmp_path, n=2)
    config = write_config({k: v for k, v in cfg.items() if k != "dataset"} |
                          {"dataset": {**cfg["dataset"], "proposals": None}}, tmp_path / "cfg.py")
    out = tmp_path / "pseudo.json"
    assert tool().main([config, "--proposals", cfg["dataset"]["proposals"], "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["complete"] and summary["file_images"] == 2 and out.is_file()
    assert run_tool(tool().main, [config, "--proposals", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    assert "dataset.proposals: proposals file not found" in capsys.readouterr().err


def test_torchrun_ranks_share_the_images(tmp_path):
    cfg = make_dataset(tmp_path, n=4)
    config = write_config(cfg, tmp_path / "cfg.py")
    out = tmp_path / "pseudo.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tools" / "pseudo_boxes.py"), config, "--out", str(out), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ,
                                                                        "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["images"] for r in rows) == [2, 2]
    assert len(json.loads(out.read_text())["images"]) == 4


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "pseudo_boxes").glob("*.py")), ids=lambda p: p.name)
def test_shipped_configs_resolve(config):
    from mmengine.config import Config
    from ovclip.vocabulary import load_vocabulary
    c = job.resolve_config({k: v for k, v in Config.fromfile(config).to_dict().items() if not k.endswith("_root")})
    vocab = load_vocabulary(c["vocabulary"]["name"])
    assert labelled_classes(vocab, c["vocabulary"]["classes"]) == vocab.novel
    assert c["pseudo"]["score_thr"] == 0.8 and c["dataset"]["max_regions"] == 100


def test_synthetic_config_labels_the_novel_objects_of_a_world(tmp_path):
    """The shipped synthetic teacher on a small world, its ground-truth boxes (all 12 shapes) as proposals:
    the novel objects get their own class, the base objects none."""
    from ovclip.cli import tool_config
    from ovclip.synthetic import make_world
    from ovclip.vocabulary import load_vocabulary
    world = make_world(tmp_path / "world", seed=0, n_train=6, n_val=1)
    full = json.loads(Path(world["train_all"]).read_text())
    (tmp_path / "props.json").write_text(json.dumps([{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.95}
                                                     for a in full["annotations"]]))
    sections = tool_config(str(ROOT / "configs" / "pseudo_boxes" / "synthetic-cpu.py"),
                           {"data_root": world["root"] + "/", "dataset.proposals": str(tmp_path / "props.json")})
    out = str(tmp_path / "pseudo.json")
    job.run_pseudo_boxes(sections, out, progress=False)
    job.write_pseudo_annotations(sections, out)
    vocab = load_vocabulary("synthetic-shapes")
    novel_ids = {vocab.ids[i] for i in vocab.novel}
    q = annotation_quality(out, world["train_all"], novel_ids)
    assert q["truths"] > 0 and q["precision"] >= 75 and q["recall"] >= 50, q
