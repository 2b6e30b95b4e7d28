import json
import math
from importlib import resources

import pytest
import torch

from ovclip.vocabulary import Vocabulary, builtin_vocabulary
from ovd.evaluation import DetectionEvaluator, LvisEvaluator, OVCocoEvaluator

# (image id, class name, xyxy box)
GT = [(1, "person", [10, 10, 50, 80]), (1, "cat", [60, 20, 90, 50]), (2, "dog", [5, 5, 40, 40]),
      (2, "car", [50, 50, 95, 90]), (3, "cat", [20, 30, 70, 60]), (3, "person", [0, 0, 30, 30])]


def coco_gt(tmp_path, categories):
    ids = {c["name"]: c["id"] for c in categories}
    anns = [{"id": i + 1, "image_id": im, "category_id": ids[n], "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
             "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0, "segmentation": []}
            for i, (im, n, b) in enumerate(GT)]
    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in (1, 2, 3)]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


def feed(ev, vocab, skip=()):
    for im in (1, 2, 3):
        rows = [(n, b) for i, n, b in GT if i == im and (i, n) not in skip]
        ev.process(im, torch.tensor([b for _, b in rows], dtype=torch.float32).reshape(-1, 4),
                   torch.ones(len(rows)), torch.tensor([vocab.index(n) for n, _ in rows], dtype=torch.long))


def test_ov_coco_ground_truth_as_detections_is_perfect(tmp_path):
    cats = json.loads((resources.files("ovclip.data") / "coco.json").read_text())
    ev = OVCocoEvaluator(coco_gt(tmp_path, cats), out_dir=tmp_path / "out")
    feed(ev, ev.vocabulary)
    m = ev.evaluate()
    assert m["AP50"] == pytest.approx(100) and m["AP50_base"] == pytest.approx(100)
    assert m["AP50_novel"] == pytest.approx(100) and m["AP"] == pytest.approx(100)
    saved = json.loads((tmp_path / "out" / "ov-coco_metrics.json").read_text())
    assert saved["metrics"]["AP50_novel"] == pytest.approx(100)
    assert len(json.loads((tmp_path / "out" / "ov-coco_results.json").read_text())) == len(GT)


def test_ov_coco_a_novel_miss_lowers_novel_ap_only(tmp_path):
    cats = json.loads((resources.files("ovclip.data") / "coco.json").read_text())
    ev = OVCocoEvaluator(coco_gt(tmp_path, cats))
    feed(ev, ev.vocabulary, skip={(1, "cat"), (3, "cat")})  # every cat missed; dog still found
    m = ev.evaluate()
    assert m["AP50_base"] == pytest.approx(100)
    assert m["AP50_novel"] == pytest.approx(50)  # cat 0, dog 100
    assert m["AP50"] == pytest.approx(100 * 3 / 4)


def test_custom_vocabulary_by_name_and_empty_run(tmp_path):
    cats = [{"id": 7, "name": "person"}, {"id": 8, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 10, "name": "car"}]
    gt = coco_gt(tmp_path, cats)
    ev = DetectionEvaluator(gt, "person, cat, dog, car")
    assert ev.category_ids == [7, 8, 9, 10]
    assert ev.evaluate()["AP50"] == 0.0
    with pytest.raises(ValueError, match=r"classes \['zebra'\] of vocabulary 'custom' are not categories"):
        DetectionEvaluator(gt, "person, zebra")
    with pytest.raises(KeyError, match="image 42"):
        ev.process(42, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))


def lvis_gt(tmp_path):
    """The GT as an LVIS file (frequencies, box-shaped polygons) and its vocabulary."""
    cats = [{"id": 1, "name": "person", "frequency": "f", "synonyms": ["person"], "image_count": 2},
            {"id": 2, "name": "cat", "frequency": "r", "synonyms": ["cat"], "image_count": 2},
            {"id": 3, "name": "dog", "frequency": "c", "synonyms": ["dog"], "image_count": 1},
            {"id": 4, "name": "car", "frequency": "f", "synonyms": ["car"], "image_count": 1}]
    path = coco_gt(tmp_path, cats)
    data = json.loads(path.read_text())
    for im in data["images"]:
        im.update(neg_category_ids=[], not_exhaustive_category_ids=[])
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    path.write_text(json.dumps(data))
    vocab = Vocabulary((("person",), ("cat",), ("dog",), ("car",)), ids=(1, 2, 3, 4), frequency=("f", "r", "c", "f"))
    return path, vocab


def test_lvis_metric_runs_on_numpy2(tmp_path):
    path, vocab = lvis_gt(tmp_path)
    ev = LvisEvaluator(path, vocab, out_dir=tmp_path / "out")
    feed(ev, vocab)
    m = ev.evaluate()
    assert m["APr"] == pytest.approx(100) and m["APc"] == pytest.approx(100) and m["APf"] == pytest.approx(100)
    ev.reset()
    feed(ev, vocab, skip={(1, "cat"), (3, "cat")})
    m = ev.evaluate()
    assert m["APr"] == pytest.approx(0) and m["APf"] == pytest.approx(100)
    assert not math.isnan(m["AP"]) and (tmp_path / "out" / "lvis_bbox_metrics.json").is_file()
    assert len(builtin_vocabulary("ov-lvis").novel) == 337


def test_lvis_mask_metric_through_mmengine_interface(tmp_path):
    from ovd.evaluation import LvisMetric
    path, vocab = lvis_gt(tmp_path)
    metric = LvisMetric(str(path), vocab, iou_type="segm", results_file=str(tmp_path / "res.json"))
    for im in (1, 2, 3):
        rows = [(n, b) for i, n, b in GT if i == im]
        masks = torch.zeros(len(rows), 1, 100, 100)
        for k, (_, b) in enumerate(rows):
            masks[k, 0, b[1]:b[3], b[0]:b[2]] = 0.9
        metric.process({}, [{"image_id": im, "boxes": torch.tensor([b for _, b in rows], dtype=torch.float32),
                             "scores": torch.ones(len(rows)), "masks": masks,
                             "labels": torch.tensor([vocab.index(n) for n, _ in rows])}])
    m = metric.compute_metrics(metric.results)
    assert m["APr"] > 90 and m["APf"] > 90
    saved = json.loads((tmp_path / "res.json").read_text())
    assert len(saved) == len(GT) and "counts" in saved[0]["segmentation"]
    with pytest.raises(ValueError, match=r"category ids \[9\]"):
        LvisEvaluator(path, Vocabulary((("person",),), ids=(9,)))


def test_per_class_ap_follows_category_ids_not_vocabulary_order(tmp_path):
    cats = json.loads((resources.files("ovclip.data") / "coco.json").read_text())
    gt = coco_gt(tmp_path, cats)
    ev = DetectionEvaluator(gt, "dog, cat, person", out_dir=tmp_path / "out")  # ids 18, 17, 1: descending
    assert ev.category_ids == [18, 17, 1]
    for im in (1, 2, 3):
        rows = [b for i, n, b in GT if i == im and n == "person"]
        ev.process(im, torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), torch.ones(len(rows)),
                   torch.full((len(rows),), 2, dtype=torch.long))
    ap50, _ = ev._per_class_ap(ev.evaluated_images())
    assert ap50.tolist() == pytest.approx([0, 0, 100])
    ev.evaluate()
    saved = json.loads((tmp_path / "out" / "coco_metrics.json").read_text())
    assert saved["per_class_AP50"] == pytest.approx({"dog": 0, "cat": 0, "person": 100})


def ov_coco_gt_with_extra_images(tmp_path):
    """The GT plus image 4 (only a 'stop sign', not one of the 65 classes), image 5 (no annotation) and
    image 6 (only a crowd person)."""
    cats = json.loads((resources.files("ovclip.data") / "coco.json").read_text())
    path = coco_gt(tmp_path, cats)
    data = json.loads(path.read_text())
    ids = {c["name"]: c["id"] for c in cats}
    data["images"] += [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in (4, 5, 6)]
    data["annotations"] += [
        {"id": 100, "image_id": 4, "category_id": ids["stop sign"], "bbox": [10, 10, 30, 30], "area": 900.0,
         "iscrowd": 0, "segmentation": []},
        {"id": 101, "image_id": 6, "category_id": ids["person"], "bbox": [0, 0, 90, 90], "area": 8100.0,
         "iscrowd": 1, "segmentation": {"counts": [0, 10000], "size": [100, 100]}}]
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("image_set,images,person_ap50", [("annotated", 4, 100.0), ("all", 6, 50.0)])
def test_ov_coco_evaluates_images_with_an_annotation_of_its_classes(tmp_path, image_set, images, person_ap50):
    path = ov_coco_gt_with_extra_images(tmp_path)
    ev = OVCocoEvaluator(path, out_dir=tmp_path / "out", image_set=image_set)
    feed(ev, ev.vocabulary)
    person = ev.vocabulary.index("person")
    for im in (4, 5):  # a confident false person on each image outside the protocol's set
        ev.process(im, torch.tensor([[20.0, 20.0, 60.0, 60.0]]), torch.tensor([2.0]), torch.tensor([person]))
    ev.process(6, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    m = ev.evaluate()
    assert m["images"] == images
    ap50, _ = ev._per_class_ap(ev.evaluated_images())
    # 'all': two false positives ranked above the two true persons (precision 1/3, 2/4 at recall 1/2, 1;
    # COCO's interpolated precision is 1/2 at every recall level)
    assert ap50[person] == pytest.approx(person_ap50, abs=1.0)
    saved = json.loads((tmp_path / "out" / "ov-coco_metrics.json").read_text())
    assert saved["image_set"] == image_set and saved["images_processed"] == 6


def test_detection_metric_defaults_to_the_ov_coco_image_set(tmp_path):
    from ovd.evaluation import DetectionMetric
    path = ov_coco_gt_with_extra_images(tmp_path)
    assert DetectionMetric(str(path), "ov-coco")._evaluator().image_set == "annotated"
    assert DetectionMetric(str(path), "coco")._evaluator().image_set == "all"
    assert DetectionMetric(str(path), "ov-coco", image_set="all")._evaluator().image_set == "all"
    with pytest.raises(ValueError, match="image_set must be one of"):
        DetectionEvaluator(path, "ov-coco", image_set="some")


def test_lvis_frequency_group_without_categories_is_missing_not_minus_100(tmp_path):
    path, vocab = lvis_gt(tmp_path)
    data = json.loads(path.read_text())
    for c in data["categories"]:
        c["frequency"] = "f" if c["frequency"] == "c" else c["frequency"]  # no common category left
    path.write_text(json.dumps(data))
    ev = LvisEvaluator(path, vocab, out_dir=tmp_path / "out")
    feed(ev, vocab)
    m = ev.evaluate()
    assert math.isnan(m["APc"]) and m["APr"] == pytest.approx(100) and m["APf"] == pytest.approx(100)
    saved = json.loads((tmp_path / "out" / "lvis_bbox_metrics.json").read_text())  # standard JSON: null
    assert saved["metrics"]["APc"] is None and saved["metrics"]["APr"] == pytest.approx(100)
    ev.reset()
    m = ev.evaluate()  # no detections at all: 0 where there is ground truth, still missing for 'c'
    assert math.isnan(m["APc"]) and m["APr"] == 0.0 and m["AP"] == 0.0


def random_federated_gt(tmp_path, n_images=40, n_cats=24, seed=0):
    """An LVIS-style file (frequencies, negative and not-exhaustive categories, polygons) with noisy
    detections and false positives: (path, vocabulary, per-image detections)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    cats = [{"id": i + 1, "name": f"thing {i}", "frequency": "rcf"[i % 3]} for i in range(n_cats)]
    images, anns, dets = [], [], {}
    for im in range(1, n_images + 1):
        present = [int(c) for c in rng.choice(n_cats, 4, replace=False) + 1]
        neg = [int(c) for c in rng.choice(n_cats, 3, replace=False) + 1 if c not in present]
        images.append({"id": im, "width": 200, "height": 200, "file_name": f"{im}.jpg", "neg_category_ids": neg,
                       "not_exhaustive_category_ids": present[:1]})
        rows = []
        for c in present:
            for _ in range(int(rng.integers(1, 3))):
                x, y, w, h = (float(v) for v in (*rng.uniform(0, 150, 2), *rng.uniform(5, 50, 2)))
                anns.append({"id": len(anns) + 1, "image_id": im, "category_id": c, "bbox": [x, y, w, h],
                             "area": w * h, "iscrowd": 0, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
                dx, dy = rng.normal(0, 3, 2)
                rows.append((c - 1, [x + dx, y + dy, x + dx + w, y + dy + h]))
        for _ in range(15):
            x, y = rng.uniform(0, 150, 2)
            rows.append((int(rng.integers(0, n_cats)), [x, y, x + 30, y + 30]))
        dets[im] = (torch.tensor([b for _, b in rows], dtype=torch.float32), torch.tensor(rng.uniform(size=len(rows)),
                    dtype=torch.float32), torch.tensor([c for c, _ in rows]))
    path = tmp_path / "federated.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    split = tuple("novel" if c["frequency"] == "r" else "base" for c in cats)
    vocab = Vocabulary(tuple((c["name"],) for c in cats), ids=tuple(c["id"] for c in cats), split=split,
                       frequency=tuple(c["frequency"] for c in cats))
    return path, vocab, dets


def test_faster_backend_gives_the_reference_numbers(tmp_path):
    path, vocab, dets = random_federated_gt(tmp_path)
    coco = {}
    for backend in ("faster", "reference"):
        ev = DetectionEvaluator(path, vocab, backend=backend, image_set="all")
        for im, (b, s, lab) in dets.items():
            ev.process(im, b, s, lab)
        coco[backend] = (ev.evaluate(), ev._per_class_ap(ev.evaluated_images()))
    assert coco["faster"][0] == pytest.approx(coco["reference"][0], abs=1e-9)
    for a, b in zip(coco["faster"][1], coco["reference"][1]):
        assert a == pytest.approx(b, abs=1e-9, nan_ok=True)
    assert 5 < coco["faster"][0]["AP50"] < 95  # neither trivial nor empty
    for iou_type in ("bbox", "segm"):
        lvis = {}
        for backend in ("faster", "reference"):
            ev = LvisEvaluator(path, vocab, iou_type=iou_type, backend=backend)
            for im, (b, s, lab) in dets.items():
                masks = None
                if iou_type == "segm":
                    from pycocotools import mask as mask_utils
                    masks = []
                    for x0, y0, x1, y1 in b.tolist():
                        rle = mask_utils.frPyObjects([[x0, y0, x1, y0, x1, y1, x0, y1]], 200, 200)[0]
                        rle["counts"] = rle["counts"].decode("ascii")
                        masks.append(rle)
                ev.process(im, b, s, lab, masks=masks)
            lvis[backend] = ev.evaluate()
        assert lvis["faster"] == pytest.approx(lvis["reference"], abs=1e-9), iou_type
        assert 5 < lvis["faster"]["AP"] < 95
    with pytest.raises(ValueError, match="backend must be one of"):
        DetectionEvaluator(path, vocab, backend="fast")
