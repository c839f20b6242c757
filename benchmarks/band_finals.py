"""Finals inside one latency band: does the search's proxy order the students there as their final scores do?

The 7x student of the default run has been a 1-layer student in most runs (91-92% of the teacher on the suite),
while the one 2-layer student that reached 7x (L2-H320-A10-F320, eighteenth session, a faster host) kept 94.8%.
Whether the proxy or the search's exploration is to blame decides what to fix: if a 2-layer student in the band
scores higher but has a higher proxy loss, the proxy misranks depth; if the search never tried the 2-layer
students that score higher, exploration does. This distils each given arch on the run's full budget, fine-tunes
it on the run's suite with the run's protocol (`evaluate.for_students()`, the stages' own functions), scores the
search's short proxy (`search.proxy_readout` geomean, both read-outs kept) and the run's predicted speed-up, and
merges the run's own students, then prints the band's table and the Kendall tau of the proxy against the finals.

Resumable: each arch's distillation resumes from its checkpoint, and its row is written when it is done.

    KDNAS_CACHE=... python benchmarks/band_finals.py --run-dir runs/default-21 \\
        --archs L2-H192-A6-F768,L2-H256-A8-F512,L1-H320-A10-F1280 [--work RUN/band-finals] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from proxy_terms import short_proxy  # benchmarks/proxy_terms.py, next to this script

DATA = Path(__file__).parent / "data"


def task_scores(report: dict[str, Any]) -> dict[str, float]:
    """Test score per task of a stored ModelReport dict, in points."""
    from kdnas.evaluate.retention import ModelReport

    rep = ModelReport.from_dict(report)
    return {t: 100 * r.test_mean for t, r in rep.results.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="a finished run (its evaluate stage done)")
    ap.add_argument("--archs", required=True, help="comma-separated arch ids to distil and score")
    ap.add_argument("--work", help="where each arch's student and scores go (default RUN/band-finals)")
    ap.add_argument("--out", help="table (default benchmarks/data/band_finals-<run name>.json)")
    a = ap.parse_args(argv)

    from scipy.stats import kendalltau

    from kdnas import config
    from kdnas.evaluate.encoder import load_encoder
    from kdnas.evaluate.runner import evaluate_encoder, load_tasks
    from kdnas.latency.predictor import LatencyPredictor
    from kdnas.space.arch import Arch
    from kdnas.stages import RunContext
    from kdnas.stages.distill import distill_student

    run = Path(a.run_dir)
    if not (run / "evaluate" / "teacher.json").is_file():
        raise SystemExit(f"{run}: no evaluate/teacher.json; finish the run's evaluate stage first")
    cfg = config.load(str(run / "config.yaml"))
    ctx = RunContext(cfg=cfg, run_dir=run, progress=False)
    work = Path(a.work) if a.work else run / "band-finals"
    work.mkdir(parents=True, exist_ok=True)
    lat = json.loads((run / "latency.json").read_text())
    teacher_ms = float(lat["teacher_latency_ms"])
    predictor = LatencyPredictor.load(lat["predictor"]["path"])
    teacher = task_scores(json.loads((run / "evaluate" / "teacher.json").read_text()))
    teacher_avg = statistics.fmean(teacher.values())
    protocol = cfg.evaluate.for_students()
    tasks = load_tasks(protocol.tasks, max_train=protocol.max_train_examples, options=protocol.task_options)

    rows: list[dict[str, Any]] = []
    for res in sorted((run / "students").glob("*/result.json")):  # the run's own students
        name = res.parent.name
        ev = run / "evaluate" / f"{name}.json"
        if not ev.is_file():
            continue
        arch = Arch.from_dict(json.loads(res.read_text())["arch"])
        scores = task_scores(json.loads(ev.read_text()))
        rows.append({"name": name, "arch_id": arch.arch_id, "source": "run", "final": statistics.fmean(scores.values()),
                     "per_task": scores})  # fmt: skip
    for aid in [s.strip() for s in a.archs.split(",") if s.strip()]:
        arch = Arch.parse(aid if aid.count("-") >= 4 else f"{aid}-gelu")
        path = work / f"{arch.arch_id}.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
            continue
        t0 = time.perf_counter()
        print(f"{arch.arch_id}: full distillation ...", file=sys.stderr, flush=True)
        model_dir = distill_student(ctx, arch.arch_id, arch, work / arch.arch_id, distill=cfg.distill)
        t1 = time.perf_counter()
        print(f"{arch.arch_id}: fine-tuning on the suite ...", file=sys.stderr, flush=True)
        rep = evaluate_encoder(load_encoder(str(model_dir), name=arch.arch_id), tasks, protocol)
        row = {"name": arch.arch_id, "arch_id": arch.arch_id, "source": "band_finals",
               "final": 100 * statistics.fmean(r.test_mean for r in rep.results.values()),
               "per_task": {t: round(100 * r.test_mean, 2) for t, r in rep.results.items()},
               "distill_s": round(t1 - t0), "evaluate_s": round(time.perf_counter() - t1)}  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1) + "\n")
        tmp.replace(path)
        rows.append(row)
    for r in rows:
        arch = Arch.parse(r["arch_id"])
        r["predicted_speedup"] = round(teacher_ms / predictor.predict_ms(arch), 2)
        # as the retention table reads it: the mean over tasks of the student's score / the teacher's
        r["retention"] = statistics.fmean(r["per_task"][t] / teacher[t] for t in teacher)
        cached = work / f"proxy-{r['arch_id']}.json"
        if "proxy" not in r and cached.is_file():
            r["proxy"] = json.loads(cached.read_text())
        if "proxy" not in r:
            print(f"{r['arch_id']}: short proxy ...", file=sys.stderr, flush=True)
            r["proxy"] = short_proxy(ctx, arch)[0]
            cached.write_text(json.dumps(r["proxy"], indent=1) + "\n")

    out = Path(a.out) if a.out else DATA / f"band_finals-{run.name}.json"
    meta = {"run": str(run), "teacher": cfg.teacher.name, "teacher_suite_avg": round(teacher_avg, 4),
            "teacher_latency_ms": teacher_ms, "seed": cfg.seed, "proxy_tokens": cfg.distill.proxy_tokens,
            "final": "suite average, points (the run's tasks and fine-tuning seeds)",
            "predicted_speedup": "teacher_latency_ms / the run's latency predictor"}  # fmt: skip
    out.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    print(f"\nteacher {cfg.teacher.name}: suite {teacher_avg:.2f}, {teacher_ms:.2f} ms; table {out}")
    print(f"{'arch':<22} {'source':<12} {'pred. speed-up':>14} {'final':>7} {'retention':>9} "
          f"{'trained':>8} {'fitted':>8} {'geomean':>8}")  # fmt: skip
    for r in sorted(rows, key=lambda r: -r["final"]):
        p = r["proxy"]
        print(f"{r['arch_id']:<22} {r['source']:<12} {r['predicted_speedup']:>13.2f}x {r['final']:>7.2f} "
              f"{100 * r['retention']:>8.1f}% {p['trained']:>8.3f} {p['fitted']:>8.3f} {p['geomean']:>8.3f}")  # fmt: skip
    if len(rows) >= 3:
        finals = [r["final"] for r in rows]
        for k in ("trained", "fitted", "geomean"):
            tau = kendalltau([-r["proxy"][k] for r in rows], finals).statistic
            print(f"Kendall tau, {k} proxy vs final ({len(rows)} models): {tau:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
