"""More fine-tuning seeds for models a finished run already scored: is a difference between two models of the
run a difference, or seed noise?

The evaluate stage fine-tunes each model with `evaluate.seeds` (two by default). This script fine-tunes the named
models of RUN_DIR again with more seeds (`--seeds`, seeds the run did not use), under the run's own protocol (the
students' lr grid for every model but the teacher, the same tasks, train sizes and epochs), pools them with the
run's seeds, and prints per task mean ± std over all seeds, the suite average per seed, and for each model
against the first (`--models A,B,...`: A is the reference) the difference of the suite averages' means with its
standard error. Tasks scored without fine-tuning (`pair_encoding: embedding`) are deterministic: they
enter every seed's average with their one value.

    python benchmarks/seeds.py --run-dir runs/headline-family3 \\
        --models student-at-tinybert-4L-312H,every-other-layer-kd --seeds 2,3,4

The new seeds' results go to RUN_DIR/seeds/<model>.json and are read back, not redone, when present (a killed
sweep continues where it stopped). Reports, does not assert.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from kdnas.errors import KdnasError


def model_dir(run_dir: Path, name: str) -> Path:
    from kdnas import run_dir as rd

    for d in (
        run_dir / rd.STUDENTS / name / "model",
        run_dir / rd.BASELINES / name / "model",
        run_dir / rd.PEERS / name,
    ):
        if d.is_dir():
            return d
    raise KdnasError(
        f"{name}: no model dir under {run_dir}/students, baselines or peers (see {run_dir}/evaluate)"
    )


def per_seed(report: dict[str, Any]) -> dict[str, dict[int, float]]:
    """task -> seed -> test score (the task's metric, at the best lr); one value under seed -1 for a task
    scored without fine-tuning."""
    out: dict[str, dict[int, float]] = {}
    for task, r in report["results"].items():
        metric = r["metric"]
        runs = [x for x in r.get("runs") or [] if x.get("lr") == r.get("best_lr")]
        if runs:
            out[task] = {int(x["seed"]): float(x["test"][metric]) for x in runs}
        else:
            out[task] = {-1: float(r["test_mean"])}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="a run dir whose evaluate stage has run")
    ap.add_argument(
        "--models",
        required=True,
        help="comma-separated model names of RUN_DIR/evaluate; the first is the reference",
    )
    ap.add_argument("--seeds", default="2,3,4", help="the extra fine-tuning seeds (default 2,3,4)")
    args = ap.parse_args(argv)

    from kdnas import config
    from kdnas.evaluate.encoder import load_encoder
    from kdnas.evaluate.runner import evaluate_encoder, load_tasks

    run_dir = Path(args.run_dir)
    cfg = config.load(str(run_dir / "config.yaml"))
    names = args.models.split(",")
    extra = [int(s) for s in args.seeds.split(",")]
    used = set(cfg.evaluate.seeds)
    if used & set(extra):
        raise KdnasError(f"--seeds {args.seeds}: the run already used seeds {sorted(used)}; give other seeds")
    tasks = load_tasks(cfg.evaluate.tasks, max_train=cfg.evaluate.max_train_examples)
    out_dir = run_dir / "seeds"
    out_dir.mkdir(exist_ok=True)

    scores: dict[str, dict[str, dict[int, float]]] = {}
    for name in names:
        ev_file = run_dir / "evaluate" / f"{name}.json"
        if not ev_file.is_file():
            raise KdnasError(f"{ev_file} is missing: {name} was not scored in {run_dir}")
        base = per_seed(json.loads(ev_file.read_text()))
        new_file = out_dir / f"{name}.json"
        new: dict[str, Any] | None = json.loads(new_file.read_text()) if new_file.is_file() else None
        if new is None or new.get("seeds") != extra:
            protocol = cfg.evaluate if name == "teacher" else cfg.evaluate.for_students()
            protocol = dataclasses.replace(protocol, seeds=extra)
            enc = load_encoder(str(model_dir(run_dir, name)), name=name)
            print(f"{name}: fine-tuning with seeds {extra}", file=sys.stderr, flush=True)
            report = evaluate_encoder(enc, tasks, protocol).to_dict()
            new = {"seeds": extra, "report": report}
            new_file.write_text(json.dumps(new, indent=1))
        more = per_seed(new["report"])
        scores[name] = {t: {**base[t], **more.get(t, {})} for t in base}

    seeds = sorted(used | set(extra))
    cols = list(scores[names[0]])
    print(
        f"\n{run_dir}: seeds {seeds} (the run's {sorted(used)} and {extra}); test scores x100, mean ± std over seeds"
    )
    print(f"{'model':<32}" + "".join(f"{c:>18}" for c in cols) + f"{'suite avg':>18}")
    avgs: dict[str, dict[int, float]] = {}
    for name in names:
        by_task = scores[name]
        avgs[name] = {
            s: statistics.fmean(v.get(s, v.get(-1, float("nan"))) for v in by_task.values()) for s in seeds
        }
        cells = []
        for c in cols:
            vals = list(by_task[c].values())
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{100 * statistics.fmean(vals):10.2f} ± {100 * sd:4.2f}")
        a = list(avgs[name].values())
        print(f"{name:<32}" + "".join(f"{x:>18}" for x in cells)
              + f"{100 * statistics.fmean(a):10.2f} ± {100 * statistics.stdev(a):4.2f}")  # fmt: skip
    ref = names[0]
    print(f"\n{ref} minus each model: difference of the suite averages' means over {len(seeds)} seeds, its standard "
          "error (unpaired: the seeds of two models are not the same draws), and the difference per seed")  # fmt: skip
    for name in names[1:]:
        a, b = list(avgs[ref].values()), list(avgs[name].values())
        se = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
        d = [avgs[ref][s] - avgs[name][s] for s in seeds]
        print(f"  {ref} - {name}: {100 * (statistics.fmean(a) - statistics.fmean(b)):+.2f} (se {100 * se:.2f}; "
              + "per seed " + ", ".join(f"{100 * x:+.2f}" for x in d) + ")")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
