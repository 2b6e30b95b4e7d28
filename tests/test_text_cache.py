import json
import threading

import torch

import ovclip.text as text_module
import ovclip.text_cache as cache_module
from ovclip.prompts import get_templates
from ovclip.text import text_embeddings
from ovclip.text_cache import EmbeddingTable, SegmentStore


def _rows(keys, dim=8):
    """Rows that tell their key: a fixed function of the key's text."""
    return torch.stack([torch.full((dim,), float(sum(map(ord, k)))) for k in keys])


def _segments(folder):
    return sorted(p.stem for p in folder.glob("*.json"))


def test_table_appends_and_gathers_in_the_asked_order():
    table = EmbeddingTable()
    table.add(["a", "b"], _rows(["a", "b"]))
    table.add(["b", "c"], _rows(["x", "c"]))  # 'b' is there already: the first row stays
    assert table.missing(["c", "d", "d", "a"]) == ["d"]
    assert torch.equal(table.gather(["c", "a", "b", "a"]), _rows(["c", "a", "b", "a"]))
    assert len(table) == 3


def test_store_round_trip_and_merge(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "MAX_SEGMENTS", 3)
    store = SegmentStore(tmp_path / "c")
    assert store.lookup(["a"]) == ([], None)
    for i in range(3):
        store.append([f"k{i}", f"j{i}"], _rows([f"k{i}", f"j{i}"]))
    assert len(_segments(tmp_path / "c")) == 3
    store.append(["k3"], _rows(["k3"]))
    assert len(_segments(tmp_path / "c")) == 1, "past MAX_SEGMENTS the segments are merged into one"
    keys, rows = SegmentStore(tmp_path / "c").lookup(["k3", "j1", "zz", "k0"])
    assert sorted(keys) == ["j1", "k0", "k3"] and torch.equal(rows, _rows(keys))


def test_a_reader_with_a_stale_listing_still_finds_merged_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "MAX_SEGMENTS", 2)
    reader, writer = SegmentStore(tmp_path), SegmentStore(tmp_path)
    writer.append(["a"], _rows(["a"]))
    assert reader.lookup(["b"]) == ([], None)  # the reader has parsed the first segment's keys
    writer.append(["b"], _rows(["b"]))
    writer.append(["c"], _rows(["c"]))  # three segments: merged, the first one removed
    keys, rows = reader.lookup(["a", "b", "c"])
    assert sorted(keys) == ["a", "b", "c"] and torch.equal(rows, _rows(keys))


def test_a_known_segment_is_not_parsed_again(tmp_path, monkeypatch):
    SegmentStore(tmp_path).append(["a", "b"], _rows(["a", "b"]))
    store = SegmentStore(tmp_path)
    parsed = []
    real = json.loads
    monkeypatch.setattr(cache_module.json, "loads", lambda s: parsed.append(1) or real(s))
    for _ in range(3):
        assert store.lookup(["b"])[0] == ["b"]
    assert parsed == [1]


def test_concurrent_writers_lose_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "MAX_SEGMENTS", 4)  # many merges, racing each other and the appends
    errors = []

    def writer(w):
        try:
            store = SegmentStore(tmp_path)  # one per writer, as one per process
            for i in range(25):
                keys = [f"w{w}-{i}-{j}" for j in range(3)]
                store.append(keys, _rows(keys))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    wanted = [f"w{w}-{i}-{j}" for w in range(4) for i in range(25) for j in range(3)]
    keys, rows = SegmentStore(tmp_path).lookup(wanted)
    assert sorted(keys) == sorted(wanted) and torch.equal(rows, _rows(keys))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file is left"


def test_a_damaged_array_is_dropped_and_its_classes_encoded_again(tiny_vit, tmp_path, monkeypatch, caplog):
    text_embeddings(tiny_vit, "cat, dog", templates="single", cache_dir=tmp_path)
    (npy,) = (tmp_path / "text").rglob("*.npy")
    npy.write_bytes(npy.read_bytes()[:100])
    monkeypatch.setattr(text_module, "_MEMO", {})
    calls = []
    real = tiny_vit.encode_text
    monkeypatch.setattr(tiny_vit, "encode_text", lambda t, batch_size=256: calls.append(len(t)) or real(t, batch_size))
    text_embeddings(tiny_vit, "dog", templates="single", cache_dir=tmp_path)
    assert calls == [1] and "damaged text-embedding cache segment" in caplog.text
    assert len(list((tmp_path / "text").rglob("*.npy"))) == 1, "the damaged segment is removed, the new one kept"


def test_an_old_cache_file_is_imported(tiny_vit, tmp_path, monkeypatch):
    fresh = text_embeddings(tiny_vit, "cat, sofa|couch", templates="single", cache_dir=False)
    folder = text_module._cache_folder(tmp_path, tiny_vit, get_templates("single"))
    folder.parent.mkdir(parents=True)
    legacy = folder.parent / f"{folder.name}.pt"
    torch.save({"cat": fresh[0], "sofa|couch": fresh[1]}, legacy)  # ovclip <= 0.1: one dict per file
    monkeypatch.setattr(tiny_vit, "encode_text", None)  # any encoder call fails
    assert torch.equal(text_embeddings(tiny_vit, "sofa|couch, cat", templates="single", cache_dir=tmp_path),
                       fresh.flip(0))
    assert not legacy.exists() and len(_segments(folder)) == 1
