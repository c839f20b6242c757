"""Proxy fidelity: how well each cheap search fidelity ranks students like their final outcome.

Replays a finished run dir (`kdnas run` with `evaluate.baselines` and `evaluate.baseline_family` on, as
`benchmarks/headline.py` runs it): every model the run fully distilled and fine-tuned (the recommended students
and the hand-made baselines, depth 1 to the teacher's) has a final outcome, its average retention on the
suite. Each is then scored again by every candidate fidelity, in this process, with the run's own data split,
teacher cache and distillation settings:

- `short`: the search's proxy (distil.proxy_tokens, held-out KD loss); what the default search ranks by
- `short_lstsq`: the same student as `short`, its held-out loss read through least-squares projections fitted on
  the held-out split (as `flash` and `zero` are) instead of the projections trained with it
- `long`: the promoted candidates' proxy (search.long_proxy_factor x the tokens)
- `flash`: AutoDistill's layer-by-layer flash distillation on the same budget as `long`
- `flash_short`: the same on the short proxy's budget (what `distill.proxy_mode: flash` searches with)
- `recall`: held-out retrieval agreement (recall@10 vs the teacher) after the short proxy
- `zero`: no training at all: the inherited weights' held-out KD loss with least-squares projections
- `predictor`: leave-one-out linear fit of the final score on the arch's size (log params, layers, width)

and the Kendall tau and top-1 regret of each against the final outcome are printed. The table is written to
benchmarks/data/proxy_fidelity-<run name>.json (archs, fidelities, finals), so strategies and predictors can be
replayed on it offline.

    python benchmarks/proxy_fidelity.py --run-dir runs/headline
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kdnas import config
from kdnas.errors import KdnasError

LOWER_IS_BETTER = {"short", "short_lstsq", "long", "flash", "flash_short", "zero"}
KINDS = ("short", "short_lstsq", "long", "flash", "flash_short", "recall", "zero")
"""The fidelities scored per arch (`predictor` is fitted afterwards from the finals)."""


def _models(run_dir: Path, ret: Path, *, partial: bool = False) -> list[dict[str, Any]]:
    """(name, arch, final avg retention) of every distilled-and-evaluated model of the run (finals from the
    retention table `ret`); `partial`: every distilled model, final None until it has been scored."""
    table = json.loads(ret.read_text()) if ret.is_file() else {"rows": []}
    final = {r["model"]: r.get("avg_retention") for r in table["rows"]}
    out = []
    for group in ("students", "baselines"):
        for res in sorted((run_dir / group).glob("*/result.json")):
            r = json.loads(res.read_text())
            name = res.parent.name
            if r.get("arch") and (partial or final.get(name) is not None):
                out.append({"name": name, "arch": r["arch"], "final": final.get(name)})
    return out


def _fidelities(ctx: Any, arch: Any, tokens: int, long_tokens: int, which: set[str]) -> dict[str, float]:
    from kdnas.distill import distill, heldout_kd_loss
    from kdnas.distill.distiller import teacher_pooling
    from kdnas.evaluate.fidelity import embedding_fidelity
    from kdnas.models.pooling import Pooling

    cfg = ctx.cfg
    builder = ctx.evaluator_like()
    splits = ctx.corpus()
    cache = str(ctx.run_dir / "teacher_cache")
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    out["zero"] = heldout_kd_loss(ctx.teacher(), builder.build_student(arch), splits.heldout, cfg.distill,
                                  teacher_cache=cache)  # fmt: skip
    for name, tok, mode in (("short", tokens, "standard"), ("long", long_tokens, "standard"),
                            ("flash", long_tokens, "flash"), ("flash_short", tokens, "flash")):  # fmt: skip
        if name not in which and not (name == "short" and {"recall", "short_lstsq"} & which):
            continue
        student = builder.build_student(arch)
        res = distill(ctx.teacher(), student, splits.proxy, cfg.distill, tokens=tok, mode=mode,
                      teacher_cache=builder._cache, seed=cfg.seed, progress=False)  # fmt: skip
        out[name] = heldout_kd_loss(ctx.teacher(), student, splits.heldout, cfg.distill,
                                    projections=res.distiller if mode == "standard" else None,
                                    teacher_cache=cache)  # fmt: skip
        if name == "short" and "short_lstsq" in which:
            out["short_lstsq"] = heldout_kd_loss(ctx.teacher(), student, splits.heldout, cfg.distill,
                                                 projections=None, teacher_cache=cache)  # fmt: skip
        if name == "short" and "recall" in which:
            ids, mask = ctx.fidelity_passages(cfg.evaluate.fidelity_passages)
            pooling = teacher_pooling(ctx.teacher()) or Pooling(mode="mean")
            dense = dict(res.distiller.proj.items()).get("sentence")
            f = embedding_fidelity(
                ctx.teacher().model, student, ids, mask, pooling=pooling, student_dense=dense
            )
            out["recall"] = f.recall_at_10
    out["seconds"] = time.perf_counter() - t0
    return out


def _predictor_loo(rows: list[dict[str, Any]], params: dict[str, float]) -> list[float]:
    """Leave-one-out predictions of the final score from arch size features (a least-squares line)."""
    x = np.array([[1.0, math.log(params[r["name"]]), r["arch"]["num_layers"], r["arch"]["hidden_size"] / 100]
                  for r in rows])  # fmt: skip
    y = np.array([r["final"] for r in rows])
    out = []
    for i in range(len(rows)):
        keep = [j for j in range(len(rows)) if j != i]
        w, *_ = np.linalg.lstsq(x[keep], y[keep], rcond=1e-6)
        out.append(float(x[i] @ w))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/headline", help="a run dir whose evaluate stage has run")
    ap.add_argument("--out", help="table file (default benchmarks/data/proxy_fidelity-<run name>.json)")
    ap.add_argument("--fidelities", default=",".join(KINDS),
                    help="which to score (default all; long and flash cost 3x the short proxy each)")  # fmt: skip
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument(
        "--retention", help="the retention table the finals come from (default RUN_DIR/retention.json)"
    )
    ap.add_argument("--partial", action="store_true",
                    help="score the fidelities of every model distilled so far (the run may still be evaluating) "
                    "and stop; run again without it once the run has finished")  # fmt: skip
    args = ap.parse_args(argv)

    from scipy.stats import kendalltau

    from kdnas.space.arch import Arch
    from kdnas.space.cost import param_count
    from kdnas.stages import RunContext

    run_dir = Path(args.run_dir)
    ret = Path(args.retention) if args.retention else run_dir / "retention.json"
    if not args.partial and not ret.is_file():
        raise KdnasError(f"{ret} is missing: run the pipeline's evaluate stage there first (or --partial)")
    which = {k.strip() for k in args.fidelities.split(",") if k.strip()}
    if not which or which - set(KINDS):
        raise KdnasError(f"--fidelities {args.fidelities!r}: choose among {', '.join(KINDS)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = config.load(str(run_dir / "config.yaml"))
    rows = _models(run_dir, ret, partial=args.partial)
    if len(rows) < 4:
        raise KdnasError(
            f"{run_dir}: {len(rows)} distilled and evaluated models; need >= 4 (turn baselines on)"
        )
    out_path = Path(args.out or Path(__file__).parent / "data" / f"proxy_fidelity-{run_dir.name}.json")
    done = {r["name"]: r for r in json.loads(out_path.read_text())["rows"]} if out_path.is_file() else {}
    ctx = RunContext(cfg=cfg, run_dir=run_dir, progress=False)
    tokens = cfg.distill.proxy_tokens
    long_tokens = int(tokens * cfg.search.long_proxy_factor)
    params = {}
    for r in rows:
        arch = Arch.from_dict(r["arch"])
        params[r["name"]] = param_count(arch, ctx.teacher().config).total / 1e6
        have = dict((done.get(r["name"]) or {}).get("fidelities") or {})
        have.pop("predictor", None)
        r["fidelities"] = have
        todo = which - set(have)
        if not todo:
            continue
        print(
            f"scoring {r['name']} ({arch.arch_id}): {', '.join(sorted(todo))} ...",
            file=sys.stderr,
            flush=True,
        )
        got = _fidelities(ctx, arch, tokens, long_tokens, todo)
        got["seconds"] = got.get("seconds", 0.0) + have.get("seconds", 0.0)
        r["fidelities"] = {**have, **{k: v for k, v in got.items() if k in todo or k == "seconds"}}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps({"run": str(run_dir), "rows": rows}, indent=1) + "\n")
    if args.partial:
        print(
            f"scored {len(rows)} models so far: {out_path}; run again without --partial when the run is done"
        )
        return 0
    for r, p in zip(rows, _predictor_loo(rows, params)):
        r["fidelities"]["predictor"] = p
    meta = {"run": str(run_dir), "teacher": cfg.teacher.name, "proxy_tokens": tokens, "long_tokens": long_tokens,
            "seed": cfg.seed, "final": f"average retention on the run's suite ({ret})"}  # fmt: skip
    out_path.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")

    final = [r["final"] for r in rows]
    print(
        f"\nproxy fidelity on {run_dir} ({len(rows)} models, teacher {cfg.teacher.name}, proxy {tokens:,} tokens)"
    )
    kinds = (*KINDS, "predictor")
    print(f"{'model':<28} {'arch':<24} {'final':>7} " + " ".join(f"{k:>9}" for k in kinds))
    for r in sorted(rows, key=lambda r: -r["final"]):
        f = r["fidelities"]
        print(f"{r['name']:<28} {Arch.from_dict(r['arch']).arch_id:<24} {100 * r['final']:>6.1f}% "
              + " ".join(f"{f[k]:>9.4f}" if k in f else f"{'-':>9}" for k in kinds))  # fmt: skip
    print(f"\n{'fidelity':<10} {'models':>6} {'tau':>6} {'top-1 regret':>13}")
    for k in kinds:
        have = [i for i, r in enumerate(rows) if k in r["fidelities"]]
        if len(have) < 3:
            print(f"{k:<10} {len(have):>6}   (not scored)")
            continue
        score = [(-1 if k in LOWER_IS_BETTER else 1) * rows[i]["fidelities"][k] for i in have]
        fin = [final[i] for i in have]
        tau = float(kendalltau(score, fin).statistic)
        pick = max(range(len(have)), key=lambda j: score[j])
        print(f"{k:<10} {len(have):>6} {tau:>6.2f} {100 * (max(fin) - fin[pick]):>11.1f}pt")
    mean_s = sum(r["fidelities"].get("seconds", 0.0) for r in rows) / len(rows)
    print(f"\nscoring the fidelities of one arch took {mean_s:.0f} s on average; table: {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
