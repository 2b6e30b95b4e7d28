"""DetPro's prompt training from config: data from a feature store, mmengine training, the prompt file."""
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from mmengine.runner import Runner

from ovclip.classifier import VocabularyEmbeddings
from ovclip.engine.runner import load_config
from ovclip.learned_prompts import LearnedPrompts, prompt_fit
from ovclip.store import StoreWriter
from ovd.bench import learn_prompts
from ovd.data import ProposalEmbeddings

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes"
CONFIG = ROOT / "configs" / "detpro" / "detpro_prompts_synthetic-cpu.py"
VOCAB = str(SHAPES / "vocabulary.json")  # circle, square base; triangle novel


def shifted(box, frac):
    """A box shifted right by `frac` of its width (xyxy)."""
    x0, y0, x1, y1 = box
    d = (x1 - x0) * frac
    return [x0 + d, y0, x1 + d, y1]


def make_store(root, dim=32, seed=0):
    """Per image: each box at 4 shifts (IoU 1, ~0.67, ~0.43, ~0.11) plus a far-away box, with
    embeddings near a per-class direction (background ones random)."""
    g = torch.Generator().manual_seed(seed)
    data = json.loads((SHAPES / "annotations.json").read_text())
    centre = F.normalize(torch.randn(4, dim, generator=g), dim=-1)
    with StoreWriter(root, {"boxes": "proposals", "embed_dim": dim}) as w:
        for img in data["images"]:
            boxes, emb = [], []
            for a in (a for a in data["annotations"] if a["image_id"] == img["id"]):
                x, y, bw, bh = a["bbox"]
                for frac in (0.0, 0.2, 0.4, 0.8):
                    boxes.append(shifted([x, y, x + bw, y + bh], frac))
                    near = centre[a["category_id"]] if frac < 0.4 else centre[0]
                    emb.append(F.normalize(near + 0.3 * torch.randn(dim, generator=g), dim=0))
            boxes.append([0.0, 0.0, 3.0, 3.0])
            emb.append(F.normalize(torch.randn(dim, generator=g), dim=0))
            w.add(img["id"], torch.tensor(boxes), torch.stack(emb))


def test_proposal_embeddings_label_and_weight_by_iou_bin(tmp_path):
    make_store(tmp_path / "store")
    ds = ProposalEmbeddings(str(SHAPES / "annotations.json"), str(SHAPES / "images"), str(tmp_path / "store"), VOCAB,
                            iou_bins=[[0.5, 0.9], [0.9, 1.1]], background_fraction=1.0)
    base_boxes = sum(1 for a in json.loads((SHAPES / "annotations.json").read_text())["annotations"]
                     if a["category_id"] in (1, 2))
    # per base box: IoU 1 (bin 1), 0.67 (bin 0), 0.43 and 0.11 (background); the far box and those around
    # the (unannotated) novel triangle overlap no base box: neither
    assert ds.counts == {"foreground": [base_boxes, base_boxes], "background": [2 * base_boxes, 2 * base_boxes]}
    item = ds[0]
    assert item["inputs"].shape == (32,) and item["data_samples"]["weights"].shape == (2,)
    assert set(ds.labels.tolist()) == {-1, 1}  # base indices: circle 0 (no box in the example), square 1
    # DetPro's class weights over a bin's N samples: each class present weighs N / K in all, the background N / 2
    for b in range(2):
        w, fg = ds.weights[:, b], ds.labels >= 0
        n = int((w > 0).sum())
        # K = 2 with one class present: the foreground and the background both weigh N / 2
        assert torch.isclose(w[fg].sum(), torch.tensor(n / 2)) and torch.isclose(w[~fg].sum(), torch.tensor(n / 2))


def test_prompts_train_from_config_and_embed_any_vocabulary(tmp_path, tiny_vit):
    make_store(tmp_path / "store")
    work = tmp_path / "work"
    cfg = load_config(CONFIG, {"model.teacher": "tiny-vit", "model.vocabulary": VOCAB, "model.n_ctx": 4,
                               "train_cfg.max_epochs": 12, "optim_wrapper.optimizer.lr": 0.5,
                               "param_scheduler": [], "default_hooks.logger.interval": 1,
                               "log_processor.window_size": 1, "train_dataloader.batch_size": 8,
                               "train_dataloader.dataset.ann_file": str(SHAPES / "annotations.json"),
                               "train_dataloader.dataset.img_dir": str(SHAPES / "images"),
                               "train_dataloader.dataset.feature_store": str(tmp_path / "store"),
                               "train_dataloader.dataset.vocabulary": VOCAB,
                               "train_dataloader.dataset.iou_bins": [[0.5, 0.9], [0.9, 1.1]],
                               "model.iou_bins": [[0.5, 0.9], [0.9, 1.1]],
                               "train_dataloader.dataset.background_fraction": 1.0}, work_dir=str(work))
    runner = Runner.from_cfg(cfg)
    model = runner.model
    data = next(iter(runner.train_dataloader))
    before = sum(v.item() for v in model(data["inputs"], data["data_samples"], mode="loss").values())
    ctx0 = model.context.ctx.detach().clone()
    runner.train()
    after = sum(v.item() for v in model(data["inputs"], data["data_samples"], mode="loss").values())
    assert after < 0.9 * before, (before, after)
    assert not torch.equal(ctx0, model.context.ctx)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in tiny_vit.model.parameters())
    assert list(model.state_dict()) == ["context.ctx"]  # the teacher is not saved
    prompts = LearnedPrompts(work / "prompts.safetensors")
    assert torch.equal(prompts.ctx, model.context.ctx.detach().cpu())
    assert prompts.info["iou_bins"] == [[0.5, 0.9], [0.9, 1.1]] and prompts.info["n_ctx"] == 4
    text = VocabularyEmbeddings(tiny_vit, "hexagon, star, circle",
                                dict(type="learned", file=str(work / "prompts.safetensors")))
    assert text.embeddings().shape == (3, 32)


def test_prompt_fit_by_hand():
    regions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # the third one background
    labels, weights = torch.tensor([0, 0, -1]), torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 1.0]])
    bin0, bin1 = torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss, top1 = prompt_fit(regions, labels, weights, [bin0, bin1], temperature=1.0)
    # bin 0: cross-entropies log(1 + e^-1), log(1 + e) and, for the background's equal logits, log 2 (weight 2);
    # bin 1: equal logits everywhere it trains (weights 0, 1, 1): log 2
    expected = (math.log(2 + math.e + 1 / math.e) + 2 * math.log(2)) / 4 + math.log(2)
    assert math.isclose(loss, expected, rel_tol=1e-6)
    # the bins' ensemble: class 0 along x, class 1 along the diagonal; the second region (label 0) goes to class 1
    assert top1 == 0.5


def test_learn_prompts_takes_config_options(tmp_path):
    make_store(tmp_path / "store")
    work = tmp_path / "prompts"
    file = learn_prompts(ROOT / "configs", {"train_base": str(SHAPES / "annotations.json"),
                                            "train_images": str(SHAPES / "images")}, "tiny-vit",
                         {"train_dataloader.dataset.feature_store": str(tmp_path / "store")}, work, seed=0, options={
                             "model.vocabulary": VOCAB, "train_dataloader.dataset.vocabulary": VOCAB, "model.n_ctx": 2,
                             "train_cfg.max_epochs": 2, "param_scheduler": [], "train_dataloader.batch_size": 64,
                             "train_dataloader.dataset.iou_bins": [[0.5, 1.1]], "model.iou_bins": [[0.5, 1.1]]})
    assert file == work / "prompts.safetensors" and LearnedPrompts(file).info["n_ctx"] == 2
    assert (work / "epoch_2.pth").is_file() and not (work / "epoch_3.pth").exists()  # 2 epochs, not the config's 6
