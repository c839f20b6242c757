"""Embedding-level losses and the suite (issue 21): one student shape distilled with the default losses and with
hidden + relation only (the losses before issue 21), each then scored on the default suite, side by side in this
run (label-free fidelity of the same pair: `benchmarks/embedding.py`).

Each variant is `kdnas distill` (same arch, init, corpus split, seed and token budget) and `kdnas evaluate` on the
default suite, in its own process (torch state does not carry over); finished steps are kept, so a killed run
resumes where it stopped. Prints the suite per task (mean ± std over seeds) and the averages' difference.

    python benchmarks/embedding_suite.py [--arch L2-H384-A12-F1152-gelu] [--tokens 600000] [--out runs/embedding-suite]

Reports, does not assert.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "default": None,  # hidden, relation, sentence, similarity
    "hidden+relation": {"distill": {"losses": {"hidden": 1.0, "relation": 1.0}}},
}


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--arch", default="L2-H384-A12-F1152-gelu", help="the student shape (the family headline's 3x)"
    )
    ap.add_argument("--tokens", type=int, default=600_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/embedding-suite")
    args = ap.parse_args()
    import yaml

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kdnas = [str(Path(sys.executable).parent / "kdnas")]  # the console script of this environment
    rows = {}
    for name, cfg in VARIANTS.items():
        d = out / name
        extra = []
        if cfg is not None:
            cfg_file = out / f"{name}.yaml"
            cfg_file.write_text(yaml.safe_dump(cfg))
            extra = ["--config", str(cfg_file)]
        if not (d / "model" / "config.json").is_file():
            resume = ["--resume", str(d)] if d.exists() else ["--out", str(d)]
            _run([*kdnas, "distill", "--arch", args.arch, "--tokens", str(args.tokens),
                  "--threads", str(args.threads), "--no-progress", *extra, *resume])  # fmt: skip
        ev = out / f"{name}-suite.json"
        if not ev.is_file():
            _run([*kdnas, "evaluate", str(d / "model"), "--threads", str(args.threads), "--out", str(ev)])
        rows[name] = json.loads(ev.read_text())
    tasks = list(next(iter(rows.values()))["model"]["results"])
    print(f"\n{args.arch}, {args.tokens:,} tokens, seed 0; suite test scores (mean ± std over seeds)")
    print(f"{'losses':<18} " + " ".join(f"{t:>16}" for t in tasks) + f" {'avg':>7}")
    avgs = {}
    for name, rep in rows.items():
        res = rep["model"]["results"]
        avgs[name] = sum(100 * res[t]["test_mean"] for t in tasks) / len(tasks)
        cells = " ".join(
            f"{100 * res[t]['test_mean']:>9.2f} ± {100 * res[t]['test_std']:>4.2f}" for t in tasks
        )
        print(f"{name:<18} {cells} {avgs[name]:>7.2f}")
    a, b = avgs["default"], avgs["hidden+relation"]
    print(f"\ndefault - hidden+relation: {a - b:+.2f} suite points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
