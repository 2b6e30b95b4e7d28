import pytest
import torch

from ovclip.store import CorruptShardError, FeatureStore, StoreError, StoreWriter

META = {"embed_dim": 8, "teacher": "tiny", "scales": [1.0, 1.5]}


def _regions(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, generator=g) * 100, torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=1)


def test_roundtrip_and_empty_images(tmp_path):
    with StoreWriter(tmp_path, META, shard_size=2) as w:
        for i in range(5):
            w.add(i, *_regions(i, i))
    store = FeatureStore(tmp_path)
    assert len(store) == 5 and 3 in store and "3" in store and 9 not in store
    boxes, emb = store[4]
    exp_boxes, exp_emb = _regions(4, 4)
    assert torch.equal(boxes, exp_boxes) and emb.dtype == torch.float16
    assert torch.allclose(emb.float(), exp_emb, atol=1e-3)
    assert store[0][0].shape == (0, 4)
    assert len(FeatureStore.shard_files(tmp_path)) == 3
    assert store.verify() == 3
    with pytest.raises(KeyError, match="image 9 is not in feature store"):
        store[9]


def test_bytes_per_region_near_fp16_payload(tmp_path):
    with StoreWriter(tmp_path, {**META, "embed_dim": 512}, shard_size=64) as w:
        for i in range(64):
            w.add(i, torch.rand(300, 4), torch.randn(300, 512))
    size = sum(p.stat().st_size for p in FeatureStore.shard_files(tmp_path))
    assert size / (64 * 300) <= 1.1 * 1024


def test_two_writers_share_a_folder(tmp_path):
    a = StoreWriter(tmp_path, META, rank=0, shard_size=1)
    b = StoreWriter(tmp_path, META, rank=1, shard_size=1)
    for i in range(6):
        (a if i % 2 == 0 else b).add(f"img{i}", *_regions(2, i))
    a.close(); b.close()
    store = FeatureStore(tmp_path)
    assert sorted(store.image_ids) == [f"img{i}" for i in range(6)]
    assert {p.name[:4] for p in FeatureStore.shard_files(tmp_path)} == {"r000", "r001"}
    assert torch.equal(store["img3"][0], _regions(2, 3)[0])


def test_reopened_writer_skips_done_images_and_continues_numbering(tmp_path):
    with StoreWriter(tmp_path, META, shard_size=1) as w:
        w.add(1, *_regions(1, 1))
    w2 = StoreWriter(tmp_path, META, shard_size=1)
    assert 1 in w2 and 2 not in w2
    w2.add(2, *_regions(1, 2))
    w2.close()
    names = [p.name for p in FeatureStore.shard_files(tmp_path)]
    assert names == ["r000-000000.safetensors", "r000-000001.safetensors"]
    assert len(FeatureStore(tmp_path)) == 2


def test_settings_clash_is_refused(tmp_path):
    StoreWriter(tmp_path, META).close()
    with pytest.raises(StoreError, match="teacher: store has 'tiny', job has 'other'"):
        StoreWriter(tmp_path, {**META, "teacher": "other"})
    with pytest.raises(StoreError, match=r"expected \(3, 8\) embeddings"):
        StoreWriter(tmp_path, META).add(1, torch.zeros(3, 4), torch.zeros(3, 9))


def test_corrupt_shards_are_named(tmp_path):
    with StoreWriter(tmp_path, META, shard_size=2) as w:
        for i in range(4):
            w.add(i, *_regions(3, i))
    first, second = FeatureStore.shard_files(tmp_path)
    data = bytearray(second.read_bytes())
    data[-10] ^= 0xFF  # flip a bit inside the embeddings
    second.write_bytes(bytes(data))
    store = FeatureStore(tmp_path)
    store[0]  # the undamaged shard still reads
    with pytest.raises(CorruptShardError, match=second.name + ".*checksum.*rerun tools/precompute.py"):
        store[2]
    with pytest.raises(CorruptShardError, match=second.name):
        store.verify()
    first.write_bytes(first.read_bytes()[:40])  # truncated, as by a full disk
    (tmp_path / "index.json").unlink()
    with pytest.raises(CorruptShardError, match=first.name + ".*unreadable.*rerun tools/precompute.py"):
        FeatureStore(tmp_path)


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(tmp_path)


def _damage(path, how):
    data = path.read_bytes()
    if how == "garbage":
        path.write_bytes(b"\x07" * len(data))
    elif how == "half":
        path.write_bytes(data[: len(data) // 2])
    else:  # one flipped bit in the embeddings: the header still reads, only the checksum tells
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])


@pytest.mark.parametrize("how", ["garbage", "half", "bitflip"])
def test_reopened_writer_sets_a_damaged_shard_aside(tmp_path, caplog, how):
    with StoreWriter(tmp_path, META, shard_size=2) as w:
        for i in range(4):
            w.add(i, *_regions(3, i))
    _damage(FeatureStore.shard_files(tmp_path)[1], how)  # r000-000001: images 2 and 3
    w = StoreWriter(tmp_path, META, shard_size=2)
    assert [i in w for i in range(4)] == [True, True, False, False]
    assert w.damaged == ["r000-000001.safetensors"]
    assert "shard r000-000001.safetensors" in caplog.text and "computed again" in caplog.text
    assert [p.name for p in (tmp_path / "damaged").iterdir()] == ["r000-000001.safetensors"]
    w.add(2, *_regions(3, 2))
    w.add(3, *_regions(3, 3))
    w.close()
    # the name of the shard set aside is not reused, so a second damage would not overwrite the first
    names = [p.name for p in FeatureStore.shard_files(tmp_path)]
    assert names == ["r000-000000.safetensors", "r000-000002.safetensors"]
    store = FeatureStore(tmp_path)
    assert store.verify() == 2 and torch.equal(store[3][0], _regions(3, 3)[0])


def test_two_writers_find_the_same_damaged_shard(tmp_path, caplog):
    with StoreWriter(tmp_path, META, shard_size=2) as w:
        for i in range(2):
            w.add(i, *_regions(3, i))
    _damage(FeatureStore.shard_files(tmp_path)[0], "bitflip")
    a, b = StoreWriter(tmp_path, META, rank=0), StoreWriter(tmp_path, META, rank=1)
    assert 0 not in a  # rank 0 moves it away ...
    assert 1 not in b  # ... and rank 1, finding it gone, redoes its image too
    assert "another writer moved it away" in caplog.text
