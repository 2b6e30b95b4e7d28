"""ovseg: label data, MaskCLIP, MaskCLIP+ (targets, training, self-training), mask proposals, tools, ADE20k sample
(the metric: test_seg_metric.py)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovclip.dense import DenseEmbeddings, classify_dense, denoise_prompts
from ovclip.synthetic import make_world
from ovclip.vocabulary import builtin_vocabulary
from ovseg.data import BACKGROUND, IGNORE, SegDataError, SegDataset
from ovseg.evaluation import SegMetric
from ovseg.models import MaskCLIP, MaskCLIPPlus, training_targets
from ovseg.models.common import infer_logits, windows

from .conftest import shared_data

ROOT = Path(__file__).resolve().parents[1]
NORM = dict(type="BN", requires_grad=True)
TINY = dict(backbone="mobilenet_v3_small", backbone_norm="gn", output_stride=16, templates="single")
# MaskCLIP+'s small mmseg student: ResNetV1c-18 at a quarter of its width (stride 8), mmseg's FCN head
TINY_PLUS = dict(templates="single", segmentor=dict(
    type="EncoderDecoder",
    backbone=dict(type="ResNetV1c", depth=18, stem_channels=16, base_channels=16, out_indices=(3,),
                  dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=NORM),
    decode_head=dict(type="FCNHead", in_channels=128, in_index=0, channels=32, num_convs=1, num_classes=150,
                     norm_cfg=NORM, dropout_ratio=0.0)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("segworld"), seed=3, n_train=8, n_val=4, size=64)


def seg_dataset(world, split="train", **kw):
    return SegDataset(world[f"{split}_images"], world[f"{split}_labels"], "synthetic-shapes", img_suffix=".png",
                      zero_is_background=True, **kw)


# ---- mIoU ----

def test_synthetic_labels_load_and_base_training_drops_novel(world):
    full, base = seg_dataset(world, "train"), seg_dataset(world, "train", train_classes="base")
    vocab = builtin_vocabulary("synthetic-shapes")
    novel = set(vocab.novel)
    seen_novel = False
    for i in range(len(full)):
        raw = np.asarray(Image.open(full.samples[i][1])).astype(np.int64)
        gt = full[i]["data_samples"]["gt"].numpy()
        assert ((raw == 0) == (gt == BACKGROUND)).all()
        assert (gt[raw > 0] == raw[raw > 0] - 1).all()
        gb = base[i]["data_samples"]["gt"].numpy()
        seen_novel |= bool(np.isin(gt, list(novel)).any())
        assert not np.isin(gb, list(novel)).any()  # unseen labels never reach training
        assert (gb[np.isin(gt, vocab.base)] == gt[np.isin(gt, vocab.base)]).all()
    assert seen_novel


def test_pipeline_keeps_labels_in_step_and_pads_with_ignore(world):
    ds = seg_dataset(world, pipeline=[dict(type="RandomHorizontalFlip", p=1.0),
                                      dict(type="Pad", padding=[0, 0, 8, 0])])
    plain = seg_dataset(world)[0]
    s = ds[0]
    assert torch.equal(s["inputs"][:, :, :64], plain["inputs"].flip(-1))
    assert torch.equal(s["data_samples"]["gt"][:, :64], plain["data_samples"]["gt"].flip(-1))
    assert (s["data_samples"]["gt"][:, 64:] == IGNORE).all()


def _label_folder(tmp_path, label: np.ndarray, image_size=(20, 30), mode="L"):
    (tmp_path / "img").mkdir(parents=True)
    (tmp_path / "ann").mkdir()
    Image.fromarray(np.zeros((*image_size, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(label).convert(mode).save(tmp_path / "ann" / "a.png")
    return SegDataset(tmp_path / "img", tmp_path / "ann", "cat, dog", img_suffix=".png")


def test_bad_label_files_get_clear_errors(tmp_path):
    ds = _label_folder(tmp_path / "size", np.zeros((10, 30), np.uint8))
    with pytest.raises(SegDataError, match=r"a\.png is 30x10 but its image .*a\.png is 30x20"):
        ds[0]
    ds = _label_folder(tmp_path / "range", np.full((20, 30), 7, np.uint8))
    with pytest.raises(SegDataError, match=r"label values \[7\] outside the 2 classes"):
        ds[0]
    ds = _label_folder(tmp_path / "rgb", np.zeros((20, 30), np.uint8), mode="RGB")
    with pytest.raises(SegDataError, match="one channel"):
        ds[0]
    (tmp_path / "missing" / "img").mkdir(parents=True)
    (tmp_path / "missing" / "ann").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "missing" / "img" / "b.png")
    with pytest.raises(SegDataError, match=r"missing, e\.g\. .*b\.png"):
        SegDataset(tmp_path / "missing" / "img", tmp_path / "missing" / "ann", "cat", img_suffix=".png")
    with pytest.raises(SegDataError, match="img_dir is not a folder"):
        SegDataset(tmp_path / "nowhere", tmp_path / "missing" / "ann", "cat")


def test_ade20k_sample_loads_and_evaluates(tiny_rn):
    root = Path(shared_data("ade20k_sample"))
    ds = SegDataset(root / "images", root / "annotations", "ade20k-150", reduce_zero_label=True)
    assert len(ds) == 3
    model = MaskCLIP("tiny-rn", "ade20k-150", templates="single", inference=dict(mode="whole", short_side=64))
    metric = SegMetric("ade20k-150")
    for i in range(len(ds)):
        s = ds[i]
        gt = s["data_samples"]["gt"]
        raw = np.asarray(Image.open(ds.samples[i][1]))
        assert gt.shape == s["inputs"].shape[-2:] == raw.shape
        assert ((raw == 0) == (gt.numpy() == IGNORE)).all() and int(gt[gt != IGNORE].max()) < 150
        metric.process(None, model([s["inputs"]], [s["data_samples"]], mode="predict"))
    m = metric.compute_metrics(metric.results)
    assert 0 <= m["mIoU"] <= 100 and 0 <= m["aAcc"] <= 100


# ---- MaskCLIP ----

def test_prompt_denoising_removes_a_class_absent_from_the_image():
    text = torch.nn.functional.normalize(torch.eye(3, 8), dim=-1)
    emb = torch.zeros(8, 4, 4)
    emb[:, :, :2] = text[0, :, None, None]
    emb[:, :, 2:] = text[1, :, None, None]
    dense = DenseEmbeddings(emb, torch.randn(6, 4, 4), (4, 4))
    plain = classify_dense(dense, text, logit_scale=10.0)
    assert torch.isfinite(plain).all()
    denoised = classify_dense(dense, text, logit_scale=10.0, prompt_denoising=0.5)
    assert (denoised[2] == -100 * 10.0).all() and (denoised[:2] > -100).all()  # MaskCLIP's cosine -100
    assert set(denoised.argmax(0).unique().tolist()) == {0, 1}
    # never every class: the most confident survives
    assert (denoise_prompts(torch.zeros(3, 2, 2), 0.9) == 0).flatten(1).all(1).sum() == 1


def test_maskclip_map_shape_and_sliding_windows(tiny_rn):
    img = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    whole = MaskCLIP("tiny-rn", "cat, dog, car", templates="single", prompt_denoising=0.4)
    logits = whole([img], mode="tensor")[0]
    assert logits.shape == (3, 50, 70)
    removed = [k for k in range(3) if (logits[k] <= -50 * whole.dense.logit_scale).all()]
    pred = whole([img], [{"gt": torch.zeros(50, 70)}], mode="predict")[0]["pred"]
    assert pred.shape == (50, 70) and not set(pred.unique().tolist()) & set(removed)
    slide = MaskCLIP("tiny-rn", "cat, dog, car", templates="single",
                     inference=dict(mode="slide", crop_size=32, stride=16, short_side=64))
    assert slide([img], mode="tensor")[0].shape == (3, 50, 70)
    assert windows(64, 89, 32, 16)[-1] == (32, 57, 64, 89)
    with pytest.raises(RuntimeError, match="nothing to train"):
        whole([img], [{}], mode="loss")
    with pytest.raises(ValueError, match="unknown key"):
        MaskCLIP("tiny-rn", "cat", inference=dict(mode="whole", crop=3))


def test_infer_logits_slide_averages_windows():
    img = torch.rand(3, 40, 40)
    fn = lambda x: x.mean(0, keepdim=True).repeat(2, 1, 1)  # noqa: E731 - a per-pixel model
    whole = infer_logits(fn, img)
    slide = infer_logits(fn, img, mode="slide", crop_size=16, stride=8)
    assert torch.allclose(whole, slide, atol=1e-6)


def test_maskclip_denoises_each_sliding_window_on_its_own(monkeypatch):
    """As MaskCLIP's decode head: a class absent from one window is removed there, even though another window
    holds it (denoising the averaged map would keep both classes everywhere)."""
    import ovseg.models.maskclip as maskclip
    model = MaskCLIP("tiny-rn", "cat, dog", templates="single", prompt_denoising=0.5, logit_scale=100.0,
                     inference=dict(mode="slide", crop_size=16, stride=16))
    text = model.dense.text_embeddings()

    def fake_dense(teacher, image, short_side=None):  # red pixels are cats, the others dogs
        emb = torch.where(image[0][None] > 0.5, text[0][:, None, None], text[1][:, None, None])
        return DenseEmbeddings(emb, torch.zeros(2, *image.shape[-2:]), tuple(image.shape[-2:]))
    monkeypatch.setattr(maskclip, "dense_embeddings", fake_dense)
    img = torch.zeros(3, 16, 32)
    img[0, :, :16] = 1.0  # cats on the left window, dogs on the right one
    scores = model.logits(img)
    assert scores[1, :, :16].max() <= -1e3 and scores[0, :, 16:].max() <= -1e3
    assert scores[0, :, :16].min() > -1e3 and scores[1, :, 16:].min() > -1e3
    model.dense.inference = maskclip.check_inference(dict(mode="whole"))  # both classes are in the image
    assert torch.isfinite(model.logits(img)).all()


# ---- MaskCLIP+ ----

def test_training_targets_never_leak_unseen_ground_truth():
    base = torch.tensor([True, True, False, False])  # classes 2 and 3 are novel
    gt = torch.tensor([[[0, 1, 3, 3, IGNORE, BACKGROUND]]])
    pseudo = torch.zeros(1, 4, 1, 6)
    pseudo[:, 2] = 1.0  # the teacher says novel class 2 everywhere; ground truth says novel class 3
    t = training_targets(gt, pseudo, base, "novel")
    assert t.tolist() == [[[0, 1, 2, 2, 2, IGNORE]]]
    assert not (t == 3).any()
    # without pseudo-labels, novel ground truth is dropped, not kept
    assert training_targets(gt, None, base).tolist() == [[[0, 1, IGNORE, IGNORE, IGNORE, IGNORE]]]
    # only an oracle, said explicitly, learns from novel ground truth
    assert training_targets(gt, None, base, gt_classes="all").tolist() == [[[0, 1, 3, 3, IGNORE, IGNORE]]]
    # pseudo-labels over all classes, kept only where their probability reaches the threshold
    pseudo[:, 0, :, 4], pseudo[:, 2, :, 4] = 0.5, 0.5
    t = training_targets(gt, pseudo, base, "all", threshold=0.9)
    assert t[0, 0, 4] == IGNORE and t[0, 0, 2] == 2


def test_maskclip_plus_teacher_pseudo_labels_choose_among_the_novel_classes_only():
    model = MaskCLIPPlus("tiny-rn", "synthetic-shapes", pseudo_label=dict(prompt_denoising=0.3), **TINY_PLUS)
    vocab = model.vocabulary
    teacher = model.pseudo_teacher
    assert teacher.classes == vocab.novel and teacher.text_embeddings().shape[0] == len(vocab.novel)
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    probs = teacher.probabilities(img)
    assert probs.shape == (len(vocab), 64, 64)
    assert probs[vocab.base].abs().max() == 0
    assert torch.allclose(probs[vocab.novel].sum(0), torch.ones(64, 64), atol=1e-5)
    # MaskCLIP over the novel classes alone, as MaskCLIP+'s code asks the teacher (clip_unlabeled_cats)
    alone = MaskCLIP("tiny-rn", vocab.subset(vocab.novel), templates="single", prompt_denoising=0.3)
    assert torch.allclose(probs[vocab.novel], alone.probabilities(img), atol=1e-5)
    model.set_vocabulary("star, circle|round")  # no split: nothing to restrict to
    assert model.pseudo_teacher.classes is None
    everything = MaskCLIPPlus("tiny-rn", "synthetic-shapes", pseudo_label=dict(classes="all"), **TINY_PLUS)
    assert everything.pseudo_teacher.classes is None


def _batch(world, n=4):
    ds = seg_dataset(world, train_classes="base")
    samples = [ds[i] for i in range(n)]
    return [s["inputs"] for s in samples], [s["data_samples"] for s in samples]


def test_maskclip_plus_training_lowers_the_loss_and_switches_to_self_training(world, monkeypatch):
    torch.manual_seed(0)
    model = MaskCLIPPlus("tiny-rn", "synthetic-shapes", pseudo_label=dict(self_train_from=12), **TINY_PLUS)
    inputs, samples = _batch(world)
    calls = []
    original = model.pseudo_teacher.probabilities
    monkeypatch.setattr(model.pseudo_teacher, "probabilities", lambda x: calls.append(1) or original(x))
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    losses = []
    for _ in range(12):
        loss = model(inputs, samples, mode="loss")["loss_seg"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    assert len(calls) == 12 * len(inputs) and int(model.steps) == 12
    assert model.self_training()
    model(inputs, samples, mode="loss")
    assert len(calls) == 12 * len(inputs)  # the teacher is no longer asked
    assert "steps" in model.state_dict() and not any(k.startswith("teacher") for k in model.state_dict())
    model.eval()
    out = model(inputs[:1], samples[:1], mode="predict")[0]
    assert out["pred"].shape == samples[0]["gt"].shape
    model.set_vocabulary("star, circle")
    assert int(model(inputs[:1], mode="predict")[0]["pred"].max()) <= 1


def test_maskclip_plus_bad_settings():
    with pytest.raises(ValueError, match="unknown key"):
        MaskCLIPPlus("tiny-rn", "synthetic-shapes", pseudo_label=dict(clases="novel"), **TINY_PLUS)
    with pytest.raises(ValueError, match="needs segmentor=dict"):
        MaskCLIPPlus("tiny-rn", "synthetic-shapes", templates="single")
    with pytest.raises(ValueError, match="needs a vocabulary with novel classes"):
        MaskCLIPPlus("tiny-rn", "cat, dog", pseudo_label=dict(), **TINY_PLUS)


def test_maskclip_plus_on_a_copy_of_the_teacher_tower_trains_the_copy_or_the_heads_alone():
    trunk = dict(TINY_PLUS["segmentor"], backbone=dict(type="TeacherTrunk", out_indices=(3,)),
                 decode_head=dict(TINY_PLUS["segmentor"]["decode_head"], in_channels=256))
    model = MaskCLIPPlus("tiny-rn", "synthetic-shapes", pseudo_label=None, templates="single", segmentor=trunk)
    assert model.pixel_stats == (tuple(model.teacher.mean), tuple(model.teacher.std))  # the teacher's pixels
    assert model.embed(torch.randn(2, 3, 64, 64)).shape == (2, model.teacher.embed_dim, 2, 2)  # stride 32
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    loss = model([img, img], [{"gt": torch.full((64, 64), 2)}] * 2, mode="loss")["loss_seg"]
    loss.backward()
    assert torch.isfinite(loss)
    # a trainable copy: the teacher itself stays untouched
    assert model.student.backbone.visual.layer1[0].conv1.weight.grad is not None
    assert model.teacher.visual.layer1[0].conv1.weight.grad is None
    frozen = MaskCLIPPlus("tiny-rn", "synthetic-shapes", pseudo_label=None, templates="single", segmentor=trunk,
                          freeze_backbone=True)
    assert not any(p.requires_grad for p in frozen.student.backbone.parameters())
    assert all(p.requires_grad for p in frozen.student.segmentor.decode_head.parameters())


# ---- tools ----

def _run(*args, cwd=ROOT):
    r = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def _world_options(world):
    return ["train_dataloader.dataset.dataset.data_root=" + str(Path(world["train_images"]).parent),
            "test_dataloader.dataset.dataset.data_root=" + str(Path(world["val_images"]).parent)]


def test_tools_train_test_demo_for_segmentation(world, tmp_path):
    cfg = "configs/maskclip_plus/maskclip-plus_teacher-rn_synthetic-cpu.py"
    opts = ["--cfg-options", *_world_options(world), "train_cfg.max_iters=3", "train_dataloader.batch_size=2",
            "default_hooks.checkpoint.interval=3", "param_scheduler=[]", "model.pseudo_label.self_train_from=2"]
    _run("tools/train.py", cfg, "--work-dir", str(tmp_path / "plus"), *opts)
    ckpt = tmp_path / "plus" / "iter_3.pth"
    assert ckpt.is_file()
    _run("tools/test.py", cfg, str(ckpt), "--work-dir", str(tmp_path / "plus"), "--out", str(tmp_path / "pred"), *opts)
    metrics = json.loads((tmp_path / "plus" / "metrics.json").read_text())["metrics"]
    assert {"seg/mIoU", "seg/mIoU_base", "seg/mIoU_novel", "seg/aAcc"} <= set(metrics)
    assert len(list((tmp_path / "pred").glob("*.png"))) == 4
    # MaskCLIP needs no checkpoint
    _run("tools/test.py", "configs/maskclip/maskclip_synthetic-cpu.py", "--work-dir", str(tmp_path / "mc"),
         "--cfg-options", *_world_options(world)[1:])
    assert "seg/mIoU_novel" in json.loads((tmp_path / "mc" / "metrics.json").read_text())["metrics"]
    image = Path(world["val_images"]) / "val_00000.png"
    out = _run("tools/demo.py", cfg, str(ckpt), str(image), "--vocab", "star, circle, heart", "--out-dir",
               str(tmp_path / "demo"))
    assert "val_00000.png" in out
    record = json.loads((tmp_path / "demo" / "val_00000.json").read_text())
    assert record["vocabulary"] == ["star", "circle", "heart"] and abs(sum(record["areas"].values()) - 1) < 1e-3
    assert Image.open(tmp_path / "demo" / "val_00000_seg.png").width > 64
    assert np.asarray(Image.open(tmp_path / "demo" / "val_00000_labels.png")).max() <= 2


def test_test_tool_wants_a_checkpoint_for_trained_models(world, tmp_path):
    cfg = "configs/maskclip_plus/maskclip-plus_teacher-rn_synthetic-cpu.py"
    r = subprocess.run([sys.executable, "tools/test.py", cfg, "--work-dir", str(tmp_path), "--cfg-options",
                        *_world_options(world)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "give the checkpoint" in r.stderr


# ---- mask proposals ----

def test_mask_embeddings_fill_outside_with_the_mean_colour(tiny_rn):
    from ovclip.regions import mask_embeddings
    img = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    masks = torch.zeros(3, 40, 40, dtype=torch.bool)
    masks[0, 5:20, 5:30] = True
    masks[1, 5:20, 5:30] = True
    masks[1, 10, 10] = False  # one pixel less: a different masked region, hence a different embedding
    r = mask_embeddings(tiny_rn, img, masks)
    assert r.valid.tolist() == [True, True, False] and r.boxes[0].tolist() == [5, 5, 30, 20]
    assert torch.allclose(r.embeddings[0].norm(), torch.tensor(1.0)) and r.embeddings[2].abs().sum() == 0
    assert not torch.allclose(r.embeddings[0], r.embeddings[1])
    # pixels outside the mask do not matter
    other = img.clone()
    other[:, 30:, :] = 0
    assert torch.allclose(mask_embeddings(tiny_rn, other, masks[:1]).embeddings, r.embeddings[:1], atol=1e-5)


def test_mask_proposal_segmenter_trains_and_predicts(world):
    from ovseg.models import MaskProposalSegmenter
    torch.manual_seed(0)
    model = MaskProposalSegmenter("tiny-rn", "synthetic-shapes", num_queries=6, hidden_dim=32, decoder_layers=1,
                                  **TINY)
    inputs, samples = _batch(world)
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    totals = []
    for _ in range(10):
        losses = model(inputs, samples, mode="loss")
        assert set(losses) == {"loss_class", "loss_mask", "loss_dice", "loss_distill"}
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(loss.item())
    assert np.mean(totals[-3:]) < 0.8 * np.mean(totals[:3])
    model.eval()
    logits = model(inputs[:1], mode="tensor")[0]
    assert logits.shape == (12, 64, 64) and torch.isfinite(logits).all()
    model.use_teacher = False
    pred = model(inputs[:1], samples[:1], mode="predict")[0]["pred"]
    assert pred.shape == (64, 64) and int(pred.max()) < 12
    with pytest.raises(ValueError, match="unknown key"):
        MaskProposalSegmenter("tiny-rn", "synthetic-shapes", ensemble=dict(bse=0.3), **TINY)


@pytest.mark.parametrize("config", ["configs/maskclip/maskclip_vit-b-16_ade20k-150.py",
                                    "configs/maskclip_plus/maskclip-plus_r101-d8_ade20k-150.py",
                                    "configs/maskclip_plus/maskclip-plus_segformer-mit-b0_ade20k-150.py",
                                    "configs/maskprop/maskprop_r50_ade20k-150.py"])
def test_ade20k_configs_build(config):
    from ovclip.engine import build_model, load_config
    cfg = load_config(ROOT / config)
    assert cfg.default_scope == "ovseg" and cfg.test_evaluator.vocabulary == "ade20k-150"
    assert cfg.test_dataloader.dataset.dataset.type == "ADE20KDataset"
    options = {"model.teacher": "tiny-rn"}
    if "backbone_weights" in cfg.model:
        options["model.backbone_weights"] = None
    model = build_model(ROOT / config, cfg_options=options)
    assert len(model.vocabulary) == 150
