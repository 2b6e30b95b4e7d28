"""The layout ../shared/DESIGN.md draws: data flows one way between the packages."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_after(statement: str) -> set[str]:
    """Top modules of ovclip / ovd / ovseg loaded by `statement` in a fresh interpreter."""
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.split('.')[0] in ('ovclip', 'ovd', 'ovseg')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.split())


CORE = ("ovclip.vocabulary", "ovclip.teacher", "ovclip.text", "ovclip.classifier", "ovclip.dense", "ovclip.regions",
        "ovclip.store", "ovclip.engine")


def test_the_teacher_core_and_engine_import_neither_the_synthetic_world_nor_the_tools_behind_them():
    loaded = imported_after("import " + ", ".join(CORE))
    assert set(CORE) <= loaded
    assert not {m for m in loaded if m.startswith("ovclip.synthetic")}, loaded
    assert "ovclip.precompute" not in loaded and not {m for m in loaded if m.split(".")[0] in ("ovd", "ovseg")}


def test_ovd_and_ovseg_are_independent():
    assert not {m for m in imported_after("import ovd.models, ovd.evaluation, ovd.api") if m.startswith("ovseg")}
    assert not {m for m in imported_after("import ovseg.models, ovseg.evaluation, ovseg.api") if m.startswith("ovd")}


def test_the_library_never_opens_the_repositorys_configs_or_model_zoo_by_its_place():
    for package in ("ovclip", "ovd", "ovseg"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            assert "parents[1]" not in text and "parent.parent" not in text, f"{path} looks for the repository"


def test_the_evaluators_load_without_the_models_and_open_clip():
    code = ("import sys; from ovd.evaluation import DetectionEvaluator, LvisEvaluator; "
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('open_clip', 'ovd', 'mmengine')))")
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split())
    assert "open_clip" not in loaded and "ovd.models" not in loaded and "ovd.api" not in loaded, loaded
    # the segmentation metric imports mmseg when it first computes (~2.5 s), not with its module
    code = ("import sys; from ovseg.evaluation import SegMetric; "
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('open_clip', 'mmseg', 'torchvision')))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    assert not loaded, loaded
