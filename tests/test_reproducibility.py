"""What the bench records of its numerics (ovclip/synthetic/bench.py)."""
import torch

from ovclip.synthetic.bench import KERNEL_VARIABLES, numerics_record


def test_the_record_says_threads_kernels_and_what_the_user_set(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    try:
        torch.set_num_threads(1)
        record = numerics_record()
    finally:
        torch.set_num_threads(before)
    assert record["threads"] == 1 and record["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["MKL_CBWR"] == "AVX2" and record["ONEDNN_MAX_CPU_ISA"] is None  # None: the library chooses
    assert set(KERNEL_VARIABLES) <= set(record) and record["torch"] == torch.__version__
