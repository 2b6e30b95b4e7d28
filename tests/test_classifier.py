"""The one open-vocabulary classifier and the one owner of teacher + vocabulary + text source."""
import math

import pytest
import torch
import torch.nn.functional as F

import ovclip.classifier as classifier_module
from ovclip.classifier import (
    OpenVocabularyClassifier,
    PromptTemplates,
    VocabularyEmbeddings,
    build_text_source,
)

from .conftest import random_image


def hand_classifier(background=True):
    """Classes (1, 0), (0, 1), (-1, 0); background (0, -1); temperature 0.5; the middle class novel."""
    text = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # normalised by the classifier
    clf = OpenVocabularyClassifier(text, 0.5, torch.tensor([0.0, -3.0]) if background else None,
                                   base_mask=torch.tensor([True, False, True]))
    return clf


def test_logits_by_hand_background_first():
    clf = hand_classifier()
    emb = torch.tensor([[0.6, 0.8]])
    expected = torch.tensor([[-0.8, 0.6, 0.8, -0.6]]) / 0.5
    assert torch.allclose(clf(emb), expected)
    assert torch.allclose(hand_classifier(background=False)(emb), expected[:, 1:])
    assert torch.allclose(clf(emb, classes=torch.tensor([2])), torch.tensor([[-0.8, -0.6]]) / 0.5)
    # a per-pixel map (B, D, h, w): the class axis replaces the embedding axis
    pixels = emb.T.reshape(1, 2, 1, 1).expand(1, 2, 3, 4)
    assert torch.allclose(clf(pixels, dim=1), expected.reshape(1, 4, 1, 1).expand(1, 4, 3, 4))


def test_training_columns():
    assert hand_classifier().training_columns("base").tolist() == [0, 1, 3]  # background, classes 0 and 2
    assert hand_classifier().training_columns("all").tolist() == [0, 1, 2, 3]
    assert hand_classifier(background=False).training_columns("base").tolist() == [0, 2]
    with pytest.raises(ValueError, match="gt_classes must be 'base' or 'all'"):
        hand_classifier().training_columns("novel")


def test_bad_text_embeddings_are_refused():
    clf = hand_classifier()
    with pytest.raises(ValueError, match=r"\(C>0, 2\)"):
        clf.set_text_embeddings(torch.randn(3, 5))
    with pytest.raises(ValueError, match="one entry per class"):
        clf.set_text_embeddings(torch.randn(3, 2), torch.tensor([True]))


class CountingTemplates(PromptTemplates):
    """Prompt templates that record which vocabularies were embedded."""

    def __init__(self):
        super().__init__("single")
        self.embedded = []

    def __call__(self, teacher, vocabulary):
        self.embedded.append(vocabulary.names)
        return super().__call__(teacher, vocabulary)


def test_vocabulary_is_embedded_lazily_once_and_shared(tiny_vit):
    source = CountingTemplates()
    text = VocabularyEmbeddings(tiny_vit, "synthetic-shapes", source)
    a, b = OpenVocabularyClassifier(text, 0.05), OpenVocabularyClassifier(text, 0.05, torch.randn(tiny_vit.embed_dim))
    assert source.embedded == []  # nothing embedded at build time
    text.set_vocabulary("cat, dog|puppy")  # switched before the first use: the first vocabulary never is
    assert source.embedded == []
    emb = F.normalize(torch.randn(4, tiny_vit.embed_dim), dim=-1)
    assert a(emb).shape == (4, 2) and b(emb).shape == (4, 3)
    assert source.embedded == [["cat", "dog"]]  # one text pass for both classifiers
    assert torch.allclose(a.text_embeddings, F.normalize(PromptTemplates("single")(tiny_vit, text.vocabulary), dim=-1))
    assert a.base_mask.tolist() == [True, True]  # no split: every class is base
    text.set_vocabulary("cat, dog|puppy")  # the same vocabulary: nothing to do
    a(emb)
    assert source.embedded == [["cat", "dog"]]
    text.set_vocabulary("ov-coco")
    assert a.num_classes == 65 and int(b.base_mask.sum()) == 48 and len(source.embedded) == 2
    assert "_text" not in a.state_dict() and list(b.state_dict()) == ["background"]


def test_text_sources_from_config_values():
    assert build_text_source("vild").templates == "vild"
    assert build_text_source(["a photo of a {}."]).templates == ["a photo of a {}."]
    assert build_text_source(dict(type="templates", templates="single")).templates == "single"
    counting = CountingTemplates()
    assert build_text_source(counting) is counting
    with pytest.raises(ValueError, match="dict\\(type='templates'"):
        build_text_source(dict(type="learnt", file="x"))
    with pytest.raises(TypeError, match="a text source is"):
        build_text_source(3)


def test_a_model_switched_before_its_first_forward_embeds_only_the_new_vocabulary(monkeypatch):
    from ovseg.models import MaskCLIP
    embedded = []
    original = classifier_module.text_embeddings
    monkeypatch.setattr(classifier_module, "text_embeddings",
                        lambda teacher, vocab, templates: embedded.append(vocab.names) or original(teacher, vocab, templates))
    model = MaskCLIP("tiny-rn", "synthetic-shapes", templates="single")
    model.set_vocabulary("star, circle")
    assert embedded == []
    assert model.logits(random_image(32, 32)).shape == (2, 32, 32)
    assert embedded == [["star", "circle"]]


def test_cosine_over_temperature_matches_the_reference_formula():
    """ViLD's classifier: logits_k = cos(e, t_k) / T with unit rows (background first)."""
    torch.manual_seed(3)
    text, bg, e = torch.randn(5, 8), torch.randn(8), F.normalize(torch.randn(2, 8), dim=-1)
    clf = OpenVocabularyClassifier(text, 0.01, bg)
    rows = [bg] + list(text)
    by_hand = torch.tensor([[float(x @ r) / float(r.norm()) / 0.01 for r in rows] for x in e])
    assert torch.allclose(clf(e), by_hand, atol=1e-3)
    assert math.isclose(float(clf.weights().norm(dim=-1).max()), 1.0, rel_tol=1e-6)


def test_a_vocabulary_first_used_under_inference_mode_still_trains(tiny_vit):
    text = VocabularyEmbeddings(tiny_vit, "cat, dog", "single")
    clf = OpenVocabularyClassifier(text, 0.05)  # no background: the text buffer itself is saved for backward
    with torch.inference_mode():
        clf(F.normalize(torch.randn(2, tiny_vit.embed_dim), dim=-1))
    emb = torch.randn(2, tiny_vit.embed_dim, requires_grad=True)
    F.cross_entropy(clf(F.normalize(emb, dim=-1)), torch.tensor([1, 0])).backward()
    assert emb.grad is not None
