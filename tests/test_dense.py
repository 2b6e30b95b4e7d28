import math

import pytest
import torch
import torch.nn.functional as F

from ovclip.dense import DenseEmbeddings, classify_dense, dense_embeddings, dense_input_size
from ovclip.io import to_unit_float

from .conftest import random_image


def _input(teacher, image):
    size = dense_input_size(teacher, *image.shape[-2:])
    x = F.interpolate(to_unit_float(image)[None], size=size, mode="bilinear", align_corners=False, antialias=True)
    return teacher.normalize_pixels(x)


def test_vit_map_shape_and_alignment(tiny_vit):
    image = random_image(60, 80)
    d = dense_embeddings(tiny_vit, image)
    # short side 60 -> 32 (the teacher's input), long side 80 -> 42.7 -> 40: a 4x5 grid of 8-pixel patches.
    assert d.embeddings.shape == (32, 4, 5) and d.image_size == (60, 80)
    assert torch.allclose(d.embeddings.norm(dim=0), torch.ones(4, 5))
    assert d.upsample().shape == (32, 60, 80)
    assert dense_embeddings(tiny_vit, image, short_side=64).embeddings.shape == (32, 8, 11)


def test_vit_patch_matches_value_path(tiny_vit):
    image = random_image(32, 32, seed=3)
    d = dense_embeddings(tiny_vit, image)
    v = tiny_vit.visual
    with torch.no_grad():
        x = _input(tiny_vit, image)
        t = torch.cat([v.class_embedding.view(1, 1, -1), v.conv1(x).flatten(2).transpose(1, 2)], 1)
        t = v.ln_pre(t + v.positional_embedding)
        for blk in v.transformer.resblocks[:-1]:
            t = blk(t)
        last = v.transformer.resblocks[-1]
        # By hand for patch 5: value projection, output projection, residual, MLP, final norm, projection.
        c = t.shape[-1]
        tok = t[0, 1 + 5]
        value = F.linear(last.ln_1(tok), last.attn.in_proj_weight[2 * c:], last.attn.in_proj_bias[2 * c:])
        z = tok + last.attn.out_proj(value)
        z = z + last.mlp(last.ln_2(z))
        by_hand = F.normalize(v.ln_post(z) @ v.proj, dim=0)
        # MaskCLIP's modified last block: the key, too, goes through the attention's output projection.
        key = last.attn.out_proj(F.linear(last.ln_1(tok), last.attn.in_proj_weight[c:2 * c],
                                          last.attn.in_proj_bias[c:2 * c]))
        # Identity attention (each token attends only to itself) is the same value path for every patch.
        n = t.shape[1]
        mask = torch.full((n, n), -math.inf).fill_diagonal_(0.0)
        tokens = F.normalize(v.ln_post(last(t, attn_mask=mask))[0, 1:] @ v.proj, dim=-1)
    grid = d.embeddings.flatten(1).T
    assert torch.allclose(grid[5], by_hand, atol=1e-5)
    assert torch.allclose(grid, tokens, atol=1e-5)
    assert torch.allclose(d.keys.flatten(1).T[5], key, atol=1e-5)


def test_resnet_map_is_attnpool_value_and_output_as_convs(tiny_rn):
    image = random_image(64, 128, seed=4)
    d = dense_embeddings(tiny_rn, image)
    assert d.embeddings.shape == (32, 2, 4)
    v = tiny_rn.visual
    with torch.no_grad():
        f = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(_input(tiny_rn, image))))))
        pix = f[0, :, 1, 2]
        manual = v.attnpool.c_proj(v.attnpool.v_proj(pix))
    assert torch.allclose(d.embeddings[:, 1, 2], F.normalize(manual, dim=0), atol=1e-5)


def _toy_dense(text, pixels):
    emb = F.normalize(torch.stack(pixels, dim=1), dim=0).reshape(text.shape[1], 1, len(pixels))
    return DenseEmbeddings(emb, torch.eye(len(pixels)).reshape(len(pixels), 1, len(pixels)), (1, len(pixels)))


def test_prompt_denoising_removes_an_absent_class():
    text = torch.eye(3, 8)
    t0, t1 = text[0], text[1]
    # Five pixels clearly of class 0, one pixel where class 1 only narrowly wins.
    dense = _toy_dense(text, [t0] * 5 + [t0 + 1.05 * t1])
    plain = classify_dense(dense, text, logit_scale=10.0)
    assert plain.argmax(0).flatten().tolist() == [0, 0, 0, 0, 0, 1]
    denoised = classify_dense(dense, text, logit_scale=10.0, prompt_denoising=0.6)
    assert denoised.argmax(0).flatten().tolist() == [0] * 6
    assert (denoised[1:] == -100 * 10.0).all()  # MaskCLIP sets their cosine similarity to -100
    assert (denoised[0] > -10.0).all()


def _hand_dense():
    """Three pixels, 2-d embeddings (1, 0), (0.6, 0.8), (0, 1); keys (2 channels) [1, 1, 0] and [0, 1, 2]."""
    emb = torch.tensor([[1.0, 0.6, 0.0], [0.0, 0.8, 1.0]]).reshape(2, 1, 3)
    return DenseEmbeddings(emb, torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 2.0]]).reshape(2, 1, 3), (1, 3))


def test_key_smoothing_follows_maskclip_reference_formula():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = classify_dense(_hand_dense(), text, logit_scale=1.0, key_smoothing=0.6).flatten(1)
    # By hand, MaskCLIP's refine_output: probabilities = softmax(1 x cosine) per pixel
    e = math.e
    p0, p1, p2 = [e / (e + 1), 1 / (e + 1)], [1 / (1 + e ** 0.2), e ** 0.2 / (1 + e ** 0.2)], [1 / (e + 1), e / (e + 1)]
    # keys normalised per channel over the pixels: [1, 1, 0] / sqrt(2), [0, 1, 2] / sqrt(5); weights of
    # pixel 1: w10 = 1/2, w11 = 1/2 + 1/5, w12 = 2/5. Only pixel 1 (top probability 0.55 < 0.6) is smoothed.
    w = [0.5, 0.7, 0.4]
    smoothed = [w[0] * p0[c] + w[1] * p1[c] + w[2] * p2[c] for c in range(2)]
    assert out[:, 0].tolist() == pytest.approx(p0, abs=1e-6)
    assert out[:, 1].tolist() == pytest.approx(smoothed, abs=1e-6)
    assert out[:, 2].tolist() == pytest.approx(p2, abs=1e-6)
    # prompt denoising comes first: an absent third class (top probability 1 / (2 + e) < 0.5) is removed
    # before smoothing (its cosine set to -100), so the two others are smoothed as above and it scores ~0
    text3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    out3 = classify_dense(_hand_dense(), text3, logit_scale=1.0, key_smoothing=0.6, prompt_denoising=0.5).flatten(1)
    assert out3[2].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-40)
    assert out3[:2, 1].tolist() == pytest.approx(smoothed, abs=1e-6)
    assert torch.allclose(out3[:2, [0, 2]], out[:, [0, 2]], atol=1e-6)


def test_dense_real_teacher_classification_shape(tiny_vit):
    d = dense_embeddings(tiny_vit, random_image())
    logits = classify_dense(d, F.normalize(torch.randn(5, 32), dim=-1), key_smoothing=0.5, prompt_denoising=0.3)
    assert logits.shape == (5, 4, 5)
    assert torch.isfinite(logits).any(dim=0).all()
