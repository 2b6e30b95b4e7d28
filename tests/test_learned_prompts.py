"""DetPro's learned prompts: the context, the proposal labels, the losses, the saved text source."""
import math

import pytest
import torch
import torch.nn.functional as F

from ovclip.classifier import OpenVocabularyClassifier, VocabularyEmbeddings
from ovclip.learned_prompts import (
    LearnedPrompts,
    PromptContext,
    assign_proposals,
    bin_masks,
    class_weights,
    detpro_loss,
    sample_weights,
    save_prompts,
)
from ovclip.teacher import load_teacher
from ovclip.text import text_embeddings
from ovclip.vocabulary import load_vocabulary


def test_gradients_reach_only_the_context(tiny_vit):
    context = PromptContext(tiny_vit, n_ctx=4, bins=2)
    emb = context(["cat", "traffic light"], bin=1)
    assert emb.shape == (2, tiny_vit.embed_dim) and torch.allclose(emb.norm(dim=-1), torch.ones(2))
    (emb[0] @ emb[1]).backward()
    assert context.ctx.grad[1].abs().sum() > 0 and context.ctx.grad[0].abs().sum() == 0  # bin 1 only
    assert all(p.grad is None for p in tiny_vit.model.parameters())
    assert [n for n, _ in context.named_parameters()] == ["ctx"] and list(context.state_dict()) == ["ctx"]


def test_zero_context_is_the_bare_class_name_and_a_template_context_is_that_template(tiny_vit):
    vocab = load_vocabulary("cat, sofa|couch")
    bare = PromptContext(tiny_vit, n_ctx=0).class_embeddings(vocab)
    assert torch.allclose(bare, text_embeddings(tiny_vit, vocab, ["{}."], cache_dir=False), atol=1e-5)
    # context vectors set to the token embeddings of "a photo of a" give the template "a photo of a {}."
    tokens = tiny_vit.tokenizer(["a photo of a"])[0]
    context = PromptContext(tiny_vit, n_ctx=4)
    with torch.no_grad():
        context.ctx[0] = tiny_vit.model.token_embedding(tokens[1:5])
    templated = text_embeddings(tiny_vit, vocab, ["a photo of a {}."], cache_dir=False)
    assert torch.allclose(context.class_embeddings(vocab), templated, atol=1e-5)
    assert not torch.allclose(PromptContext(tiny_vit, n_ctx=4).class_embeddings(vocab), templated, atol=1e-2)


def test_proposals_are_labelled_and_binned_by_iou_with_the_ground_truth():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # IoU 1 with class 3
                          [0.0, 0.0, 10.0, 5.5],    # 0.55
                          [20.0, 20.0, 30.0, 28.5],  # 0.85 with class 1
                          [0.0, 0.0, 10.0, 3.0],    # 0.30: background
                          [0.0, 0.0, 10.0, 0.5],    # 0.05: neither
                          [50.0, 50.0, 60.0, 60.0]])  # 0
    labels, ious = assign_proposals(boxes, gt, torch.tensor([3, 1]))
    assert labels[:4].tolist() == [3, 3, 1, 3]
    assert torch.allclose(ious, torch.tensor([1.0, 0.55, 0.85, 0.30, 0.05, 0.0]))
    fg, bg = bin_masks(ious)
    assert [m.nonzero().flatten().tolist() for m in fg] == [[1], [], [], [2], [0]]  # [0.9, 1.1) holds IoU 1
    assert bg.nonzero().flatten().tolist() == [3]
    none, iou0 = assign_proposals(boxes, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert (none == -1).all() and (iou0 == 0).all()


def test_class_weights_as_the_reference():
    labels = torch.tensor([0, 0, 0, 1, -1, -1, -1, -1])  # N = 8, K = 3 (class 2 absent)
    w = class_weights(labels, 3)
    assert torch.allclose(w, torch.tensor([8 / (3 * 3), 8 / (3 * 1), 0.0, 8 / (2 * 4)]))


def test_detpro_loss_by_hand():
    text = torch.eye(3)
    region = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    weights = torch.tensor([2.0, 1.0, 1.0, 0.5])
    t = 0.5
    labels = torch.tensor([0, -1])
    assert sample_weights(labels, weights).tolist() == [2.0, 0.5]
    loss = detpro_loss(region, labels, text, sample_weights(labels, weights), temperature=t)
    fg_logits, bg_logits = [2.0, 0.0, 0.0], [0.0, 1.2, 1.6]
    lse = lambda v: math.log(sum(math.exp(x) for x in v))  # noqa: E731
    fg = 2.0 * (lse(fg_logits) - fg_logits[0])
    bg = 0.5 * sum(lse(bg_logits) - x for x in bg_logits) / 3
    assert math.isclose(float(loss), (fg + bg) / (2.0 + 0.5), rel_tol=1e-5)


def test_background_loss_is_least_at_equal_similarities():
    text = F.normalize(torch.randn(4, 8), dim=-1)
    weights = torch.ones(1)
    bg = torch.tensor([-1])
    # a region equally similar to every class: its softmax is uniform, the cross-entropy to uniform is log K
    equal = F.normalize(torch.linalg.lstsq(text, torch.ones(4, 1)).solution.T, dim=-1)
    at_equal = detpro_loss(equal, bg, text, weights)
    assert math.isclose(float(at_equal), math.log(4), rel_tol=1e-4)
    for _ in range(5):
        other = F.normalize(torch.randn(1, 8), dim=-1)
        assert detpro_loss(other, bg, text, weights) > at_equal


def test_saved_prompts_embed_any_vocabulary_and_refuse_another_teacher(tiny_vit, tmp_path):
    context = PromptContext(tiny_vit, n_ctx=3, bins=2)
    path = tmp_path / "prompts.safetensors"
    save_prompts(context, path, {"iou_bins": [[0.5, 0.75], [0.75, 1.1]]})
    source = LearnedPrompts(path)
    assert source.info["n_ctx"] == 3 and source.info["iou_bins"] == [[0.5, 0.75], [0.75, 1.1]]
    text = VocabularyEmbeddings(tiny_vit, "cat, dog", dict(type="learned", file=str(path)))
    clf = OpenVocabularyClassifier(text, 0.01)
    text.set_vocabulary("hexagon, star|pentagram, circle")  # swapped after training
    vocab = text.vocabulary
    per_bin = [context.class_embeddings(vocab, b).detach() for b in range(2)]
    assert torch.allclose(clf.text_embeddings, F.normalize(per_bin[0] + per_bin[1], dim=-1), atol=1e-5)
    with pytest.raises(ValueError, match="learned on teacher"):
        LearnedPrompts(path)(load_teacher("tiny-rn"), vocab)
    with pytest.raises(FileNotFoundError, match="learned prompt file not found"):
        LearnedPrompts(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="is not a learned prompt file"):
        LearnedPrompts(tmp_path / "bad.safetensors")
