"""What the CPU benchmark's detection and segmentation rows share: the table row, the training run and the
record of the numerics it ran with."""
from __future__ import annotations

import json
import logging
import os
import platform
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..engine.runner import ProjectRunner, drop_training, load_config, load_weights
from ..io import atomic_json_dump

log = logging.getLogger(__name__)

# A training run's float sums depend on the intra-op thread count (OpenMP splits each reduction by thread: the
# synthetic ViLD-text trained 20 iterations ends with other weights at 1, 2 and 4 threads), so the bench trains
# on a fixed count, whatever the machine has. They also depend on the kernels each library picks for the CPU
# (ATen's, oneDNN's, MKL's AVX2 or AVX-512 code). Those are not forced: on the AVX2 CPU the reported numbers
# come from, asking the three libraries for their AVX2 kernels (the variables below) left ViLD-text's weights
# unchanged but moved the synthetic DETR-text from 12.6 / 48.1 to 13.4 / 49.0 novel / base AP50 (seed 0, one
# thread): the libraries' own choice is part of the reported arithmetic.
# One thread, so that rows can run side by side (tools/bench_ov.py --jobs) with the numbers one process gives: on
# the 2-core machine of the reported numbers, two one-thread processes trained ViLD-text and DETR-text in 784 s,
# about what one two-thread process takes for both; a machine of more cores runs more rows at once.
BENCH_THREADS = 1  # the intra-op threads of each of the bench's processes for the reported numbers
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")  # recorded, not set


def numerics_record() -> dict[str, object]:
    """What this process computes with, for a results file: threads, ATen's kernels, the kernel-choosing
    variables as set (None: the library's own choice), library versions, the CPU's architecture."""
    return {"threads": torch.get_num_threads(), "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **{k: os.environ.get(k) for k in KERNEL_VARIABLES}, "torch": torch.__version__,
            "torchvision": metadata.version("torchvision"), "machine": platform.machine()}


def source_digest(*folders: "str | Path") -> str:
    """A digest of the Python and JSON files under `folders` (code and configs): a bench run is resumed only on
    the code it started with."""
    import hashlib

    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.suffix in (".py", ".json") and p.is_file()):
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class BenchRow:
    """One line of the benchmark table."""

    task: str
    name: str
    novel: float
    base: float
    seconds: float
    note: str = ""


@HOOKS.register_module(force=True)
class BenchProgressHook(Hook):
    """Prints a benchmark row's training progress (about ten lines per row) and when it starts testing:
    the bench runs its rows quietly (log level WARNING), and a row takes minutes."""

    priority = "LOW"

    def __init__(self, name: str, lines: int = 10):
        self.name, self.lines = name, lines
        self._start = 0.0

    def before_train(self, runner) -> None:  # noqa: D102 - mmengine hook
        self._start = time.perf_counter()
        print(f"    {self.name}: training {runner.max_iters} iterations", flush=True)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:  # noqa: D102
        done, total = runner.iter + 1, runner.max_iters
        if done % max(1, total // self.lines) == 0 or done == total:
            elapsed = time.perf_counter() - self._start
            print(f"    {self.name}: {done}/{total} iterations, {elapsed:.0f} s, about "
                  f"{elapsed / done * (total - done):.0f} s to go", flush=True)

    def before_test(self, runner) -> None:  # noqa: D102 - mmengine hook
        print(f"    {self.name}: testing", flush=True)


ROW_RECORD = "bench_row.json"  # a finished training row: what it was trained with, its metrics
_run_id: Optional[str] = None
_may_make: Optional[frozenset[str]] = None


@contextmanager
def bench_run(run_id: Optional[str], may_make: Optional[Sequence[str]] = None):
    """Within it, each row `train_and_test` finishes is recorded in its work dir under `run_id`, and a row
    already finished under that id, with the same config, options, iterations, seed and thread count, is
    loaded from its checkpoint instead of trained again (a resumed bench, or another process of a parallel
    one that needs a row's model); so is what `made_once` makes. A run id stands for one code, teacher and
    settings: the bench tool gives a new one unless it resumes a run with all of them unchanged. Outside it
    (`run_id` None) nothing is reused. `may_make`: the names of what `made_once` may make here (None: all); a
    unit of a parallel bench only uses the others, which a unit before it made (were it to make one again,
    it would remove files other units are reading)."""
    global _run_id, _may_make
    previous = _run_id, _may_make
    _run_id, _may_make = run_id, None if may_make is None else frozenset(may_make)
    try:
        yield
    finally:
        _run_id, _may_make = previous


def _row_key(config: "str | Path", options: dict[str, Any], iters: int, seed: int) -> str:
    return json.dumps({"run": _run_id, "config": str(config), "options": options, "iters": iters, "seed": seed,
                       "threads": torch.get_num_threads()}, sort_keys=True, default=str)


def train_and_test(config: "str | Path", options: dict[str, Any], work_dir: Path, iters: int,
                   seed: int) -> tuple[ProjectRunner, dict]:
    """Train a config's model for `iters` iterations (warm-up, then cosine) and evaluate it on its test set
    (inside `bench_run`: or load the same row finished before, see there)."""
    warmup = max(1, iters // 10)
    cfg = load_config(config, {**options, "train_cfg.max_iters": iters, "randomness.seed": seed,
                               "log_level": "WARNING", "experiment_name": f"{work_dir.name}-{seed}"},
                      work_dir=str(work_dir))
    cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=warmup),
                           dict(type="CosineAnnealingLR", by_epoch=False, begin=warmup, T_max=iters - warmup,
                                eta_min=cfg.optim_wrapper.optimizer.lr * 0.01)]
    cfg.default_hooks.checkpoint.interval = iters
    cfg.custom_hooks = [*cfg.custom_hooks, dict(type="BenchProgressHook", name=work_dir.name)]
    key, record = _row_key(config, options, iters, seed), work_dir / ROW_RECORD
    if _run_id is not None and record.is_file():
        finished = json.loads(record.read_text())
        if finished["key"] == key and (work_dir / finished["checkpoint"]).is_file():
            # a runner of its own folder: processes loading the same row at once write nothing in common
            cfg.work_dir = str(work_dir / f"reused-{os.getpid()}")
            runner = ProjectRunner.from_cfg(cfg)
            load_weights(runner.model, work_dir / finished["checkpoint"], config)
            runner.model.eval()  # as the test that ended its training left it
            print(f"    {work_dir.name}: finished earlier in this run (trained and tested in "
                  f"{finished['seconds']:.0f} s), loaded from {finished['checkpoint']}", flush=True)
            return runner, finished["metrics"]
    record.unlink(missing_ok=True)
    start = time.perf_counter()
    runner = ProjectRunner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    log.info("%s: %s", work_dir, metrics)
    if _run_id is not None:
        atomic_json_dump({"key": key, "checkpoint": f"iter_{iters}.pth", "seconds": time.perf_counter() - start,
                          "metrics": metrics}, record, indent=1)
    return runner, metrics


def weights_digest(model) -> str:
    """A digest of a model's state (weights and buffers, names, dtypes and shapes): what `made_once` keys a
    thing made with the model on."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def made_once(name: str, record: Path, key: Callable[[], dict[str, Any]], make: Callable[[], Any],
              outputs: Sequence[Path] = ()) -> Any:
    """What `make` writes (`outputs`, among others) and returns (a JSON value), made once in a bench run: inside
    `bench_run` the value is recorded in `record` with `key()` and the run's id when `make` returns, and a
    later call with the same key in the same run, `outputs` still there (a file; a folder not empty: a resumed
    bench; a unit of a parallel one that uses what another unit made), returns the recorded value and makes
    nothing; one that `bench_run` may not make raises instead of making it. Outside it, always made (`key` is
    not called). The key must name everything the made thing depends on beyond the run's code and settings
    (a model by `weights_digest`)."""
    if _run_id is None:
        return make()
    full = json.dumps({"run": _run_id, "made": name, **key(), "threads": torch.get_num_threads()}, sort_keys=True,
                      default=str)
    done = json.loads(record.read_text()) if record.is_file() else {}
    if done.get("key") == full and all(Path(p).is_file() or any(Path(p).glob("*")) for p in outputs):
        print(f"    {name}: made earlier in this run (in {done['seconds']:.0f} s), reused", flush=True)
        return done["value"]
    if _may_make is not None and name not in _may_make:
        why = "not made" if not done else "made, but its files are gone" if done["key"] == full else \
            "made for another model, settings or run"
        raise RuntimeError(f"{name}: {why} ({record}); this unit of a parallel bench uses the one the unit "
                           f"'{name}' made before it: see that unit's log, or run the bench again")
    record.unlink(missing_ok=True)  # what it recorded goes with the files make() replaces
    start = time.perf_counter()
    value = make()
    seconds = time.perf_counter() - start
    atomic_json_dump({"key": full, "seconds": seconds, "value": value}, record, indent=1)
    print(f"    {name}: made in {seconds:.0f} s", flush=True)
    return value


def evaluate_config(config: "str | Path", options: dict[str, Any], work_dir: Path) -> dict:
    """Evaluate a config's model as built (a zero-shot model) on its test set."""
    cfg = load_config(config, {**options, "log_level": "WARNING"}, work_dir=str(work_dir))
    drop_training(cfg)
    return ProjectRunner.from_cfg(cfg).test()


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


@dataclass
class BenchUnit:
    """A part of a parallel bench, run as a process of its own: `command` (the bench tool with the part's
    arguments), after the units named in `after` finished well."""

    name: str
    command: list[str]
    after: tuple[str, ...] = ()


def startable(pending: Sequence[BenchUnit], finished: set[str], free: int) -> list[BenchUnit]:
    """The units `run_units` starts when `free` processes are free: the first of `pending`, in list order, whose
    units before them all finished (benchmarks/bench_schedule.py models the bench's wall time with it)."""
    return [u for u in pending if set(u.after) <= finished][:max(0, free)]


def run_units(units: Sequence[BenchUnit], jobs: int, log_dir: Path,
              on_done: Optional[Callable[[BenchUnit, float], None]] = None, poll_seconds: float = 0.5) -> list[str]:
    """Run the units' processes, at most `jobs` at once, each once the units it comes after finished well (in
    list order among those ready); each one's output goes to `log_dir`/<name>.log. A unit that fails is said
    with its log; the units after it are skipped. Returns the names of the units that failed or were skipped.
    The processes still running when this is interrupted (Ctrl-C, SIGTERM, an error) are stopped."""
    log_dir.mkdir(parents=True, exist_ok=True)
    pending, running, finished, failed = list(units), {}, set(), []
    stoppable = threading.current_thread() is threading.main_thread()
    if stoppable:  # `kill` stops the units too, as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        while pending or running:
            for unit in [u for u in pending if any(a in failed for a in u.after)]:
                pending.remove(unit)
                failed.append(unit.name)
                print(f"  {unit.name}: skipped (a unit it needs failed)", flush=True)
            for unit in startable(pending, finished, jobs - len(running)):
                pending.remove(unit)
                out = open(log_dir / f"{unit.name}.log", "w", encoding="utf-8")
                running[unit.name] = (unit, subprocess.Popen(unit.command, stdout=out, stderr=subprocess.STDOUT),
                                      out, time.perf_counter())
                print(f"  {unit.name}: started (log {log_dir / f'{unit.name}.log'})", flush=True)
            if pending and not running:
                raise RuntimeError(f"bench units wait on units that are not planned: {[u.name for u in pending]}")
            time.sleep(poll_seconds)
            for name, (unit, proc, out, start) in list(running.items()):
                if proc.poll() is None:
                    continue
                out.close()
                del running[name]
                if proc.returncode == 0:
                    finished.add(name)
                    if on_done:
                        on_done(unit, time.perf_counter() - start)
                else:
                    failed.append(name)
                    print(f"  {name}: FAILED (exit status {proc.returncode}); see {log_dir / f'{name}.log'}",
                          flush=True)
    finally:
        for unit, proc, out, _ in running.values():
            proc.terminate()
            proc.wait()
            out.close()
        if stoppable:
            signal.signal(signal.SIGTERM, previous)
    return failed
