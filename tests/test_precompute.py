import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import ovclip.precompute as pre
from ovclip.cli import run_tool
from ovclip.coco import AnnotationError, load_coco_images
from ovclip.io import ImageReadError
from ovclip.store import FeatureStore

from .conftest import load_tool, random_image, write_config

ROOT = Path(__file__).resolve().parents[1]


def precompute_tool():
    return load_tool("precompute")


def make_dataset(root: Path, n: int = 6) -> dict:
    (root / "img").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        Image.fromarray(random_image(48, 64, seed=i).permute(1, 2, 0).numpy()).save(root / "img" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 64, "height": 48})
        anns.append({"id": 2 * i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 30]})
        anns.append({"id": 2 * i + 1, "image_id": i, "category_id": 1, "bbox": [30, 10, 25, 20]})
    anns.append({"id": 99, "image_id": 0, "category_id": 1, "bbox": [5, 5, 0, 10]})  # degenerate: dropped
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "thing"}]}))
    return {"teacher": {"spec": "tiny-vit", "device": "cpu"},
            "dataset": {"ann_file": str(root / "ann.json"), "img_dir": str(root / "img")},
            "store": {"shard_size": 1}}


def test_precompute_writes_every_image(tmp_path, caplog):
    cfg = make_dataset(tmp_path)
    stats = pre.run_precompute(cfg, str(tmp_path / "store"), progress=False)
    assert stats == {"images": 6, "skipped_done": 0, "bad_images": 0, "regions": 12, "damaged_shards": 0}
    assert "dropped 1 boxes with no area" in caplog.text
    store = FeatureStore(tmp_path / "store")
    boxes, emb = store[3]
    assert boxes.tolist() == [[4.0, 4.0, 24.0, 34.0], [30.0, 10.0, 55.0, 30.0]] and emb.shape == (2, 32)


def test_killed_job_resumes_without_redoing_finished_images(tmp_path, monkeypatch):
    cfg = make_dataset(tmp_path)
    out = tmp_path / "store"
    # A child process that is SIGKILLed (no cleanup at all) while embedding its fourth image.
    script = f"""
import json, os, signal
import ovclip.precompute as pre
real, n = pre.region_embeddings, [0]
def dying(*a, **k):
    n[0] += 1
    if n[0] == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
pre.region_embeddings = dying
pre.run_precompute(json.loads({json.dumps(json.dumps(cfg))}), {str(out)!r}, progress=False)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert len(FeatureStore(out)) == 3
    calls = []
    real = pre.region_embeddings
    monkeypatch.setattr(pre, "region_embeddings", lambda *a, **k: calls.append(1) or real(*a, **k))
    stats = pre.run_precompute(cfg, str(out), progress=False)
    assert (stats["images"], stats["skipped_done"], len(calls)) == (3, 3, 3)
    assert len(FeatureStore(out)) == 6


def test_ranks_split_the_images(tmp_path):
    cfg = make_dataset(tmp_path, n=5)
    out = str(tmp_path / "store")
    s0 = pre.run_precompute(cfg, out, rank=0, world_size=2, progress=False)
    s1 = pre.run_precompute(cfg, out, rank=1, world_size=2, progress=False)
    assert (s0["images"], s1["images"]) == (3, 2)
    assert sorted(FeatureStore(out).image_ids) == [str(i) for i in range(5)]


def test_torchrun_two_processes(tmp_path):
    cfg = make_dataset(tmp_path, n=4)
    cfg_file = write_config(cfg, tmp_path / "cfg.py")
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tools" / "precompute.py"), cfg_file, "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name[:4] for p in FeatureStore.shard_files(out)} == {"r000", "r001"}
    assert len(FeatureStore(out)) == 4
    assert json.loads((out / "index.json").read_text())["shards"]


def test_bad_images_skip_or_fail(tmp_path):
    cfg = make_dataset(tmp_path, n=3)
    (tmp_path / "img" / "1.png").write_bytes(b"this is not a png")
    (tmp_path / "img" / "2.png").unlink()
    stats = pre.run_precompute(cfg, str(tmp_path / "a"), progress=False)
    assert (stats["images"], stats["bad_images"]) == (1, 2)
    cfg["run"] = {"on_bad_image": "error"}
    with pytest.raises(ImageReadError, match="1.png"):
        pre.run_precompute(cfg, str(tmp_path / "b"), progress=False)


@pytest.mark.parametrize("key,match", [
    ("img_dir", r"dataset.img_dir: image folder not found: .*nowhere; fix the path .*--cfg-options dataset.img_dir="),
    ("ann_file", r"dataset.ann_file: annotation file not found: .*nowhere; fix the path"),
    ("proposals", r"dataset.proposals: proposals file not found: .*nowhere"),
])
def test_missing_inputs_are_errors_before_any_work(tmp_path, key, match):
    cfg = make_dataset(tmp_path, n=1)
    cfg["dataset"][key] = str(tmp_path / "nowhere")
    with pytest.raises(pre.ConfigError, match=match):
        pre.run_precompute(cfg, str(tmp_path / "s"), progress=False)
    assert not (tmp_path / "s").exists()


def test_every_image_unreadable_is_an_error(tmp_path, capsys, caplog, monkeypatch):
    cfg = make_dataset(tmp_path, n=3)
    for f in (tmp_path / "img").iterdir():
        f.write_bytes(b"not an image")
    monkeypatch.setattr(pre, "LISTED_BAD_IMAGES", 2)
    with pytest.raises(pre.PrecomputeError, match=r"none of the 3 images could be read.*0\.png.*check dataset.img_dir"):
        pre.run_precompute(cfg, str(tmp_path / "a"), progress=False)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skipped) == 2 and "further unreadable images are counted, not listed" in skipped[1]
    # the tool: one error line and a non-zero exit status, not an empty store and status 0
    cfg_file = write_config(cfg, tmp_path / "cfg.py")
    status = run_tool(precompute_tool().main, [cfg_file, "--out", str(tmp_path / "b"), "--no-progress"])
    assert status == 2
    assert "error: none of the 3 images could be read" in capsys.readouterr().err


def test_some_images_unreadable_store_the_rest_and_say_so(tmp_path, capsys):
    cfg = make_dataset(tmp_path, n=3)
    (tmp_path / "img" / "1.png").write_bytes(b"not an image")
    out = tmp_path / "store"
    status = run_tool(precompute_tool().main, [write_config(cfg, tmp_path / "cfg.py"), "--out", str(out),
                                               "--no-progress"])
    captured = capsys.readouterr()
    assert status == precompute_tool().SOME_IMAGES_FAILED == 3
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["complete"], summary["bad_images"], summary["store_images"]) == (False, 1, 2)
    assert "warning: 1 image could not be read" in captured.err
    assert sorted(FeatureStore(out).image_ids) == ["0", "2"]


@pytest.mark.parametrize("how", ["garbage", "half", "bitflip"])
def test_rerun_redoes_a_damaged_shard(tmp_path, caplog, how):
    cfg = make_dataset(tmp_path, n=6)
    cfg["store"] = {"shard_size": 2}
    clean, out = tmp_path / "clean", tmp_path / "store"
    pre.run_precompute(cfg, str(clean), progress=False)
    pre.run_precompute(cfg, str(out), progress=False)
    FeatureStore(out)  # the index, which now names a shard that is about to be damaged
    shard = FeatureStore.shard_files(out)[1]
    data = shard.read_bytes()
    damaged = {"garbage": b"\x07" * len(data), "half": data[: len(data) // 2],
               "bitflip": data[:-10] + bytes([data[-10] ^ 1]) + data[-9:]}[how]
    shard.write_bytes(damaged)
    stats = pre.run_precompute(cfg, str(out), progress=False)
    assert (stats["images"], stats["skipped_done"], stats["damaged_shards"]) == (2, 4, 1)
    assert f"shard {shard.name}" in caplog.text and "computed again" in caplog.text
    assert (out / "damaged" / shard.name).read_bytes() == damaged  # set aside, not deleted
    store, reference = FeatureStore(out), FeatureStore(clean)
    assert store.verify() == 3 and sorted(store.image_ids) == sorted(reference.image_ids)
    for image_id in reference.image_ids:
        assert all(torch.equal(a, b) for a, b in zip(store[image_id], reference[image_id])), image_id


def test_proposals_file(tmp_path):
    cfg = make_dataset(tmp_path, n=2)
    props = [{"image_id": 0, "bbox": [0, 0, 10, 10], "score": s} for s in (0.1, 0.9, 0.5)]
    (tmp_path / "props.json").write_text(json.dumps(props))
    cfg["dataset"].update(proposals=str(tmp_path / "props.json"), max_regions=2)
    stats = pre.run_precompute(cfg, str(tmp_path / "store"), progress=False)
    assert stats["regions"] == 2 and FeatureStore(tmp_path / "store")[1][0].shape == (0, 4)


@pytest.mark.parametrize("change,match", [
    ({"teacher": {"spec": "tiny-vit", "devcie": "cpu"}}, r"unknown key 'devcie' in config section 'teacher' \(did you mean 'device'\?\)"),
    ({"optimiser": {}}, "unknown key 'optimiser' in the config"),
    ({"teacher": {}}, "config needs teacher.spec"),
    ({"run": {"on_bad_image": "ignore"}}, "on_bad_image"),
])
def test_config_errors(tmp_path, change, match):
    cfg = {**make_dataset(tmp_path, n=1), **change}
    with pytest.raises(pre.ConfigError, match=match):
        pre.run_precompute(cfg, str(tmp_path / "s"), progress=False)


@pytest.mark.parametrize("content,match", [
    ("{oops", r"not valid JSON \(line 1"),
    ('{"annotations": []}', "missing or malformed field 'images'"),
    ('{"images": [{"id": 1}]}', r"images\[0\]: missing field 'file_name'"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 2, "bbox": [0, 0, 1, 1]}]}',
     r"annotations\[0\]: image_id 2 is not in 'images'"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "bbox": [0, 0, 1]}]}',
     r"annotations\[0\]: 'bbox' must be four numbers"),
])
def test_malformed_annotation_files(tmp_path, content, match):
    f = tmp_path / "ann.json"
    f.write_text(content)
    with pytest.raises(AnnotationError, match=match):
        load_coco_images(f, tmp_path)


def test_example_config_runs(tmp_path):
    proc = subprocess.run([sys.executable, "tools/precompute.py", "configs/precompute/example_tiny.py",
                           "--out", str(tmp_path / "ex"), "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["store_images"] == 4 and summary["regions"] > 0
    assert torch.is_tensor(FeatureStore(tmp_path / "ex")[1][1])


def test_shipped_precompute_config_follows_data_root(tmp_path):
    """configs/precompute/ov-coco_vit-b-32.py pointed at a COCO-layout folder by data_root alone."""
    make_dataset(tmp_path / "coco", n=2)
    (tmp_path / "coco" / "annotations").mkdir()
    (tmp_path / "coco" / "ann.json").rename(tmp_path / "coco" / "annotations" / "instances_train2017.json")
    (tmp_path / "coco" / "img").rename(tmp_path / "coco" / "train2017")
    tool = precompute_tool()
    out = tmp_path / "store"
    rc = tool.main([str(ROOT / "configs" / "precompute" / "ov-coco_vit-b-32.py"), "--out", str(out), "--no-progress",
                    "--cfg-options", f"data_root={tmp_path / 'coco'}", "teacher.spec=tiny-vit", "teacher.precision=fp32",
                    "teacher.device=cpu", "dataset.proposals=None"])
    assert rc == 0 and sorted(FeatureStore(out).image_ids) == ["0", "1"]
