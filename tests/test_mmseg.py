"""ovseg on mmsegmentation: the mmcv.ops stand-in, mmseg segmentors as text-classified students, the
segmentation benchmarks' builtin vocabularies."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ovclip.synthetic import make_world
from ovclip.vocabulary import builtin_vocabulary
from ovclip.classifier import base_mask_of
from ovseg.data import SegDataError, SegDataset
from ovseg.mmseg_compat import MissingOpError, import_mmseg, install, real_ops_available
from ovseg.models.common import normalize_batch
from ovseg.models.maskclip_plus import training_targets

NORM = dict(type="BN", requires_grad=True)
# a small mmseg DeepLabV3-style segmentor: ResNetV1c-18 at 16 base channels, ASPP head, FCN auxiliary head
SEGMENTOR = dict(
    type="EncoderDecoder",
    backbone=dict(type="ResNetV1c", depth=18, stem_channels=16, base_channels=16, out_indices=(0, 1, 2, 3),
                  dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=NORM),
    decode_head=dict(type="ASPPHead", in_channels=128, in_index=3, channels=32, dilations=(1, 6), num_classes=150,
                     norm_cfg=NORM, dropout_ratio=0.0),
    auxiliary_head=dict(type="FCNHead", in_channels=64, in_index=2, channels=16, num_convs=1, num_classes=150,
                        norm_cfg=NORM, dropout_ratio=0.0, loss_decode=dict(type="CrossEntropyLoss", loss_weight=0.4)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("mmsegworld"), seed=5, n_train=4, n_val=2, size=64)


def _batch(world, n=2):
    ds = SegDataset(world["train_images"], world["train_labels"], "synthetic-shapes", img_suffix=".png",
                    zero_is_background=True)
    samples = [ds[i] for i in range(n)]
    return [s["inputs"] for s in samples], [s["data_samples"] for s in samples]


def test_stand_in_ops_serve_mmcv_point_sample_and_name_missing_ops():
    if real_ops_available():
        pytest.skip("mmcv's compiled ops are installed: the stand-in is not used")
    assert install() is True and install() is True  # idempotent
    from mmcv.ops import CrissCrossAttention, point_sample
    feature = torch.arange(16.0).view(1, 1, 4, 4)
    # point (0.5, 0.5) of [0, 1]^2 is the image centre: the mean of the 4 centre pixels 5, 6, 9, 10
    assert point_sample(feature, torch.tensor([[[0.5, 0.5]]])).item() == pytest.approx(7.5)
    points = torch.rand(1, 5, 2)
    assert torch.allclose(point_sample(feature, points),
                          F.grid_sample(feature, 2 * points[:, :, None] - 1, align_corners=False)[..., 0])
    with pytest.raises(MissingOpError, match="mmcv.ops.CrissCrossAttention needs mmcv's compiled extension"):
        CrissCrossAttention(8)
    assert "mmseg.models" in sys.modules or import_mmseg("models")


def test_mmseg_student_trains_predicts_and_swaps_vocabulary(world):
    from ovseg.models import MaskCLIPPlus
    torch.manual_seed(0)
    model = MaskCLIPPlus("tiny-rn", "synthetic-shapes", templates="single", segmentor=SEGMENTOR)
    heads = model.student.segmentor
    assert heads.decode_head.conv_seg.out_channels == model.teacher.embed_dim  # not the config's 150
    assert heads.auxiliary_head.conv_seg.out_channels == model.teacher.embed_dim
    inputs, samples = _batch(world)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 3e-3)
    totals = []
    for _ in range(8):
        losses = model(inputs, samples, mode="loss")
        assert set(losses) == {"loss_seg", "loss_aux"}
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(loss.item())
    assert sum(totals[-2:]) < 0.8 * sum(totals[:2])
    # the auxiliary loss: the same targets (base ground truth), the auxiliary head's embeddings through the
    # same text classifier, times its loss weight 0.4
    losses = model.loss(inputs, samples)
    images = normalize_batch(inputs, *model.pixel_stats)
    _, [(aux, weight)] = model.embed(images, with_aux=True)
    target = training_targets(torch.stack([s["gt"] for s in samples]), None, base_mask_of(model.vocabulary))
    logits = F.interpolate(model.classifier(F.normalize(aux, dim=1), dim=1), size=(64, 64), mode="bilinear")
    assert weight == 0.4
    assert losses["loss_aux"].item() == pytest.approx(0.4 * F.cross_entropy(logits, target, ignore_index=255).item(),
                                                      rel=1e-5)
    model.eval()
    logits = model(inputs[:1], mode="tensor")[0]
    assert logits.shape == (12, 64, 64) and torch.isfinite(logits).all()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_vocabulary("star, circle")
    swapped = model(inputs[:1], mode="tensor")[0]
    assert swapped.shape == (2, 64, 64)
    # the same pixel embeddings, scored against two of the twelve text embeddings
    assert torch.allclose(swapped, logits[[3, 0]], atol=1e-4)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_teacher_trunk_is_an_mmseg_backbone(tiny_rn):
    from ovseg.models.mmseg_student import MMSegStudent, TeacherTrunkBackbone
    channels = [f.shape[1] for f in TeacherTrunkBackbone(tiny_rn)(torch.zeros(1, 3, 64, 64))]
    student = MMSegStudent(dict(backbone=dict(type="TeacherTrunk", out_indices=(0, 3)),
                                decode_head=dict(type="FCNHead", in_channels=channels[3], in_index=1, channels=8,
                                                 num_convs=1, num_classes=1, norm_cfg=NORM)), 24, tiny_rn)
    features = student.segmentor.extract_feat(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [16, 2]  # strides 4 and 32
    main, aux = student(torch.zeros(2, 3, 64, 64), with_aux=True)
    assert main.shape == (2, 24, 2, 2) and aux == []
    # a trainable copy: no weight shared with the teacher
    teacher = {p.data_ptr() for p in tiny_rn.model.parameters()}
    assert not teacher & {p.data_ptr() for p in student.parameters()}
    with pytest.raises(ValueError, match="segmentor type 'CascadeEncoderDecoder' is not supported"):
        MMSegStudent(dict(SEGMENTOR, type="CascadeEncoderDecoder"), 24, tiny_rn)
    with pytest.raises(ValueError, match="needs 'decode_head'"):
        MMSegStudent(dict(backbone=SEGMENTOR["backbone"]), 24, tiny_rn)


@pytest.mark.parametrize("name, mmseg_class, sizes", [
    ("zs-voc-20", "PascalVOCDataset", (15, 5)), ("zs-pascal-context-59", "PascalContextDataset59", (49, 10)),
    ("zs-coco-stuff-171", "COCOStuffDataset", (156, 15)), ("cityscapes-19", "CityscapesDataset", None)])
def test_segmentation_benchmark_vocabularies_follow_mmseg(name, mmseg_class, sizes):
    import_mmseg("datasets")
    import mmseg.datasets
    vocab = builtin_vocabulary(name)
    classes = [c for c in getattr(mmseg.datasets, mmseg_class).METAINFO["classes"] if c != "background"]
    # mmseg's label order, written as words ("pottedplant" -> "potted plant")
    assert [n.replace(" ", "") for n in vocab.names] == [c.replace(" ", "") for c in classes]
    if sizes is None:
        assert vocab.split is None
    else:
        assert (len(vocab.base), len(vocab.novel)) == sizes
    assert builtin_vocabulary(name.removeprefix("zs-")).split is None


def test_mask_proposal_segmenter_on_an_mmseg_backbone(world):
    from ovseg.models import MaskProposalSegmenter
    torch.manual_seed(0)
    model = MaskProposalSegmenter("tiny-rn", "synthetic-shapes", templates="single", num_queries=4, hidden_dim=16,
                                  decoder_layers=1, backbone=dict(SEGMENTOR["backbone"], out_indices=(3,)))
    assert model.pixel_stats[0] == (0.485, 0.456, 0.406)  # ImageNet statistics for a non-teacher backbone
    inputs, samples = _batch(world)
    losses = model(inputs, samples, mode="loss")
    assert set(losses) == {"loss_class", "loss_mask", "loss_dice", "loss_distill"}
    sum(losses.values()).backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    assert model(inputs[:1], mode="tensor")[0].shape == (12, 64, 64)


MMSEG_PIPELINE = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]


def test_synthetic_world_through_mmseg_equals_the_label_folder_dataset(world):
    from ovseg.mmseg_data import MMSegDataset
    for train_classes in ("all", "base"):
        ours = SegDataset(world["train_images"], world["train_labels"], "synthetic-shapes", img_suffix=".png",
                          zero_is_background=True, train_classes=train_classes)
        mm = MMSegDataset(dict(type="SyntheticShapesDataset", data_root=world["train_images"].rsplit("/", 1)[0],
                               data_prefix=dict(img_path="images", seg_map_path="labels"), pipeline=MMSEG_PIPELINE),
                          vocabulary="synthetic-shapes", train_classes=train_classes, zero_is_background=True)
        assert len(mm) == len(ours) == 4 and mm.metainfo["classes"] == ours.metainfo["classes"]
        for i in range(len(ours)):
            a, b = ours[i], mm[i]
            assert torch.equal(a["inputs"], b["inputs"])  # RGB, as read by ovseg
            assert torch.equal(a["data_samples"]["gt"], b["data_samples"]["gt"])
            assert a["data_samples"]["img_path"] == b["data_samples"]["img_path"]


def test_ade20k_sample_loads_through_mmseg(tmp_path):
    from .conftest import shared_data
    from ovseg.data import IGNORE
    from ovseg.mmseg_data import MMSegDataset
    root = Path(shared_data("ade20k_sample"))
    mm = MMSegDataset(dict(type="ADE20KDataset", data_root=str(root),
                           data_prefix=dict(img_path="images", seg_map_path="annotations"),
                           pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
                                     dict(type="PackSegInputs")]),
                      vocabulary="ade20k-150")
    ours = SegDataset(root / "images", root / "annotations", "ade20k-150", reduce_zero_label=True)
    assert len(mm) == len(ours) == 3
    for i in range(3):
        a, b = ours[i], mm[i]
        assert torch.equal(a["inputs"], b["inputs"])
        gt = b["data_samples"]["gt"]
        assert torch.equal(a["data_samples"]["gt"], gt) and int(gt[gt != IGNORE].max()) < 150
    # the wrong class list for these labels: named in the error
    with pytest.raises(SegDataError, match="label value"):
        MMSegDataset(dict(type="SyntheticShapesDataset", data_root=str(root),
                          data_prefix=dict(img_path="images", seg_map_path="annotations"), img_suffix=".jpg",
                          pipeline=MMSEG_PIPELINE), zero_is_background=True)[0]


def test_deeplabv2_head_sums_its_dilated_branches(tiny_rn):
    from ovseg.models.mmseg_student import MMSegStudent
    student = MMSegStudent(dict(backbone=SEGMENTOR["backbone"],
                                decode_head=dict(type="DeepLabV2Head", in_channels=128, in_index=3, channels=8,
                                                 dilations=(1, 6, 12), norm_cfg=NORM, dropout_ratio=0.0)), 24, tiny_rn)
    head = student.segmentor.decode_head.eval()
    convs = [branch.conv for branch in head.aspp_modules]
    assert [(c.kernel_size, c.dilation, c.padding) for c in convs] == [((1, 1), (1, 1), (0, 0)), ((3, 3), (6, 6), (6, 6)),
                                                                      ((3, 3), (12, 12), (12, 12))]
    features = student.segmentor.extract_feat(torch.rand(1, 3, 64, 64))
    x = features[3]
    expected = head.conv_seg(sum(branch(x) for branch in head.aspp_modules))
    assert torch.allclose(head(features), expected) and expected.shape[1] == 24


def test_mmseg_student_training_killed_and_resumed_continues_with_the_same_state(world, tmp_path, monkeypatch):
    """tools/train.py on the synthetic MaskCLIP+ config (mmseg student), killed at iteration 3 with a
    checkpoint at 2, resumed: the optimizer state and the step count (self-training starts at 3) come back."""
    import os
    import signal
    import subprocess

    from mmengine.runner import Runner

    from ovclip.engine import load_config
    from ovclip.engine.checkpoint import load_checkpoint_file
    from tests.killing import write_killed_config
    root = Path(__file__).resolve().parents[1]
    config = root / "configs/maskclip_plus/maskclip-plus_teacher-rn_synthetic-cpu.py"
    options = {"train_dataloader.dataset.dataset.data_root": str(Path(world["train_images"]).parent),
               "test_dataloader.dataset.dataset.data_root": str(Path(world["val_images"]).parent),
               "train_dataloader.batch_size": 2, "param_scheduler": [], "model.pseudo_label.self_train_from": 3,
               "default_hooks.checkpoint.interval": 2, "log_level": "WARNING"}
    work = tmp_path / "killed"
    write_killed_config(tmp_path, config, 3)
    cmd = [sys.executable, "tools/train.py", str(tmp_path / "killed.py"), "--work-dir", str(work), "--cfg-options",
           "train_cfg.max_iters=50", *(f"{k}={v}" for k, v in options.items())]
    proc = subprocess.run(cmd, cwd=root, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True,
                          text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    saved = load_checkpoint_file(work / Path((work / "last_checkpoint").read_text().strip()).name)
    assert saved["meta"]["iter"] == 2 and int(saved["state_dict"]["steps"]) == 2
    monkeypatch.chdir(root)
    cfg = load_config(config, {**options, "train_cfg.max_iters": 4, "experiment_name": f"resumed-{tmp_path.name}"},
                      work_dir=str(work))
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    assert runner.iter == 2 and int(runner.model.steps) == 2 and not runner.model.self_training()
    state, ref = runner.optim_wrapper.state_dict()["state"], saved["optimizer"]["state"]
    assert state.keys() == ref.keys() and len(state) > 10
    assert all(torch.equal(state[k]["exp_avg"].cpu(), ref[k]["exp_avg"]) for k in ref)
    runner.train()
    assert runner.iter == 4 and int(runner.model.steps) == 4 and runner.model.self_training()
    assert "seg/hIoU" in runner.test()


def test_voc_through_mmseg_background_names_and_zero_shot_split(tmp_path):
    """PASCAL VOC's layout through the voc12_20 dataset config: background (0) is labelled as no class, mmseg's
    'pottedplant' is the vocabulary's 'potted plant', and base-only training ignores the novel classes."""
    import numpy as np
    from PIL import Image

    from mmengine.config import Config

    from ovseg.data import BACKGROUND, IGNORE
    from ovseg.mmseg_data import MMSegDataset
    root = Path(__file__).resolve().parents[1]
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / folder).mkdir(parents=True)
    Image.fromarray(np.full((4, 4, 3), 128, np.uint8)).save(tmp_path / "JPEGImages" / "a.jpg")
    label = np.array([[0, 1, 16, 255]] * 4, np.uint8)  # background, aeroplane, pottedplant, ignored
    Image.fromarray(label).save(tmp_path / "SegmentationClass" / "a.png")
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("a\n")
    cfg = Config.fromfile(root / "configs/_base_/datasets/voc12_20.py").train_dataloader.dataset.to_dict()
    vocab = builtin_vocabulary("zs-voc-20")
    plant = vocab.names.index("potted plant")
    for train_classes, expected in (("all", [BACKGROUND, 0, plant, IGNORE]), ("base", [BACKGROUND, 0, IGNORE, IGNORE])):
        ds = MMSegDataset(dict(cfg["dataset"], data_root=str(tmp_path), pipeline=MMSEG_PIPELINE),
                          vocabulary=cfg["vocabulary"], train_classes=train_classes,
                          zero_is_background=cfg["zero_is_background"])
        assert ds[0]["data_samples"]["gt"][0].tolist() == expected
    model_cfg = root / "configs/maskclip_plus/maskclip-plus_r101-d8_zs-voc12-20.py"
    from ovclip.engine import build_model
    model = build_model(model_cfg, cfg_options={"model.teacher": "tiny-rn"})
    assert (len(model.vocabulary.base), len(model.vocabulary.novel)) == (15, 5)
