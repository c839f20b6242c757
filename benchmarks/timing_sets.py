"""Does the set of models timed together move a speed-up? A run's final table, and each pair alone, alternating.

The final table of `kdnas run` times every scored model side by side in the same workers; the placement timed
each student beside its rivals, and the export stage times each exported student beside the teacher alone. The
same student read 7.28x in the placement, 6.48x in the final table and 7.38x at export (docs/latency.md). This
script separates the two explanations: the set of models (what else the worker holds and runs between two
readings) against the time (the host's state a few minutes later). It times the run's whole final-table set and
then each chosen model alone with the teacher, alternating `--repeats` times, so that both see the same machine.
Per model: its speed-up in the whole set and alone per repeat, the teacher's ms in each. Reports, does not assert.

    python benchmarks/timing_sets.py --run-dir runs/default [--models student-7x,student-3x] [--rounds 3]
        [--repeats 2] [--no-peer] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def final_table_models(run: Path, *, peer: bool) -> list[tuple[str, Path]]:
    """The models a run's evaluate stage timed, in its order: baselines, students, the static peer; a baseline
    the search recommended (its model dir a student's) is timed once, as the evaluate stage does."""
    from kdnas import run_dir as rd

    summary = json.loads((run / "summary.json").read_text())
    out: list[tuple[str, Path]] = []
    eol = run / rd.BASELINES / "every-other-layer" / "model"
    if (eol / "config.json").is_file():
        out.append(("every-other-layer", eol))
    for m in [*summary.get("baselines", []), *summary.get("students", [])]:
        d = run / m["model_dir"]
        if (d / "config.json").is_file() and all(d.resolve() != x.resolve() for _, x in out):
            out.append((m["name"], d))
    static = run / "peers" / "model2vec-static"
    if peer and (static / "config.json").is_file():
        out.append(("model2vec-static", static))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument(
        "--models", help="comma-separated names timed alone with the teacher (default: the students)"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true", help="leave the static peer out of the whole set")
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()

    from kdnas.config import load
    from kdnas.latency import ModelSpec, load_teacher_config, measure_side_by_side

    run = Path(a.run_dir)
    if not (run / "summary.json").is_file():
        raise SystemExit(f"{run}: no summary.json; pass a run dir whose distill stage finished")
    cfg = load(str(run / "config.yaml"))
    target = cfg.target
    teacher = load_teacher_config(cfg.teacher.name)
    models = final_table_models(run, peer=not a.no_peer)
    names = [n for n, _ in models]
    chosen = a.models.split(",") if a.models else [n for n in names if n.startswith("student-")]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SystemExit(f"--models: {', '.join(unknown)} not in {run}'s final table ({', '.join(names)})")
    t_spec = ModelSpec.for_config(teacher)
    specs = {n: ModelSpec.for_dir(d) for n, d in models}
    res: dict[str, dict[str, list[float]]] = {n: {"set": [], "alone": []} for n in chosen}
    t_ms: dict[str, list[float]] = {"set": [], "alone": []}
    for rep in range(a.repeats):
        order = ["set", "alone"] if rep % 2 == 0 else ["alone", "set"]
        for mode in order:
            t0 = time.perf_counter()
            if mode == "set":
                sbs = measure_side_by_side([t_spec, *specs.values()], target, rounds=a.rounds)
                for n in chosen:
                    res[n]["set"].append(sbs.speedup[1 + names.index(n)])
                t_ms["set"].append(sbs.median_ms[0])
            else:
                for n in chosen:
                    sbs = measure_side_by_side([t_spec, specs[n]], target, rounds=a.rounds)
                    res[n]["alone"].append(sbs.speedup[1])
                    t_ms["alone"].append(sbs.median_ms[0])
            print(f"  repeat {rep + 1}, {mode}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\n{run}: {len(names) + 1} models in the whole set (teacher, {', '.join(names)}); {a.rounds} rounds per "
          f"measurement, {a.repeats} measurements per mode, alternating; target {target.threads} threads, batch "
          f"{target.batch_size}, seq {target.seq_lens[0]}, backend {target.backend}")  # fmt: skip
    print(f"{'model':34} {'in the whole set':>24} {'alone with the teacher':>24} {'set / alone':>12}")
    for n in chosen:
        s, al = res[n]["set"], res[n]["alone"]
        ratio = statistics.fmean(s) / statistics.fmean(al)
        print(f"{n:34} {' / '.join(f'{x:.2f}x' for x in s):>24} {' / '.join(f'{x:.2f}x' for x in al):>24} "
              f"{ratio:>11.3f}")  # fmt: skip
    print(f"{'teacher ms':34} {' / '.join(f'{x:.1f}' for x in t_ms['set']):>24} "
          f"{' / '.join(f'{x:.1f}' for x in t_ms['alone'][:: max(1, len(chosen))]):>24}")  # fmt: skip
    if a.out:
        Path(a.out).write_text(json.dumps({"models": names, "speedups": res, "teacher_ms": t_ms}, indent=1))


if __name__ == "__main__":
    main()
