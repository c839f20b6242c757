"""More fine-tuning seeds for the finals of a finished run, merged with the run's own, as a finals table.

A run's evaluate stage fine-tunes every model on the suite with `evaluate.seeds` (two by default), so the suite
averages of its finals carry the seeds' noise: in the family headline most models sit within a point of each other,
and the proxy-fidelity tau against them is capped by which pairs the seeds happen to order (issue 16 items 1-2,
`benchmarks/proxy_resolved.py`). This fine-tunes every distilled model of the run (the searched students and the
distilled baselines, each distinct model once) with the extra seeds, under the run's own protocol
(`evaluate.for_students()`, the run's tasks), merges the runs with the run's stored ones, chooses the lr on the mean
dev score over all seeds as the protocol does (`kdnas.evaluate.results.summarize`), and writes a finals table:
per model the suite average (tasks' test scores in points, averaged) over all seeds and its standard error from
the per-seed suite averages. Embedding-scored tasks (no fine-tuning) are the same for every seed.

Resumable: each model's extra runs are written when it finishes and read back on the next call. `--check SEED`
first re-runs one stored seed of the fastest model and stops if it does not reproduce the stored test scores
(then the merged seeds would not be one protocol).

    python benchmarks/finals_seeds.py --run-dir runs/headline-family7 --seeds 2,3 [--check 0]
        [--out benchmarks/data/finals-headline-family7.json] [--work runs/headline-family7/finals-seeds]

Then `python benchmarks/proxy_resolved.py --finals finals-headline-family7.json` reads the proxy's order against it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


def distinct_models(distill_summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's distilled models (students and baselines), each model dir once; the first name kept."""
    seen: dict[str, dict[str, Any]] = {}
    for m in [*distill_summary.get("baselines", []), *distill_summary.get("students", [])]:
        seen.setdefault(m["model_dir"], m)
    return list(seen.values())


def per_seed_suite(results: dict[str, Any]) -> dict[int, float]:
    """Seed -> suite average in points: each fine-tuned task's test score at its chosen lr for that seed, each
    fixed (embedding-scored) task's score for every seed."""
    seeds = sorted({r.seed for res in results.values() for r in res.runs})
    out = {}
    for s in seeds:
        vals = []
        for res in results.values():
            if res.runs:
                (run,) = [r for r in res.runs if r.lr == res.best_lr and r.seed == s]
                vals.append(run.test[res.metric])
            else:
                vals.append(res.test_mean)
        out[s] = 100 * statistics.fmean(vals)
    return out


def main(argv: list[str] | None = None) -> int:
    from kdnas import config as kconfig
    from kdnas.evaluate.encoder import load_encoder
    from kdnas.evaluate.results import summarize
    from kdnas.evaluate.retention import ModelReport
    from kdnas.evaluate.runner import evaluate_encoder, load_tasks
    from kdnas.space.arch import Arch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="a finished run (its evaluate stage done)")
    ap.add_argument(
        "--seeds", default="2,3", help="extra fine-tuning seeds (comma-separated; '' merges nothing)"
    )
    ap.add_argument(
        "--models", default="", help="comma-separated model names (default: every distilled model)"
    )
    ap.add_argument(
        "--check", type=int, default=None, help="re-run this stored seed on the fastest model first"
    )
    ap.add_argument(
        "--out", default=None, help="finals table (default benchmarks/data/finals-<run name>.json)"
    )
    ap.add_argument(
        "--work", default=None, help="where each model's extra runs go (default RUN/finals-seeds)"
    )
    a = ap.parse_args(argv)

    run = Path(a.run_dir)
    cfg = kconfig.load(run / "config.yaml")
    distill_json = run / "stages" / "distill.json"
    if not (run / "stages" / "evaluate.json").exists():
        raise SystemExit(
            f"{run}: its evaluate stage has not finished (no stages/evaluate.json); finish the run first"
        )
    models = distinct_models(json.loads(distill_json.read_text())["summary"])
    if a.models:
        wanted = [n for n in a.models.split(",") if n]
        unknown = sorted(set(wanted) - {m["name"] for m in models})
        if unknown:
            raise SystemExit(
                f"--models: {', '.join(unknown)} not among {', '.join(m['name'] for m in models)}"
            )
        models = [m for m in models if m["name"] in wanted]
    extra = [int(s) for s in a.seeds.split(",") if s.strip()]
    protocol = cfg.evaluate.for_students()
    clash = sorted(set(extra) & set(protocol.seeds))
    if clash:
        raise SystemExit(
            f"--seeds: {clash} already in the run's evaluate.seeds {protocol.seeds}; give new seeds"
        )
    work = Path(a.work) if a.work else run / "finals-seeds"
    work.mkdir(parents=True, exist_ok=True)
    tasks = load_tasks(protocol.tasks, max_train=protocol.max_train_examples, options=protocol.task_options)

    def stored(name: str) -> ModelReport:
        return ModelReport.from_dict(json.loads((run / "evaluate" / f"{name}.json").read_text()))

    if a.check is not None:
        if a.check not in protocol.seeds:
            raise SystemExit(f"--check {a.check}: not one of the run's seeds {protocol.seeds}")
        m = min(models, key=lambda m: float(m.get("params_m") or 1e9))
        t0 = time.perf_counter()
        rep = evaluate_encoder(
            load_encoder(str(run / m["model_dir"]), name=m["name"]),
            tasks,
            dataclasses.replace(protocol, seeds=[a.check]),
        )
        old = stored(m["name"])
        for t, res in rep.results.items():
            for r in res.runs:
                (o,) = [x for x in old.results[t].runs if x.seed == r.seed and x.lr == r.lr]
                same = o.test == r.test
                print(f"check {m['name']} {t} seed {r.seed}: {'same' if same else 'DIFFERENT'} "
                      f"({r.test[res.metric]:.4f} vs stored {o.test[res.metric]:.4f})")  # fmt: skip
                if not same:
                    raise SystemExit(
                        "a stored seed does not reproduce: the extra seeds would not be one protocol"
                    )
        print(f"check passed in {time.perf_counter() - t0:.0f} s")

    rows = []
    for m in models:
        name = m["name"]
        path = work / f"{name}-seeds-{'-'.join(map(str, extra))}.json"
        if extra and not path.exists():
            t0 = time.perf_counter()
            print(f"{name}: fine-tuning seeds {extra} ...", flush=True)
            rep = evaluate_encoder(
                load_encoder(str(run / m["model_dir"]), name=name),
                tasks,
                dataclasses.replace(protocol, seeds=extra),
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rep.to_dict(), indent=1) + "\n")
            tmp.replace(path)
            print(f"{name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        old = stored(name)
        new = ModelReport.from_dict(json.loads(path.read_text())) if extra else None
        merged = {}
        for task in tasks:
            res = old.results[task.name]
            if res.runs:
                merged[task.name] = summarize(
                    task, [*res.runs, *(new.results[task.name].runs if new else [])]
                )
            else:
                merged[task.name] = res
        suite = per_seed_suite(merged)
        vals = list(suite.values())
        se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else None
        stored_avg = 100 * statistics.fmean(r.test_mean for r in old.results.values())
        stored_seeds = [suite[s] for s in protocol.seeds]
        arch = Arch.parse(m["arch_id"]).to_dict()
        rows.append({"model": name, "arch": arch, "final": round(statistics.fmean(vals), 4),
                     "se": None if se is None else round(se, 4), "seeds": sorted(suite),
                     "per_seed": {str(s): round(v, 4) for s, v in suite.items()},
                     "stored_final": round(stored_avg, 4),
                     "stored_seeds_final": round(statistics.fmean(stored_seeds), 4)})  # fmt: skip
        print(f"{name:32} {m['arch_id']:24} stored {stored_avg:6.2f} -> {statistics.fmean(vals):6.2f} "
              f"over {len(vals)} seeds, se {se if se is None else round(se, 2)}  per seed "
              f"{', '.join(f'{v:.2f}' for v in vals)}")  # fmt: skip
    out = Path(a.out) if a.out else DATA / f"finals-{run.name}.json"
    table = {
        "what": f"suite average of every distinct distilled model of {run} ({', '.join(t.name for t in tasks)}), "
        f"fine-tuned with the run's seeds {protocol.seeds} and the extra seeds {extra} "
        "(benchmarks/finals_seeds.py); teacher and the undistilled truncated teacher left out",
        "teacher": cfg.teacher.name,
        "final": "suite average, points, mean over seeds",
        "se": "standard error of the suite average: stdev of the per-seed suite averages / sqrt(seeds)",
        "rows": rows,
    }
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
