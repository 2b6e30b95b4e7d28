"""OV-DETR and DETR-text (ovd.models.ovdetr) on Deformable DETR's parts (ovd.models.detr)."""
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.runner import Runner

from ovd.engine import load_checkpoint_file, load_config
from ovd.models.deformable import block_mask
from ovd.models.detr import FOCAL_ALPHA, focal_class_cost, match
from ovd.models.ovdetr import OVDETRDetector
from tests.killing import write_killed_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/ovdetr/ovdetr_r18_tiny_shapes-cpu.py"
SMALL = dict(backbone="resnet18", trainable_layers=5, fpn_channels=64, fpn_levels=2, min_size=96, max_size=96,
             transformer=dict(d_model=32, encoder_layers=1, decoder_layers=2, ffn_dim=64, heads=4, points=2,
                              num_queries=6, dropout=0.0), conditioning=dict(max_len=4))
IMAGES = [torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(1)),
          torch.rand(3, 80, 96, generator=torch.Generator().manual_seed(2))]
TARGETS = [{"boxes": torch.tensor([[10., 10, 50, 60], [60, 50, 90, 90]]), "labels": torch.tensor([0, 1])},
           {"boxes": torch.tensor([[5., 5, 40, 40]]), "labels": torch.tensor([1])}]


def model(conditional=True, seed=0, **options):
    torch.manual_seed(seed)
    return OVDETRDetector("tiny-vit", "circle, square, triangle, star", templates="single", conditional=conditional,
                          **{**SMALL, **options})


def test_matching_cost_and_assignment_on_hand_made_boxes():
    # the focal matching cost at p = 0.5: alpha 0.25^2 ln 2 - (1 - alpha) 0.5^2 ln 2
    p = torch.tensor([0.5, 0.9])
    expected = [FOCAL_ALPHA * 0.25 * math.log(2) - (1 - FOCAL_ALPHA) * 0.25 * math.log(2),
                FOCAL_ALPHA * 0.01 * -math.log(0.9) - (1 - FOCAL_ALPHA) * 0.81 * -math.log(0.1)]
    assert torch.allclose(focal_class_cost(p), torch.tensor(expected), atol=1e-6)
    pred = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]])  # cxcywh
    gt = torch.tensor([[0.71, 0.69, 0.2, 0.22], [0.2, 0.21, 0.1, 0.1]])
    weights = {"class": 3.0, "bbox": 5.0, "giou": 2.0}
    rows, cols = match(torch.zeros(3, 2), pred, gt, weights)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    # a confident class score outweighs a slightly better box: query 2 wins gt 0 when only it is sure
    pred[2] = torch.tensor([0.7, 0.7, 0.21, 0.21])
    cost = torch.zeros(3, 2)
    cost[:, 0] = focal_class_cost(torch.tensor([0.01, 0.01, 0.99]))
    rows, cols = match(cost, pred, gt, weights)
    assert dict(zip(cols.tolist(), rows.tolist()))[0] == 2
    assert [len(v) for v in match(torch.zeros(3, 0), pred, gt[:0], weights)] == [0, 0]


def test_block_mask_keeps_conditions_apart():
    mask = block_mask(2, 3)
    assert mask.shape == (6, 6) and (mask[:3, :3] == 0).all() and (mask[3:, 3:] == 0).all()
    assert torch.isinf(mask[:3, 3:]).all() and torch.isinf(mask[3:, :3]).all()


def test_conditional_batching_gives_the_scores_of_one_class_at_a_time():
    m = model().eval()
    m.eval_batch_classes = 4
    together = m(IMAGES, mode="predict")
    m.eval_batch_classes = 1
    apart = m(IMAGES, mode="predict")
    for a, b in zip(together, apart):
        assert torch.allclose(a["scores"], b["scores"], atol=1e-5) and torch.equal(a["labels"], b["labels"])
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
        assert a["boxes"][:, 2].max() <= 96.01 and len(a["scores"]) == 4 * 6  # every (query, class), 4 classes


@pytest.mark.parametrize("conditional", [True, False])
def test_the_loss_falls_on_synthetic_images(conditional):
    m = model(conditional).train()
    m.backbone.requires_grad_(False)  # a random ResNet-FPN under Adam shifts every feature at once
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=5)  # as the configs warm up
    totals = []
    for _ in range(15):
        losses = m(IMAGES, TARGETS, mode="loss")
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        warmup.step()
        totals.append(total.item())
    expected = {f"loss_{k}{s}" for k in ("ce", "bbox", "giou") for s in ("", "_0", "_enc")}  # last, aux, encoder
    assert expected | ({"loss_embed", "loss_embed_0"} if conditional else set()) == set(losses)
    assert totals[-1] < 0.8 * totals[0] and max(totals) <= totals[0] * 1.1, totals


def test_conditions_are_the_classes_present_padded_with_absent_ones():
    m = model(conditioning=dict(max_len=6, prob=1.0))
    classes, conditions, queries = m.sample_conditions([torch.tensor([1, 1]), torch.tensor([3])], "cpu")
    assert set(classes[:2].tolist()) == {1, 3} and len(classes) == 3 and len(set(classes.tolist())) == 3  # max_len - 3
    assert torch.allclose(conditions, m.classifier.text_embeddings[classes])  # prob 1: text only
    assert queries.shape == (3, 32)
    m = model(conditioning=dict(max_len=6, prob=1.0, classes="base"))  # a vocabulary without split: all base
    assert len(m.sample_conditions([torch.tensor([0])], "cpu")[0]) == 3


def test_a_vocabulary_swap_changes_no_weight():
    m = model().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.set_vocabulary("heart, moon, star, circle, ring, cross")
    out = m(IMAGES[:1], mode="predict")[0]
    assert out["labels"].max() <= 5 and len(out["scores"]) == 6 * 6
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_the_class_bank_conditions_on_teacher_image_embeddings(tmp_path):
    from ovd.data.class_bank import ClassBankError, build_class_bank
    m = model()
    shapes = ROOT / "examples/shapes"
    counts = build_class_bank(m.teacher, shapes / "annotations.json", shapes / "images",
                              str(shapes / "vocabulary.json"), tmp_path / "bank.safetensors", progress=False)
    assert sum(counts.values()) > 0
    m = model(conditioning=dict(max_len=4, prob=0.0, class_bank=str(tmp_path / "bank.safetensors")))
    m.set_vocabulary(str(shapes / "vocabulary.json"))
    bank = m.class_bank()
    present = sorted(bank)[0]
    classes, conditions, _ = m.sample_conditions([torch.tensor([present])], "cpu")
    assert any(torch.allclose(conditions[0], torch.nn.functional.normalize(e, dim=0), atol=1e-6)
               for e in bank[present])  # prob 0: an image embedding of that class
    names = m.vocabulary.names
    m.set_vocabulary(", ".join(["star"] + names[::-1]))  # another vocabulary: the bank follows it by name
    moved = m.class_bank()
    assert {m.vocabulary.names[i] for i in moved} == {names[i] for i in bank}
    assert all(torch.equal(moved[m.vocabulary.names.index(names[i])], bank[i]) for i in bank)
    with pytest.raises(ClassBankError, match="class bank not found"):
        model(conditioning=dict(class_bank=str(tmp_path / "none.safetensors"))).class_bank()


def test_the_class_bank_crops_as_the_teachers_preprocess_by_default(tmp_path):
    """As the reference's save_clip_features.py, preprocess(image.crop(bbox)): each box alone, its corners
    rounded (PIL's crop), made the teacher's input as its preprocess makes an image: CLIP's shorter side and
    centre square, bicubic; a squashing teacher's whole box, with its kernel; crop= chooses. Boxes whose top
    y or width is under 16 pixels are skipped, as the reference's bbox[1] / bbox[2]; skip="sides": a side."""
    import json
    from dataclasses import replace

    from PIL import Image
    from safetensors import safe_open

    from ovclip.regions import region_embeddings
    from ovd.data.class_bank import build_class_bank, teacher_crop
    from tests.conftest import random_image
    teacher, image = model().teacher, random_image(seed=5)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "a.png")
    # xywh; under the 16-pixel bound: ring's width (both rules), heart's top y (the reference's), cross's height
    boxes = {"star": [4.4, 16.5, 47.7, 20.2], "moon": [60.6, 18.0, 17.3, 40.0], "ring": [30, 40, 10, 10],
             "heart": [10, 2, 30, 40], "cross": [10, 30, 30, 8]}
    rounded = {"star": [4, 16, 52, 37], "moon": [61, 18, 78, 58]}  # xyxy, half to even: 16.5 -> 16, 77.9 -> 78
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 60}],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(boxes)],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": i + 1, "bbox": b, "area": b[2] * b[3],
                         "iscrowd": 0} for i, b in enumerate(boxes.values())]}))
    args = (tmp_path / "ann.json", tmp_path, list(boxes))
    squash = replace(teacher, resize_mode="squash", interpolation="bicubic")
    assert teacher_crop(teacher) == "centre" and teacher_crop(squash) == "resize"
    cases = {"default": (teacher, {}, "centre", "bicubic"), "resize": (teacher, {"crop": "resize"}, "resize", None),
             "squash": (squash, {}, "resize", "bicubic")}
    banks = {}
    for case, (t, kwargs, crop, interpolation) in cases.items():
        out = tmp_path / f"{case}.safetensors"
        assert build_class_bank(t, *args, out, progress=False, **kwargs) == {"star": 1, "moon": 1, "cross": 1}
        with safe_open(str(out), "pt") as f:
            assert f.metadata()["crop"] == crop
            assert f.metadata()["interpolation"] == (interpolation or "bilinear")
            banks[case] = {n: f.get_tensor(n)[0] for n in rounded}
        for name, box in rounded.items():
            expected = region_embeddings(teacher, image, [box], scales=(1.0,), crop=crop, interpolation=interpolation)
            assert torch.allclose(banks[case][name], expected.embeddings[0], atol=1e-6), (case, name)
    assert all((banks["default"][n] - banks["resize"][n]).abs().max() > 1e-3 for n in rounded)
    assert all((banks["squash"][n] - banks["resize"][n]).abs().max() > 1e-4 for n in rounded)  # the kernel
    assert build_class_bank(teacher, *args, tmp_path / "sides.safetensors", progress=False, skip="sides") == \
        {"star": 1, "moon": 1, "heart": 1}
    with pytest.raises(ValueError, match="crop must be one of"):
        build_class_bank(teacher, *args, tmp_path / "bad.safetensors", progress=False, crop="center")
    with pytest.raises(ValueError, match="skip must be one of"):
        build_class_bank(teacher, *args, tmp_path / "bad.safetensors", progress=False, skip="height")
    with pytest.raises(ValueError, match="pads its inputs"):
        build_class_bank(replace(teacher, resize_mode="longest"), *args, tmp_path / "x.safetensors")


def test_training_from_config_then_kill_and_resume_with_the_same_optimizer_state(tmp_path):
    work = tmp_path / "killed"
    write_killed_config(tmp_path, CONFIG, 9)
    cmd = [sys.executable, "tools/train.py", str(tmp_path / "killed.py"), "--work-dir", str(work), "--cfg-options",
           "train_cfg.max_iters=200", "default_hooks.checkpoint.interval=4", "log_level=WARNING"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    saved = load_checkpoint_file(work / Path((work / "last_checkpoint").read_text().strip()).name)
    assert saved["meta"]["iter"] == 8
    cfg = load_config(CONFIG, {"train_cfg.max_iters": 9, "log_level": "WARNING",
                               "experiment_name": f"resumed-{tmp_path.name}"}, work_dir=str(work))
    for key in ("train_dataloader", "test_dataloader"):
        ds = cfg[key].dataset
        ds.ann_file, ds.img_dir, ds.vocabulary = (str(ROOT / p) for p in (ds.ann_file, ds.img_dir, ds.vocabulary))
    cfg.test_evaluator.ann_file, cfg.test_evaluator.vocabulary = (str(ROOT / p) for p in (
        cfg.test_evaluator.ann_file, cfg.test_evaluator.vocabulary))
    cfg.model.vocabulary = str(ROOT / cfg.model.vocabulary)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    assert runner.iter == 8
    state, ref = runner.optim_wrapper.state_dict()["state"], saved["optimizer"]["state"]
    assert state.keys() == ref.keys() and len(state) > 10
    assert all(torch.equal(state[k]["exp_avg"].cpu(), ref[k]["exp_avg"]) for k in ref)
    runner.train()
    assert runner.iter == 9
    metrics = runner.test()
    assert "det/AP50_novel" in metrics
    # the trained checkpoint through the Python API and the demo tool, with another vocabulary
    from ovd import Detector
    checkpoint = work / "iter_9.pth"
    vocabulary = {"model.vocabulary": cfg.model.vocabulary}
    detector = Detector.from_config(CONFIG, checkpoint, cfg_options=vocabulary)
    image = next((ROOT / "examples/shapes/images").iterdir())
    found = detector.predict(image, "star, circle, heart")
    assert len(found) > 0 and set(found.names) <= {"star", "circle", "heart"}
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import demo as demo_tool
    finally:
        sys.path.pop(0)
    assert demo_tool.run_tool(demo_tool.main, [str(CONFIG), str(checkpoint), str(image), "--vocab", "star, circle",
                                               "--out-dir", str(tmp_path / "demo"), "--score-thr", "0",
                                               "--cfg-options", f"model.vocabulary={cfg.model.vocabulary}"]) == 0
    assert (tmp_path / "demo" / f"{image.stem}_det.png").is_file()


def test_export_refuses_it_with_the_reason(tmp_path):
    from ovclip.export import ExportError
    from ovd.export import export_detector
    with pytest.raises(ExportError, match="a loop whose length depends on the vocabulary's size"):
        export_detector(model(), tmp_path)
    with pytest.raises(ExportError, match="OVDETRDetector does not export to ONNX yet"):
        export_detector(model(conditional=False), tmp_path)


def test_deformable_sampling_is_bilinear_at_pixel_centres():
    from ovd.models.deformable import _deform_sample
    # one 2x2 level, values 1 2 / 3 4, one head of width 1; sample points given in [0, 1] image coordinates
    value = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    points = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.5, 0.5], [0.75, 0.75]])  # x, y
    locations = points.view(1, 4, 1, 1, 1, 2)
    out = _deform_sample(value, [(2, 2)], locations, torch.ones(1, 4, 1, 1, 1))
    # pixel centres give their value; the image centre averages the four (grid_sample, align_corners=False)
    assert torch.allclose(out.flatten(), torch.tensor([1.0, 2.0, 2.5, 4.0]))
    # two points weighted 0.25 / 0.75 by the attention
    two = torch.tensor([[0.25, 0.25], [0.75, 0.75]]).view(1, 1, 1, 1, 2, 2)
    out = _deform_sample(value, [(2, 2)], two, torch.tensor([0.25, 0.75]).view(1, 1, 1, 1, 2))
    assert torch.allclose(out.flatten(), torch.tensor([0.25 * 1 + 0.75 * 4]))


def test_schedule_slows_the_trunk_not_the_fpn():
    # OV-DETR's reference trains its ResNet (backbone.0), sampling offsets and reference points at 0.1x the
    # rate; its new layers in front of the trunk at the full rate: here the FPN (backbone.fpn) is new. The
    # synthetic config keeps the whole backbone at 0.1x, as its bench rows were trained (a named deviation).
    from mmengine.optim import build_optim_wrapper
    net = model()
    for config, fpn_mult in ((ROOT / "configs/ovdetr/ovdetr_r50_ov-coco.py", 1.0),
                             (ROOT / "configs/ovdetr/ovdetr_teacher-rn_synthetic-cpu.py", 0.1)):
        cfg = load_config(config)
        base = cfg.optim_wrapper.optimizer.lr
        rate = {id(p): g["lr"] / base for g in build_optim_wrapper(net, cfg.optim_wrapper).optimizer.param_groups
                for p in g["params"]}
        named = dict(net.named_parameters())
        for name, expected in (("backbone.body.layer1.0.conv1.weight", 0.1), ("backbone.fpn.inner_blocks.0.0.weight",
                               fpn_mult), ("input_proj.0.0.weight", 1.0)):
            assert rate[id(named[name])] == pytest.approx(expected), (config.name, name)
        offsets = [n for n in named if "sampling_offsets" in n]
        assert offsets and all(rate[id(named[n])] == pytest.approx(0.1) for n in offsets)


def test_multi_scale_training_sizes():
    # min_size as several shorter sides (Deformable DETR's multi-scale resize): training draws one per image,
    # evaluation resizes to the last; anything else is refused by name.
    net = model(min_size=[64, 80])
    assert net.transform.min_size == (64, 80)
    net.transform.train()
    torch.manual_seed(0)
    sides = {min(net.transform(IMAGES[:1])[0].image_sizes[0]) for _ in range(20)}
    assert sides == {64, 80}
    net.transform.eval()
    assert min(net.transform(IMAGES[:1])[0].image_sizes[0]) == 80
    for bad in ([], [64, "80"], 0, True):
        with pytest.raises(ValueError, match="min_size must be a positive integer or a list"):
            model(min_size=bad)


def test_initialisation_and_encoder_loss_normaliser_as_the_reference():
    # yuhangzang/OV-DETR: feature_align Xavier with a zero bias; the two-stage class head (the model's
    # class_embed[num_layers] there) keeps PyTorch's default initialisation (|w| <= 1 / sqrt(fan_in)), not the
    # transformer's Xavier; the encoder's loss is divided by the decoder's box count, which with conditions
    # counts the boxes of the sampled classes alone.
    net = model()
    d, dim = net.feature_align[0].in_features, net.feature_align[0].out_features
    for align in net.feature_align:
        assert float(align.weight.abs().max()) <= math.sqrt(6 / (d + dim)) and not align.bias.any()
    enc_class = net.transformer.enc_class
    assert float(enc_class.weight.abs().max()) <= 1 / math.sqrt(enc_class.in_features)
    seen = []
    original = OVDETRDetector._proposal_loss

    def spy(self, enc, gts, num_boxes):
        seen.append(num_boxes)
        return original(self, enc, gts, num_boxes)
    one_condition = model(conditioning=dict(max_len=1))  # one of the two classes present is sampled
    one_condition._proposal_loss = spy.__get__(one_condition)
    torch.manual_seed(0)
    targets = [{"boxes": TARGETS[0]["boxes"], "labels": torch.tensor([0, 1])},
               {"boxes": TARGETS[1]["boxes"], "labels": torch.tensor([1])}]
    for _ in range(4):
        one_condition.loss(IMAGES, targets)
    assert set(seen) <= {1.0, 2.0} and seen  # class 0: one box; class 1: two boxes (of three)
    text = model(conditional=False)
    text._proposal_loss = spy.__get__(text)
    seen.clear()
    text.loss(IMAGES, targets)
    assert seen == [3.0]
