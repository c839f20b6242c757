"""A headline run's table from the models scored so far, when its evaluate stage cannot finish in one sitting.

    python benchmarks/headline_partial.py runs/headline-family --score student-3x,tinybert-4L-312H
    python benchmarks/headline_partial.py runs/headline-family            # the table only

`--score` fine-tunes the named models in that order with the evaluate stage's own code and files
(`<run>/evaluate/<name>.json`, which a resumed run keeps: "scored before a kill"). The table is kdnas's own
retention table over every model scored so far, with the side-by-side speed-ups the run measured (the baselines of
equal-latency budgets and the searched students from the same placement rounds, the other baselines from the
latency stage) and the fidelity on the run's held-out passages. Writes <run>/retention-partial.json and .md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kdnas import config
from kdnas import run_dir as rd
from kdnas._io import write_json_atomic
from kdnas.evaluate.retention import ModelReport, retention_table
from kdnas.evaluate.runner import evaluate_encoder, load_tasks
from kdnas.stages.context import RunContext
from kdnas.stages.evaluate import _dir_encoder, fidelity


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--score", default="", help="models to fine-tune first, in this order (comma-separated)")
    args = ap.parse_args(argv)
    run = Path(args.run_dir)
    cfg = config.load(str(run / rd.CONFIG))
    ctx = RunContext(cfg=cfg, run_dir=run, progress=False)
    dist = json.loads(rd.marker(run, "distill").read_text())["summary"]
    dirs = {m["name"]: run / m["model_dir"] for m in [*dist["baselines"], *dist["students"]]}
    dirs["every-other-layer"] = run / "baselines" / "every-other-layer" / "model"
    ev = cfg.evaluate
    order = [n for n in args.score.split(",") if n]
    if order:
        tasks = load_tasks(ev.tasks, max_train=ev.max_train_examples, options=ev.task_options)
    for name in order:
        out = ctx.path(rd.EVALUATE, f"{name}.json")
        if out.exists():
            print(f"{name}: scored before")
            continue
        print(f"fine-tuning {name}", flush=True)
        report = evaluate_encoder(_dir_encoder(str(dirs[name]), name)(), tasks, ev.for_students())
        report.name = name
        write_json_atomic(out, report.to_dict())

    reports = {p.stem: ModelReport.from_dict(json.loads(p.read_text())) for p in sorted(ctx.path(rd.EVALUATE).glob("*.json"))}  # fmt: skip
    speed: dict[str, float] = {"teacher": 1.0}
    for name, b in (
        json.loads(rd.marker(run, "latency").read_text())["summary"].get("baselines") or {}
    ).items():
        if isinstance(b, dict):
            speed[name] = b["speedup"]
    place = json.loads((run / "placement.json").read_text())
    for label, v in place["budgets"].items():  # the baselines timed in the same rounds as the candidates
        if label.startswith("=") and v.get("baseline_speedup"):
            speed[label[1:]] = v["baseline_speedup"]
    arch_speed = {c["arch_id"]: c["speedup"] for v in place["budgets"].values() for c in v["candidates"] if c["speedup"]}  # fmt: skip
    for m in dist["students"]:
        if arch_speed.get(m["arch_id"]):
            speed[m["name"]] = arch_speed[m["arch_id"]]
    t_ms = json.loads((run / rd.SEARCH).read_text())["teacher_latency_ms"]
    for name, r in reports.items():
        if name != "teacher" and r.fidelity is None and name in dirs and dirs[name].is_dir():
            r.fidelity = fidelity(ctx, dirs[name], passages=ev.fidelity_passages)
    table = retention_table(reports["teacher"], [r for n, r in reports.items() if n != "teacher"],
                            latency_ms={n: t_ms / s for n, s in speed.items()}, speedup=speed)  # fmt: skip
    table.write_json(run / "retention-partial.json")
    table.write_markdown(run / "retention-partial.md")
    print(table.to_markdown())
    for row in table.to_dict()["rows"]:
        sc = row["scores"]
        print(f"{row['model']:<28} {row.get('speedup') or 0:6.2f}x  suite avg {100 * sum(sc.values()) / len(sc):6.2f}  "
              f"retention {100 * row['avg_retention']:5.1f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
