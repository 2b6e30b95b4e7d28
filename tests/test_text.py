import pytest
import torch

from ovclip.prompts import average_embeddings, format_prompts, get_templates
from ovclip.text import text_embeddings
from ovclip.vocabulary import load_vocabulary


def _count_calls(teacher, monkeypatch):
    calls = []
    real = teacher.encode_text

    def counting(texts, batch_size=256):
        calls.append(len(texts))
        return real(texts, batch_size)
    monkeypatch.setattr(teacher, "encode_text", counting)
    return calls


def test_matches_manual_prompt_ensemble(tiny_vit, tmp_path):
    out = text_embeddings(tiny_vit, "cat, sofa|couch", templates="vild", cache_dir=tmp_path)
    assert out.shape == (2, 32)
    temps = get_templates("vild")
    prompts = format_prompts(temps, "sofa") + format_prompts(temps, "couch")
    expected = average_embeddings(tiny_vit.encode_text(prompts), [len(prompts)])[0]
    assert torch.allclose(out[1], expected, atol=1e-6)
    assert torch.allclose(out.norm(dim=1), torch.ones(2))


def test_cache_hit_runs_no_encoder(tiny_vit, tmp_path, monkeypatch):
    calls = _count_calls(tiny_vit, monkeypatch)
    first = text_embeddings(tiny_vit, "cat, dog", templates="imagenet", cache_dir=tmp_path)
    assert calls == [160]
    again = text_embeddings(tiny_vit, "dog, cat", templates="imagenet", cache_dir=tmp_path)
    assert calls == [160], "a cache hit must not call the text encoder"
    assert torch.equal(again[0], first[1])
    text_embeddings(tiny_vit, "cat, dog, bird", templates="imagenet", cache_dir=tmp_path)
    assert calls == [160, 80], "only the new class is encoded"
    text_embeddings(tiny_vit, "cat", templates="single", cache_dir=tmp_path)
    assert calls[-1] == 1, "other templates are another cache entry"


def test_cache_keyed_by_teacher_weights(tiny_vit, tmp_path):
    from ovclip.teacher import load_teacher
    other = load_teacher({"config": "tiny-vit", "seed": 3})
    a = text_embeddings(tiny_vit, "cat", cache_dir=tmp_path)
    b = text_embeddings(other, "cat", cache_dir=tmp_path)
    assert not torch.allclose(a, b)


def test_corrupt_cache_is_rebuilt(tiny_vit, tmp_path, monkeypatch):
    text_embeddings(tiny_vit, "cat", templates="single", cache_dir=tmp_path)
    for f in (tmp_path / "text").iterdir():
        f.write_bytes(b"garbage")
    calls = _count_calls(tiny_vit, monkeypatch)
    text_embeddings(tiny_vit, "cat", templates="single", cache_dir=tmp_path)
    assert calls == [1]


def test_cache_disabled_and_default_location(tiny_vit, tmp_path, monkeypatch):
    calls = _count_calls(tiny_vit, monkeypatch)
    text_embeddings(tiny_vit, "cat", templates="single", cache_dir=False)
    text_embeddings(tiny_vit, "cat", templates="single", cache_dir=False)
    assert calls == [1, 1]
    text_embeddings(tiny_vit, load_vocabulary("cat"), templates="single")
    assert any((tmp_path / "ovclip-cache" / "text").iterdir())


def test_empty_vocabulary_is_an_error(tiny_vit):
    from ovclip.vocabulary import VocabularyError
    with pytest.raises(VocabularyError, match="empty"):
        text_embeddings(tiny_vit, " , ")
