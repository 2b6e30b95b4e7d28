import pytest
import torch

import ovclip.text as text_module
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
    files = [f for f in (tmp_path / "text").rglob("*") if f.is_file()]
    assert {f.suffix for f in files} == {".npy", ".json"}
    for f in files:
        f.write_bytes(b"garbage")
    monkeypatch.setattr(text_module, "_MEMO", {})  # a new process: only the damaged file is left
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


def test_progress_bar_counts_the_classes_that_miss_the_cache(tiny_vit, tmp_path, capsys, monkeypatch):
    # 80 templates, 64 prompts a batch: 2 classes are 3 encoder batches, so the bar shows
    text_embeddings(tiny_vit, "cat, dog", templates="imagenet", cache_dir=tmp_path, batch_size=64)
    err = capsys.readouterr().err
    assert "text embeddings" in err and "2/2" in err
    text_embeddings(tiny_vit, "cat, dog, bird, fish, cow", templates="imagenet", cache_dir=tmp_path, batch_size=64)
    err = capsys.readouterr().err
    assert "3/3" in err and "5/5" not in err, "the total is the classes that miss the cache"
    text_embeddings(tiny_vit, "cow, cat, dog", templates="imagenet", cache_dir=tmp_path, batch_size=64)
    assert capsys.readouterr().err == "", "a full cache hit shows nothing"
    text_embeddings(tiny_vit, "owl", templates="imagenet", cache_dir=tmp_path, batch_size=256)
    assert capsys.readouterr().err == "", "one encoder batch shows nothing"
    text_embeddings(tiny_vit, "ant, bee", templates="imagenet", cache_dir=tmp_path, batch_size=64, progress=False)
    monkeypatch.setenv("RANK", "1")
    text_embeddings(tiny_vit, "yak, gnu", templates="imagenet", cache_dir=tmp_path, batch_size=64)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    text_embeddings(tiny_vit, "elk, emu", templates="imagenet", cache_dir=tmp_path, batch_size=64)
    assert capsys.readouterr().err == "", "progress=False, a torchrun rank but the first, TQDM_DISABLE=1: no bar"


def test_batches_do_not_change_the_embeddings(tiny_vit):
    small = text_embeddings(tiny_vit, "cat, sofa|couch, dog", templates="imagenet", cache_dir=False, batch_size=7)
    large = text_embeddings(tiny_vit, "cat, sofa|couch, dog", templates="imagenet", cache_dir=False)
    assert torch.allclose(small, large, atol=1e-6)


def test_a_vocabulary_used_again_is_not_encoded_again_even_without_a_writable_cache(tiny_vit, tmp_path, monkeypatch,
                                                                                    caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    calls = _count_calls(tiny_vit, monkeypatch)
    first = text_embeddings(tiny_vit, "cat, dog", templates="single", cache_dir=not_a_folder)
    assert "could not write the text-embedding cache" in caplog.text, "the embeddings are kept, not lost"
    text_embeddings(tiny_vit, "bird", templates="single", cache_dir=not_a_folder)
    again = text_embeddings(tiny_vit, "dog, cat", templates="single", cache_dir=not_a_folder)
    assert calls == [2, 1] and torch.equal(again, first.flip(0))


def test_vocabulary_embeddings_encode_each_vocabulary_once(tiny_vit, monkeypatch):
    from ovclip.classifier import OpenVocabularyClassifier, VocabularyEmbeddings
    calls = _count_calls(tiny_vit, monkeypatch)
    text = VocabularyEmbeddings(tiny_vit, "cat, dog", "single")
    heads = [OpenVocabularyClassifier(text, 0.01) for _ in range(2)]  # as ViLD's text and image heads share one
    for vocabulary in ("cat, dog", "cat, dog", "bird", "cat, dog", "bird"):
        text.set_vocabulary(vocabulary)
        assert all(len(h.text_embeddings) == len(text.vocabulary) for h in heads)
    assert calls == [2, 1]
