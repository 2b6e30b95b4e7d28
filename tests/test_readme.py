import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    install, test = blocks[0].strip(), blocks[1].strip()
    assert install.startswith("pip install") and "pytest" in test
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci and test in ci


def test_readme_pictures_exist_and_stay_small():
    readme = (ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert "docs/demo_det.png" in pictures
    for picture in pictures:
        path = ROOT / picture
        assert path.is_file() and path.stat().st_size < 150_000, picture


def _readme_commands(tool: str) -> list[list[str]]:
    """The README's concrete `python tools/<tool>` command lines (not the CONFIG placeholders), split."""
    import shlex
    readme = (ROOT / "README.md").read_text()
    lines = [ln.split("  #")[0].strip() for ln in readme.splitlines() if ln.startswith(f"python tools/{tool} configs/")]
    return [shlex.split(ln)[1:] for ln in lines]


def test_every_config_the_readme_names_exists():
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"configs/[\w./-]+?\.py", readme))
    assert len(named) >= 8
    assert not [c for c in named if not (ROOT / c).is_file()]


# What stands in for weights that cannot be downloaded here: the tiny random teacher, no ImageNet weights,
# and a small input, so that the command's data, config and tool paths run as written.
TINY = ["--cfg-options", "model.teacher=tiny-rn", "model.backbone_weights=None", "model.backbone=resnet18",
        "model.templates=single", "model.detector.min_size=128", "model.detector.max_size=192",
        "model.distill.num_regions=16", "model.detector.box_batch_size_per_image=64",
        "model.detector.rpn_post_nms_top_n_test=100"]  # 100 regions through the box head, not 1000, at val / test
IN_PROCESS = [f"{loader}_dataloader.{key}" for loader in ("train", "val", "test") for key in
              ("num_workers=0", "persistent_workers=False")]  # no worker processes to start for 4 images


def test_readme_coco_sample_commands_train_and_test(tmp_path):
    import subprocess
    import sys
    from .conftest import shared_data
    shared_data("coco_tiny")
    train = next(c for c in _readme_commands("train.py") if any("coco_tiny" in a for a in c))
    test = next(c for c in _readme_commands("test.py") if any("coco_tiny" in a for a in c))
    work = next(a for a in train if a.startswith("work_dirs/"))

    def moved(cmd):
        return [str(tmp_path / a) if a.startswith(work) else a for a in cmd]
    # 4 images to train on, validate and test (the sample has 50): the commands' paths are what is checked
    r = subprocess.run([sys.executable, *moved(train), *TINY, "train_dataloader.dataset.max_images=4",
                        "val_dataloader.dataset.max_images=4", "log_level=WARNING", *IN_PROCESS[:4]],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, *moved(test), *TINY, "test_dataloader.dataset.max_images=4",
                        "log_level=WARNING", *IN_PROCESS[4:]], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / work / "metrics.json").read_text())["metrics"]
    assert {"det/AP50_novel", "det/AP50_base"} <= set(metrics), metrics


def test_readme_zero_shot_maskclip_command_runs(tmp_path):
    """The README's MaskCLIP zero-shot command (it once failed for a missing val_cfg), on the ADE20k sample."""
    import subprocess
    import sys
    from .conftest import shared_data
    root = shared_data("ade20k_sample")
    cmd = next(c for c in _readme_commands("test.py") if "maskclip/" in c[1])
    r = subprocess.run([sys.executable, *cmd, "--work-dir", str(tmp_path), "--cfg-options", "model.teacher=tiny-rn",
                        f"test_dataloader.dataset.dataset.data_root={root}",
                        "test_dataloader.dataset.dataset.data_prefix.img_path=images",
                        "test_dataloader.dataset.dataset.data_prefix.seg_map_path=annotations",
                        "model.inference.short_side=128", "model.inference.crop_size=96", "model.inference.stride=64",
                        "log_level=WARNING"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "seg/mIoU" in (tmp_path / "metrics.json").read_text()
