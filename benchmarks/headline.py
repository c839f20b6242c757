"""Headline benchmark: the embedded default run, side by side in one run dir.

The teacher, the manual baselines (every-other-layer truncation, TinyBERT shape distilled with the same budget;
`evaluate.baselines` is turned on here) and the recommended students per budget: CPU latency on the same backend, speed-up, retention on the tasks.
Checks the targets: a recommended student >= 7x faster than the teacher at >= 92% average retention, and for
each manual baseline a searched student at equal or lower latency that scores higher.

    python benchmarks/headline.py [CONFIG] [--run-dir runs/headline] [--section.key VALUE ...]

The run is resumable: rerunning the command continues where it stopped and only prints when done.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from _run import run_and_read  # benchmarks/_run.py, next to this script

from kdnas import config
from kdnas.cli import split_overrides


def main(argv: list[str] | None = None) -> int:
    rest, ov = split_overrides(list(sys.argv[1:] if argv is None else argv))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", help="recipe name or YAML (default: the embedded default)")
    ap.add_argument("--run-dir", default="runs/headline")
    ap.add_argument("--speedup", type=float, default=7.0, help="speed-up target (default 7)")
    ap.add_argument("--retention", type=float, default=0.92, help="retention target (default 0.92)")
    args = ap.parse_args(rest)
    overrides = {"evaluate.baselines": True}  # the bar the targets are judged against
    overrides.update(config.parse_overrides(ov) if ov else {})
    cfg = config.load(args.config, overrides)
    run_dir = Path(args.run_dir)
    run = run_and_read(cfg, run_dir)
    wall, stages, table, students = run.wall_s, run.stage_s, run.table, run.students
    rows = table["rows"]
    tasks = table["tasks"]
    ev = run.evaluate
    spread = ev.get("speedup_range", {})

    print(f"\nheadline: {args.config or 'embedded default'} in {run_dir}")
    print(
        f"latency: {ev.get('latency_rounds', 1)} side-by-side rounds; speed-up from the medians, range over rounds"
    )
    print(f"machine: {platform.processor() or platform.machine()}, target {cfg.target.device} "
          f"{cfg.target.threads} threads, batch {cfg.target.batch_size}, seq {cfg.target.seq_lens[0]}, "
          f"backend {cfg.target.backend}")  # fmt: skip
    print(f"stage seconds (this invocation {wall:.0f} s; all stages as first run): "
          + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()) + f"; total {sum(stages.values()) / 60:.1f} min")  # fmt: skip
    head = (
        f"{'model':22} {'arch':24} {'params':>8} {'lat ms':>8} {'speed-up (per-round range)':>24} "
        + " ".join(f"{t[:12]:>12}" for t in tasks)
        + f" {'retention':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        arch = students.get(r["model"], {}).get("arch_id", "")
        if r["model"] == "teacher":
            arch = json.loads((run_dir / "teacher.json").read_text())["arch_id"]
        scores = " ".join(
            f"{100 * r['scores'][t]:6.2f}±{100 * r['stds'].get(t, 0):4.2f}"
            if t in r["scores"]
            else f"{'-':>12}"
            for t in tasks
        )
        lo, hi = spread.get(r["model"], (r["speedup"], r["speedup"]))
        print(f"{r['model']:22} {arch:24} {r['params'] / 1e6:7.2f}M {r['latency_ms']:8.2f} "
              f"{r['speedup']:7.2f}x [{lo:5.2f}-{hi:5.2f}] {scores} {100 * r['avg_retention']:8.1f}%")  # fmt: skip

    searched = [r for r in rows if r["model"] in students]
    baselines = [r for r in rows if r["model"] not in students and r["model"] != "teacher"]
    fast = [r for r in searched if r["speedup"] >= args.speedup]
    best = max(fast, key=lambda r: r["avg_retention"], default=None)
    ok1 = best is not None and best["avg_retention"] >= args.retention
    print(f"\ntarget 1: a recommended student >= {args.speedup:g}x faster at >= {100 * args.retention:.0f}% retention: "
          + (f"{'MET' if ok1 else 'NOT MET'} ({best['model']}: {best['speedup']:.2f}x at "
             f"{100 * best['avg_retention']:.1f}%)" if best else f"NOT MET (no student >= {args.speedup:g}x)"))  # fmt: skip
    ok2 = True
    for b in baselines:
        beat = [
            s
            for s in searched
            if s["latency_ms"] <= b["latency_ms"] and s["avg_retention"] > b["avg_retention"]
        ]
        ok2 &= bool(beat)
        who = ", ".join(
            f"{s['model']} ({s['latency_ms']:.2f} ms, {100 * s['avg_retention']:.1f}%)" for s in beat
        )
        print(
            f"target 2 vs {b['model']} ({b['latency_ms']:.2f} ms, {100 * b['avg_retention']:.1f}%): "
            + (f"MET by {who}" if beat else "NOT MET")
        )
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
