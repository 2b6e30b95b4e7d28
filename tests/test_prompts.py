import pytest
import torch

from ovclip.prompts import (IMAGENET_TEMPLATES, MASKCLIP_TEMPLATES, SINGLE_TEMPLATE, VILD_TEMPLATES,
                            average_embeddings, format_prompts, get_templates)


def test_template_set_sizes():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert len(VILD_TEMPLATES) == 63 and len(set(VILD_TEMPLATES)) == 63
    assert len(MASKCLIP_TEMPLATES) == 85 and len(set(MASKCLIP_TEMPLATES)) == 85
    assert get_templates("single") == SINGLE_TEMPLATE


def test_vild_articles_and_this_is():
    prompts = format_prompts(VILD_TEMPLATES, "apple")
    assert prompts[0] == "There is an apple in the scene."
    assert "This is a photo of an apple." in prompts
    assert "itap of my apple." in prompts
    assert format_prompts(SINGLE_TEMPLATE, "dog") == ["a photo of a dog."]


def test_bad_templates():
    with pytest.raises(ValueError, match="unknown template set"):
        get_templates("vld")
    with pytest.raises(ValueError, match="must contain"):
        get_templates(["a photo"])
    with pytest.raises(ValueError, match="empty"):
        get_templates([])


def test_average_embeddings_normalise_mean_renormalise():
    rows = torch.tensor([[3.0, 0.0], [0.0, 0.5], [0.0, 2.0]])
    out = average_embeddings(rows, [2, 1])
    # (1,0) and (0,1) after normalising: their mean (0.5, 0.5) renormalised.
    assert torch.allclose(out[0], torch.tensor([2 ** -0.5, 2 ** -0.5]))
    assert torch.allclose(out[1], torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="add up"):
        average_embeddings(rows, [1, 1])
