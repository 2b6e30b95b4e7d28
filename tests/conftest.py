"""Test setup: offline, tiny models, a private cache, and a loud stop if torchvision is broken."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def pytest_configure(config):
    """Share the cores among the run's processes; stop the whole run at once when torchvision's compiled ops
    do not load with this torch."""
    share_cores()
    try:
        from torchvision.ops import nms, roi_align
        nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1.0]), 0.5)
        roi_align(torch.zeros(1, 1, 4, 4), [torch.tensor([[0.0, 0.0, 2.0, 2.0]])], 2)
    except Exception as e:  # the failure mode is an import-time or operator-lookup error
        pytest.exit(f"torchvision ops are broken ({e}). torch {torch.__version__} and this torchvision do not "
                    "match; reinstall with the README's command so pip picks a matching pair.", returncode=3)


def share_cores():
    """Under pytest-xdist (the README's `-n 2`), each worker and the tools it starts take their share of the
    cores instead of one thread per core each (what the user set in OMP_NUM_THREADS is kept)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = int(os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers))))
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OVCLIP_CACHE", str(tmp_path / "ovclip-cache"))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_vit():
    from ovclip.teacher import load_teacher
    return load_teacher("tiny-vit")


@pytest.fixture(scope="session")
def tiny_rn():
    from ovclip.teacher import load_teacher
    return load_teacher("tiny-rn")


def random_image(h: int = 60, w: int = 80, seed: int = 0) -> torch.Tensor:
    """A deterministic random uint8 (3, h, w) image."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def shared_data(*parts: str) -> str:
    """Path under ../shared/data, skipping the test when it is not there."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} not available")
    return path


def load_tool(name: str):
    """tools/<name>.py as a module (tools/ is not a package)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_config(cfg: dict, path) -> str:
    """A tool config file (Python assignments) holding `cfg`'s sections; returns its path."""
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in cfg.items()))
    return str(path)
