"""The bench's numerics pins (ovclip/reproducibility.py)."""
import json
import os
import subprocess
import sys

import pytest

from ovclip import reproducibility
from ovclip.reproducibility import AVX2_KERNELS, has_avx2, pin_cpu_kernels


def test_has_avx2_reads_the_flags(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(reproducibility.platform, "machine", lambda: "x86_64")
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n")
    assert has_avx2(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx fma\n")  # avx, not avx2
    assert not has_avx2(cpuinfo)
    assert not has_avx2(tmp_path / "missing")  # cannot tell: pin nothing
    monkeypatch.setattr(reproducibility.platform, "machine", lambda: "aarch64")
    cpuinfo.write_text("flags\t\t: avx2\n")
    assert not has_avx2(cpuinfo)


def test_pin_refuses_once_torch_is_imported():
    import torch
    assert torch.__version__  # imported: the situation under test
    with pytest.raises(RuntimeError, match="before torch is imported"):
        pin_cpu_kernels(avx2=True)


def _pin_in_fresh_process(env_extra: dict, avx2: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in AVX2_KERNELS}
    code = ("import json, os; from ovclip.reproducibility import pin_cpu_kernels, numerics_record\n"
            f"pinned = pin_cpu_kernels(avx2={avx2})\n"
            "print(json.dumps({'pinned': pinned, 'record': numerics_record()}))")
    r = subprocess.run([sys.executable, "-c", code], env={**env, **env_extra, "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not has_avx2(), reason="the AVX2 pins apply to x86-64 CPUs with AVX2")
def test_pin_reaches_torch_and_keeps_what_the_user_set():
    out = _pin_in_fresh_process({}, avx2=True)
    assert out["pinned"] == AVX2_KERNELS
    record = out["record"]
    assert record["aten_cpu_capability"] == "AVX2" and record["threads"] == 1
    assert {k: record[k] for k in AVX2_KERNELS} == AVX2_KERNELS
    # a variable the user set is theirs: ATen's generic kernels stay generic
    out = _pin_in_fresh_process({"ATEN_CPU_CAPABILITY": "default"}, avx2=True)
    assert "ATEN_CPU_CAPABILITY" not in out["pinned"] and out["record"]["aten_cpu_capability"] == "DEFAULT"
    assert out["record"]["MKL_CBWR"] == "AVX2"


def test_no_pin_without_avx2(monkeypatch):
    for k in AVX2_KERNELS:
        monkeypatch.delenv(k, raising=False)
    assert pin_cpu_kernels(avx2=False) == {}  # nothing to pin: no error although torch is imported
    assert not any(k in os.environ for k in AVX2_KERNELS)
