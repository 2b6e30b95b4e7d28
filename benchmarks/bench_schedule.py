"""How long a parallel bench (tools/bench_ov.py --jobs N) takes on N cores, by simulating its scheduler on the
units' measured costs: a model for machines this one is not (it has 2 cores), not a measurement.

    python benchmarks/bench_schedule.py [--seeds 3] [--jobs 1 2 3 4 6 8] [--cost ViLD-text=12.5 ...]

The units are tools/bench_ov.py's own (plan_units, all detection rows and the segmentation unit); each runs
for its cost in minutes, and ovclip.synthetic.bench.run_units's rule starts them: whenever a process is free,
the first ready unit in list order (ready: the units it comes after finished). Two orders of the same units
are compared: plan_units' (every seed's ViLD-text, then what rows share of its proposals, then the rows that
use them, longest first, then the rest) and seed by seed. The default costs are minutes of one one-thread
process measured on this machine on 2026-12-02 (benchmarks/RESULTS.md: seed 0's detection units with --jobs 2,
each beside another; a unit's cost includes its start, ~0.3 minutes; the segmentation unit's from an earlier
run). The model takes a unit's cost as fixed; processes at
once slow each other more or less by which units they are (DetPro beside OV-DETR more than two ViLD-texts,
RESULTS.md), and more of them may on a machine whose memory bandwidth they share.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ovclip.synthetic.bench import startable  # noqa: E402

# minutes a unit takes, by its tag (the unit's name without the seed)
COSTS = {"ViLD-text": 14.3, "labels": 7.4, "regions": 2.1, "OV-DETR": 19.8, "DetPro": 18.0, "ViLD": 12.0,
         "ViLD-ensemble": 12.3, "pseudo-labels": 11.6, "teacher": 0.7, "DETR-text": 18.7, "oracle": 11.3,
         "segmentation": 11.0}


def plan(seeds: int) -> list:
    """tools/bench_ov.py's units for seeds 0 .. seeds - 1, every row of both tasks."""
    spec = importlib.util.spec_from_file_location("bench_ov_tool", ROOT / "tools" / "bench_ov.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = SimpleNamespace(seed=list(range(seeds)), task=["detection", "segmentation"], rows=None, threads=1,
                           work_dir="w", teacher_dir="t", teacher_captions="default", configs="c", run_id="r",
                           quick=False, debug=False, cfg_options={}, detr_cfg_options={})
    return tool.plan_units(args, Path("t"))


def tag(unit) -> str:
    """A unit's name without its seed (s0-ViLD-text: ViLD-text)."""
    return unit.name.split("-", 1)[1]


def makespan(units: list, costs: dict[str, float], jobs: int) -> float:
    """Minutes until the last unit ends under run_units' rule."""
    now, pending, running, finished = 0.0, list(units), {}, set()
    while pending or running:
        for u in startable(pending, finished, jobs - len(running)):
            pending.remove(u)
            running[u.name] = now + costs[tag(u)]
        if not running:
            raise ValueError(f"units wait on units that are not planned: {[u.name for u in pending]}")
        now = min(running.values())
        for name in [n for n, end in running.items() if end == now]:
            finished.add(name)
            del running[name]
    return now


def longest_path(units: list, costs: dict[str, float]) -> tuple[float, list[str]]:
    """The longest chain of units, each after the one before it (no number of processes ends sooner): its
    minutes and its units' names."""
    by_name, ends = {u.name: u for u in units}, {}

    def end(name: str) -> tuple[float, list[str]]:
        if name not in ends:
            before = max((end(a) for a in by_name[name].after), default=(0.0, []))
            ends[name] = (before[0] + costs[tag(by_name[name])], [*before[1], name])
        return ends[name]
    return max(end(u.name) for u in units)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    p.add_argument("--cost", nargs="*", default=[], metavar="TAG=MINUTES",
                   help=f"a unit's cost in minutes (tags and defaults: {COSTS})")
    args = p.parse_args(argv)
    costs = dict(COSTS)
    for item in args.cost:
        unit_tag, _, minutes = item.partition("=")
        if unit_tag not in costs or not minutes:
            p.error(f"--cost {item!r}: give TAG=MINUTES with a tag of {sorted(costs)}")
        costs[unit_tag] = float(minutes)
    units = plan(args.seeds)
    by_seed = sorted(units, key=lambda u: int(u.name[1:].split("-", 1)[0]))  # stable: plan order within a seed
    total = sum(costs[tag(u)] for u in units)
    minutes, path = longest_path(units, costs)
    print(f"{len(units)} units of {args.seeds} seed(s), {total:.0f} process-minutes; modelled, not measured; the "
          f"longest path {minutes:.0f} min ({' -> '.join(path)})\n")
    print("| processes | plan_units' order, min | per seed | seed by seed, min | per seed |\n|---|---|---|---|---|")
    for jobs in args.jobs:
        a, b = makespan(units, costs, jobs), makespan(by_seed, costs, jobs)
        print(f"| {jobs} | {a:.0f} | {a / args.seeds:.0f} | {b:.0f} | {b / args.seeds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
