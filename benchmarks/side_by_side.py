"""How steady are side-by-side speed-ups? Timing modes measured on the same machine, alternating.

The teacher and a few students (random weights: the cost of trained ones) are timed side by side with
`measure_side_by_side` in each mode, modes alternating so that all see the same machine. A mode is
`slices:bracket`: `1:0` is one converged measurement per model and round (the behaviour before 2026-12-05),
`6:0` visits every model 6 times per round with the teacher read once per visit (2026-12-05), `4:2` visits it 4
times and reads the teacher again after every 2 models, each ratio against the teacher's readings just before and
after (2026-12-06). Every round's ratio is read two ways from the same timings: from each model's median pass and
from its fastest pass (`target.compare_statistic`). Per model: the speed-up, its coefficient of variation over
rounds (issue 16 asks <= 3%) and the wall time of each mode. Reports, does not assert.

    python benchmarks/side_by_side.py [--teacher minilm-l6] [--archs ...] [--rounds 3] [--repeats 2]
        [--modes 1:0,6:0,4:2] [--slice-s S] [--warmup-s S]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

ARCHS = "L3-H384-A12-F1536,L3-H384-A6-F1536,L2-H384-A12-F1152,L4-H256-A4-F1024,L1-H384-A12-F768"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="minilm-l6")
    ap.add_argument("--archs", default=ARCHS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="measurements per mode (modes alternate)")
    ap.add_argument("--modes", default="1:0,6:0,4:2", help="comma-separated slices:bracket")
    ap.add_argument("--slice-s", type=float, help="timed seconds per visit (default: target.compare_slice_s)")
    ap.add_argument(
        "--warmup-s", type=float, help="warm-up seconds per measurement (default: target.warmup_s)"
    )
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()

    from kdnas.latency import ModelSpec, TargetConfig, load_teacher_config, measure_side_by_side
    from kdnas.latency.api import ratio_cv
    from kdnas.latency.config import COMPARE_STATISTICS
    from kdnas.space.arch import Arch

    tcfg = load_teacher_config(a.teacher)
    archs = [Arch.parse(s) for s in a.archs.split(",")]
    specs = [ModelSpec.for_config(tcfg), *(ModelSpec.for_arch(tcfg, x) for x in archs)]
    names = [f"teacher {a.teacher}", *(x.arch_id for x in archs)]
    target = TargetConfig()
    if a.slice_s is not None:
        target = dataclasses.replace(target, compare_slice_s=a.slice_s)
    if a.warmup_s is not None:
        target = dataclasses.replace(target, warmup_s=a.warmup_s)
    modes: dict[str, tuple[int, int]] = {}
    for m in a.modes.split(","):
        k, b = (int(x) for x in m.split(":"))
        modes[f"{'converged' if k == 1 else 'visits'}-{k}:{b}"] = (k, b)
    res: dict[str, list] = {m: [] for m in modes}
    for rep in range(a.repeats):
        for m, (k, b) in modes.items() if rep % 2 == 0 else reversed(modes.items()):
            t0 = time.perf_counter()
            sbs = measure_side_by_side(specs, target, rounds=a.rounds, slices=k, bracket=b)
            res[m].append({"wall_s": time.perf_counter() - t0, "round_ratios": sbs.round_ratios})
            print(f"  {m}, repeat {rep + 1}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\n{a.rounds} rounds per measurement, {a.repeats} measurements per mode, target {target.threads} threads, "
          f"batch {target.batch_size}, seq {target.seq_lens[0]}, backend {target.backend}; each ratio read from "
          "the models' median pass and from their fastest pass (min) of the same rounds")  # fmt: skip
    cols = [(m, stat) for m in modes for stat in COMPARE_STATISTICS]
    head = f"{'model':28} " + " ".join(f"{m + ', ' + st:>34}" for m, st in cols)
    print(head + "\n" + "-" * len(head))
    for i, name in enumerate(names[1:], 1):
        cells = []
        for m, stat in cols:
            runs = [r["round_ratios"][stat][i] for r in res[m]]
            sp = [statistics.median(x) for x in runs]
            cv = statistics.fmean(ratio_cv(x) for x in runs)
            cells.append(f"{' / '.join(f'{x:.2f}x' for x in sp)} cv {100 * cv:4.1f}%")
        print(f"{name:28} " + " ".join(f"{c:>34}" for c in cells))
    for m, stat in cols:
        cvs = [
            statistics.fmean(ratio_cv(r["round_ratios"][stat][i]) for r in res[m])
            for i in range(1, len(names))
        ]
        wall = statistics.fmean(r["wall_s"] for r in res[m])
        print(f"{m}, {stat}: mean cv {100 * statistics.fmean(cvs):.1f}%, max {100 * max(cvs):.1f}%, "
              f"{wall:.0f} s per measurement")  # fmt: skip
    if a.out:
        Path(a.out).write_text(json.dumps({"names": names, "results": res}, indent=1))


if __name__ == "__main__":
    main()
