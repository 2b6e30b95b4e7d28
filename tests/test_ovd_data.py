"""COCO-format detection datasets: parsing, OV filtering, pipelines, feature-store targets, bad input."""
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from ovclip.coco import AnnotationError
from ovclip.io import ImageReadError
from ovclip.store import StoreWriter
from ovclip.vocabulary import VocabularyError
from ovd.data import CocoDetection, PipelineError, detection_collate

CATS = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 5, "name": "traffic_light"}]


def write_dataset(root, annotations=None, images=3, categories=CATS, size=(40, 60)):
    """`images` solid-colour PNGs and a COCO json; returns (ann_file, img_dir)."""
    img_dir = root / "img"
    img_dir.mkdir(exist_ok=True)
    entries = []
    for i in range(images):
        Image.new("RGB", (size[1], size[0]), (40 * i, 80, 120)).save(img_dir / f"{i}.png")
        entries.append({"id": i + 1, "file_name": f"{i}.png", "width": size[1], "height": size[0]})
    if annotations is None:
        annotations = [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 12], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20, 5, 15, 15], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 5, "bbox": [1, 1, 30, 20], "iscrowd": 0},
            {"id": 4, "image_id": 3, "category_id": 1, "bbox": [5, 5, 10, 10], "iscrowd": 0},
        ]
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": categories}))
    return ann_file, img_dir


def split_vocab(root):
    path = root / "vocab.json"
    path.write_text(json.dumps([{"name": "circle", "id": 1, "split": "base"},
                                {"name": "square", "id": 2, "split": "novel"},
                                {"name": "traffic light", "id": 5, "split": "base"}]))
    return str(path)


def test_loads_boxes_labels_and_vocabulary_from_the_file(tmp_path):
    ann, img = write_dataset(tmp_path)
    ds = CocoDetection(ann, img)
    assert ds.vocabulary.names == ["circle", "square", "traffic light"] and ds.vocabulary.ids == (1, 2, 5)
    s = ds[0]
    assert s["inputs"].dtype == torch.uint8 and s["inputs"].shape == (3, 40, 60)
    assert torch.equal(s["data_samples"]["boxes"], torch.tensor([[2.0, 3, 12, 15], [20, 5, 35, 20]]))
    assert s["data_samples"]["labels"].tolist() == [0, 1] and s["data_samples"]["image_id"] == 1
    batch = detection_collate([ds[0], ds[1]])
    assert len(batch["inputs"]) == 2 and batch["data_samples"][1]["labels"].tolist() == [2]


def test_base_only_training_drops_novel_annotations_but_keeps_their_images(tmp_path):
    ann, img = write_dataset(tmp_path)
    ds = CocoDetection(ann, img, vocabulary=split_vocab(tmp_path), train_classes="base")
    assert ds.stats["excluded_class"] == 1 and len(ds) == 3
    assert ds[0]["data_samples"]["labels"].tolist() == [0]  # the square (novel) is unannotated
    only_square = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [2, 3, 10, 12]}]
    ann2, _ = write_dataset(tmp_path, only_square, images=2)
    with pytest.raises(AnnotationError, match="no images left"):
        CocoDetection(ann2, img, vocabulary=split_vocab(tmp_path), train_classes="base", filter_empty=True)
    with pytest.raises(VocabularyError, match="base/novel split"):
        CocoDetection(ann, img, train_classes="base")


def test_vocabulary_by_name_and_unknown_names(tmp_path):
    ann, img = write_dataset(tmp_path)
    ds = CocoDetection(ann, img, vocabulary="traffic light, circle")
    assert ds.vocabulary.ids == (5, 1) and ds.stats["excluded_class"] == 1
    with pytest.raises(VocabularyError, match=r"\['zebra'\].*not categories"):
        CocoDetection(ann, img, vocabulary="circle, zebra")
    with pytest.raises(VocabularyError, match=r"ov-coco. has category ids \[3, 4, 6, "):
        CocoDetection(ann, img, vocabulary="ov-coco")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("categories"), "missing or malformed field 'categories'"),
    (lambda d: d["annotations"][1].pop("bbox"), r"annotations\[1\]: missing field 'bbox'"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\]: 'bbox' must be four numbers"),
    (lambda d: d["annotations"][2].update(category_id=99), r"annotations\[2\]: category_id 99 is not in 'categories'"),
    (lambda d: d["annotations"][0].update(image_id=77), r"annotations\[0\]: image_id 77 is not in 'images'"),
    (lambda d: d["images"][0].pop("file_name"), r"images\[0\]: missing field 'file_name'"),
    (lambda d: d["categories"][0].update(id="one"), r"categories\[0\]: field 'id' must be int"),
])
def test_malformed_annotation_files_name_the_field(tmp_path, mutate, message):
    ann, img = write_dataset(tmp_path)
    data = json.loads(ann.read_text())
    mutate(data)
    ann.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=message):
        CocoDetection(ann, img)


def test_invalid_json_names_file_and_line(tmp_path):
    ann, img = write_dataset(tmp_path)
    ann.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(AnnotationError, match=r"ann.json is not valid JSON \(line 2"):
        CocoDetection(ann, img)


def test_degenerate_and_crowd_boxes_are_dropped_with_a_count(tmp_path, caplog):
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 12]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, -3]},
            {"id": 4, "image_id": 2, "category_id": 2, "bbox": [5, 5, 0.5, 8]},
            {"id": 5, "image_id": 2, "category_id": 2, "bbox": [1, 1, 9, 9], "iscrowd": 1}]
    ann, img = write_dataset(tmp_path, anns)
    with caplog.at_level(logging.WARNING):
        ds = CocoDetection(ann, img)
    assert ds.stats["degenerate"] == 3 and ds.stats["crowd"] == 1 and ds.stats["annotations_kept"] == 1
    assert "dropped 3 empty or degenerate boxes" in caplog.text
    assert len(ds[1]["data_samples"]["boxes"]) == 0


def test_missing_and_corrupt_images_skip_with_count_or_fail_with_path(tmp_path, caplog):
    ann, img = write_dataset(tmp_path)
    (img / "0.png").unlink()
    (img / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = CocoDetection(ann, img, on_bad_image="skip")
    with caplog.at_level(logging.WARNING):
        sample = ds[0]
    assert sample["data_samples"]["image_id"] == 3 and ds.bad_images == 2
    assert "0.png" in caplog.text and "1.png" in caplog.text and "(2 so far" in caplog.text
    strict = CocoDetection(ann, img, on_bad_image="error")
    with pytest.raises(ImageReadError, match=r"image file not found: .*0\.png"):
        strict[0]
    with pytest.raises(ImageReadError, match=r"cannot decode image .*1\.png"):
        strict[1]


def test_pipeline_moves_boxes_and_distillation_regions_together(tmp_path):
    ann, img = write_dataset(tmp_path)
    store = tmp_path / "store"
    with StoreWriter(store, {"embed_dim": 4}) as w:
        w.add(1, torch.tensor([[0.0, 0, 10, 10], [30, 5, 50, 25]]), torch.eye(4)[:2])
    ds = CocoDetection(ann, img, feature_store=str(store), pipeline=[dict(type="RandomHorizontalFlip", p=1.0)])
    s = ds[0]["data_samples"]
    assert torch.equal(s["boxes"][0], torch.tensor([48.0, 3, 58, 15]))  # x -> 60 - x
    assert torch.equal(s["distill_boxes"], torch.tensor([[50.0, 0, 60, 10], [10, 5, 30, 25]]))
    assert torch.equal(s["distill_embeddings"], torch.eye(4)[:2])
    other = ds[1]["data_samples"]  # image 2 is not in the store: no regions, right width
    assert other["distill_boxes"].shape == (0, 4) and other["distill_embeddings"].shape == (0, 4)
    assert ds.stats["images_not_in_store"] == 1
    with pytest.raises(PipelineError, match=r"'RandomHorizontalFlips' is not a torchvision.transforms.v2 .*"
                                            r"RandomHorizontalFlip"):
        CocoDetection(ann, img, pipeline=[dict(type="RandomHorizontalFlips")])
    with pytest.raises(PipelineError, match=r"pipeline\[0\] \(RandomHorizontalFlip\)"):
        CocoDetection(ann, img, pipeline=[dict(type="RandomHorizontalFlip", prob=0.5)])


def test_masks_from_polygons_and_lvis_image_urls(tmp_path):
    ann, img = write_dataset(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 10],
                                         "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]]}])
    data = json.loads(ann.read_text())
    for entry in data["images"]:  # LVIS v1 names images by their COCO url
        entry["coco_url"] = f"http://images.cocodataset.org/img/{entry.pop('file_name')}"
    ann.write_text(json.dumps(data))
    ds = CocoDetection(ann, tmp_path, with_masks=True)
    s = ds[0]["data_samples"]
    mask = s["masks"][0]
    assert s["masks"].shape == (1, 40, 60) and mask.dtype == torch.uint8
    ys, xs = np.nonzero(mask.numpy())
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 29, 10, 19)
    assert ds[1]["data_samples"]["masks"].shape == (0, 40, 60)


def test_real_coco_sample_as_ov_coco_training_data():
    from .conftest import shared_data
    root = shared_data("coco_tiny")
    ann, img = f"{root}/annotations/instances_val2017.json", f"{root}/val2017"
    full = CocoDetection(ann, img, vocabulary="ov-coco")
    base = CocoDetection(ann, img, vocabulary="ov-coco", train_classes="base", filter_empty=True)
    assert base.stats["annotations_kept"] < full.stats["annotations_kept"] and len(base) <= len(full)
    novel = set(base.vocabulary.novel)
    labels = torch.cat([base[i]["data_samples"]["labels"] for i in range(3)])
    assert len(labels) and not set(labels.tolist()) & novel
    sample = base[0]
    assert sample["inputs"].shape[0] == 3 and sample["data_samples"]["boxes"].shape[1] == 4


def write_pseudo(path, annotations):
    path.write_text(json.dumps({"info": {"pseudo": True}, "images": [], "categories": CATS,
                                "annotations": annotations}))
    return str(path)


def test_pseudo_annotations_join_the_base_ground_truth_with_their_weights(tmp_path):
    ann, img = write_dataset(tmp_path)
    pseudo = write_pseudo(tmp_path / "p.json", [
        {"id": -1, "image_id": 1, "category_id": 2, "bbox": [20, 5, 15, 15], "score": 0.9, "pseudo": True},
        {"id": -2, "image_id": 3, "category_id": 2, "bbox": [30, 20, 10, 10], "score": 0.85, "pseudo": True},
        {"id": -3, "image_id": 3, "category_id": 2, "bbox": [30, 20, 0, 10], "score": 0.85}])  # degenerate
    vl_plm = write_pseudo(tmp_path / "v.json", [{"id": -1, "image_id": 2, "category_id": 2, "bbox": [0, 0, 9, 9],
                                                 "confidence": 0.95, "segmentation": [[]], "area": 0}])
    ds = CocoDetection(ann, img, vocabulary=split_vocab(tmp_path), train_classes="base",
                       pseudo_annotations=[pseudo, vl_plm])
    assert ds.stats["excluded_class"] == 1 and ds.stats["pseudo_annotations"] == 3
    s = ds[0]["data_samples"]
    assert s["labels"].tolist() == [0, 1] and s["weights"].tolist() == pytest.approx([1.0, 0.9])
    assert ds[1]["data_samples"]["weights"].tolist() == pytest.approx([1.0, 0.95])  # VL-PLM's 'confidence'
    assert ds[2]["data_samples"]["labels"].tolist() == [0, 1]
    plain = CocoDetection(ann, img, vocabulary=split_vocab(tmp_path), train_classes="base", pseudo_annotations=pseudo,
                          pseudo_weight="one")
    assert plain[0]["data_samples"]["weights"].tolist() == [1.0, 1.0]
    assert "weights" not in CocoDetection(ann, img)[0]["data_samples"]


def test_pseudo_annotation_counts_per_class_reach_the_log(tmp_path):
    from mmengine.logging import MMLogger
    ann, img = write_dataset(tmp_path)
    pseudo = write_pseudo(tmp_path / "p.json", [
        {"id": -1, "image_id": 1, "category_id": 2, "bbox": [20, 5, 15, 15], "score": 0.9}])
    logger = MMLogger.get_instance("pseudo-test", log_file=str(tmp_path / "train.log"))
    CocoDetection(ann, img, vocabulary=split_vocab(tmp_path), train_classes="base", pseudo_annotations=pseudo)
    for h in logger.handlers:
        h.flush()
    assert "1 pseudo-annotations from" in (tmp_path / "train.log").read_text() and "'square': 1" in \
        (tmp_path / "train.log").read_text()


@pytest.mark.parametrize("entry,match", [
    ({"image_id": 9, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.9}, r"annotations\[0\]: image_id 9 is not an "
                                                                              r"image of this dataset"),
    ({"image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5], "score": 0.9}, r"category_id 7 is not a class"),
    ({"image_id": 1, "category_id": 2, "bbox": [0, 0, 5], "score": 0.9}, r"'bbox' must be four numbers"),
    ({"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 3}, r"'score' must be in \[0, 1\]"),
])
def test_malformed_pseudo_annotations_are_named(tmp_path, entry, match):
    ann, img = write_dataset(tmp_path)
    pseudo = write_pseudo(tmp_path / "p.json", [entry])
    with pytest.raises(AnnotationError, match=match):
        CocoDetection(ann, img, vocabulary=split_vocab(tmp_path), pseudo_annotations=pseudo)


def test_random_size_crop_draws_its_sides_in_range_and_moves_boxes():
    # DETR's RandomSizeCrop: width in [min, min(W, max)], height in [min, min(H, max)], boxes shifted by the
    # crop's corner and clipped to it; an image side under min_size is kept whole.
    from torchvision import tv_tensors

    from ovclip.transforms import RandomSizeCrop
    crop = RandomSizeCrop(30, 50)
    image = tv_tensors.Image(torch.arange(3 * 40 * 90, dtype=torch.float32).reshape(3, 40, 90))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0, 90, 40], [10, 5, 20, 15]]), format="XYXY",
                                     canvas_size=(40, 90))
    torch.manual_seed(0)
    sides = set()
    for _ in range(200):
        out, b = crop(image, boxes)
        h, w = out.shape[-2:]
        assert 30 <= w <= 50 and 30 <= h <= 40
        sides.add((h, w))
        # the crop's top-left pixel is the image's (top, left): recover the corner from it
        top, left = divmod(int(out[0, 0, 0]), 90)
        assert torch.equal(out, image[:, top:top + h, left:left + w])
        assert torch.equal(b[0], torch.tensor([0.0, 0, w, h]))  # the whole-image box: the crop itself
        expected = (torch.tensor([10.0, 5, 20, 15]) - torch.tensor([left, top, left, top])).clamp(min=0)
        assert torch.equal(b[1], torch.minimum(expected, torch.tensor([w, h, w, h], dtype=torch.float32)))
    assert len({w for _, w in sides}) > 10 and len({h for h, _ in sides}) > 5
    small = tv_tensors.Image(torch.zeros(3, 20, 25))
    assert crop(small).shape[-2:] == (20, 25)
    with pytest.raises(ValueError, match="min_size <= max_size"):
        RandomSizeCrop(60, 50)


def test_pipeline_steps_nest_and_ovdetrs_augmentation_runs(tmp_path):
    # A step's `transforms` are steps too (RandomApply, RandomChoice, Compose); errors name the inner step.
    # OV-DETR's OV-COCO training pipeline (Deformable DETR's augmentation) runs on a dataset's samples.
    from ovd.engine import load_config
    ann, img = write_dataset(tmp_path, size=(120, 160))
    pipeline = load_config("configs/ovdetr/ovdetr_r50_ov-coco.py").train_dataloader.dataset.pipeline
    assert pipeline[1]["type"] == "RandomApply" and pipeline[1]["transforms"][1]["type"] == "RandomSizeCrop"
    ds = CocoDetection(ann, img, pipeline=pipeline)
    torch.manual_seed(0)
    shapes = set()
    for _ in range(20):
        sample = ds[0]
        h, w = sample["inputs"].shape[-2:]
        shapes.add((h, w))
        boxes = sample["data_samples"]["boxes"]
        assert (boxes[:, 2:] <= torch.tensor([w, h])).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    assert (120, 160) in shapes and any(384 <= h <= 600 and 384 <= w <= 600 for h, w in shapes)
    with pytest.raises(PipelineError, match=r"pipeline\[0\]\.transforms\[1\]: 'RandomSizeCrops' is not"):
        CocoDetection(ann, img, pipeline=[dict(type="RandomApply", transforms=[
            dict(type="RandomShortestSize", min_size=[40]), dict(type="RandomSizeCrops", min_size=3, max_size=5)])])
    with pytest.raises(PipelineError, match=r"pipeline\[0\] \(RandomApply\): 'transforms' must be a list"):
        CocoDetection(ann, img, pipeline=[dict(type="RandomApply", transforms=dict(type="RandomHorizontalFlip"))])


def test_filter_empty_replaces_a_sample_the_pipeline_emptied(tmp_path):
    # A centre crop of the 40 x 60 images keeps x 25-35, y 15-25: image 1's box (in its corner) is cut away,
    # image 2's (in the centre) stays. With filter_empty the next image is served instead, as DETR's datasets.
    ann, img = write_dataset(tmp_path, images=2, annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [26, 16, 8, 8], "iscrowd": 0}])
    crop = [dict(type="CenterCrop", size=10)]
    kept = CocoDetection(ann, img, pipeline=crop)[0]
    assert kept["data_samples"]["image_id"] == 1 and len(kept["data_samples"]["labels"]) == 0
    ds = CocoDetection(ann, img, pipeline=crop, filter_empty=True)
    s = ds[0]["data_samples"]
    assert s["image_id"] == 2 and torch.equal(s["boxes"], torch.tensor([[1.0, 1, 9, 9]]))
    assert ds.stats["emptied_by_pipeline"] == 1
    assert ds[1]["data_samples"]["image_id"] == 2 and ds.stats["emptied_by_pipeline"] == 1
