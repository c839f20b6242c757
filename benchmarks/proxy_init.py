"""How the loss projections start, and how that moves the search's short proxy (`distill.proj_init`).

Every arch is scored by the search's own short proxy (inherit from the teacher, distil `distill.proxy_tokens`,
held-out KD loss with the trained projections) twice in this process, on the same data and teacher cache:
with the projections at nn.Linear's random init, and with the least-squares init (fitted on the first 8,192
real tokens). Where a table gives the archs' final outcomes (full distillation + the suite), the Kendall tau and
top-1 regret of each against the final are printed side by side. The per-arch rows (loss, its sentence
component, seconds) go to benchmarks/data/proxy_init-<config name>.json.

    python benchmarks/proxy_init.py                      # the default recipe, the two stored minilm-l6 tables
    python benchmarks/proxy_init.py --config base --archs L2-H256-A4-F1024,L2-H768-A12-F1536 --tables ''
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from kdnas import config
from kdnas.errors import KdnasError

DATA = Path(__file__).parent / "data"
TABLES = ("proxy_fidelity-short-12archs.json", "finals-headline-family4.json")
INITS = ("random", "lstsq")


def _score(ctx: Any, arch: Any, init: str) -> dict[str, float]:
    from kdnas.distill import distill, heldout_kd_loss

    cfg = ctx.cfg
    ev = ctx.evaluator_like()
    splits = ctx.corpus()
    dcfg = dataclasses.replace(cfg.distill, proj_init=init)
    t0 = time.perf_counter()
    student = ev.build_student(arch)
    input_map = ev.input_map(arch)
    res = distill(ctx.teacher(), student, splits.proxy, dcfg, tokens=dcfg.proxy_tokens, teacher_cache=ev._cache,
                  seed=cfg.seed, progress=False, input_map=input_map)  # fmt: skip
    if res.failed:
        raise KdnasError(f"{arch.arch_id} ({init}): {res.failed}")
    comps: dict[str, float] = {}
    kd = heldout_kd_loss(ctx.teacher(), student, splits.heldout, dcfg, projections=res.distiller,
                         teacher_cache=ev._cache, input_map=input_map, components=comps)  # fmt: skip
    return {"kd": kd, **{f"kd_{k}": v for k, v in comps.items()}, "seconds": time.perf_counter() - t0}


def _tau_regret(score: list[float], final: list[float]) -> tuple[float, float]:
    from scipy.stats import kendalltau

    tau = float(kendalltau([-s for s in score], final).statistic)
    pick = min(range(len(score)), key=lambda i: score[i])
    return tau, max(final) - final[pick]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="default", help="recipe or YAML (default: the embedded default)")
    ap.add_argument(
        "--run-dir",
        help="scratch run dir for its corpus and teacher cache (default runs/proxy-init-<config>)",
    )
    ap.add_argument("--tables", default=",".join(TABLES),
                    help="comma list of benchmarks/data tables with rows {arch, final} (default: the two minilm-l6 tables)")  # fmt: skip
    ap.add_argument("--archs", default="", help="extra archs without a final, e.g. L2-H256-A4-F1024")
    ap.add_argument("--out", help="default benchmarks/data/proxy_init-<config name>.json")
    args = ap.parse_args(argv)

    from kdnas.space.arch import Arch
    from kdnas.stages import RunContext

    name = Path(args.config).stem
    cfg = config.load(None if args.config == "default" else args.config)
    run_dir = Path(args.run_dir or f"runs/proxy-init-{name}")
    run_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, Any]]] = {}
    for t in [t.strip() for t in args.tables.split(",") if t.strip()]:
        path = Path(t) if Path(t).is_file() else DATA / t
        if not path.is_file():
            raise KdnasError(f"--tables {t}: no such file (looked in {DATA} too)")
        tables[path.name] = json.loads(path.read_text())["rows"]
    archs: dict[str, Arch] = {}
    for rows in tables.values():
        for r in rows:
            a = Arch.from_dict(r["arch"])
            archs[a.arch_id] = a
    for text in [a.strip() for a in args.archs.split(",") if a.strip()]:
        a = Arch.parse(text)
        archs[a.arch_id] = a
    if not archs:
        raise KdnasError("no archs: give --tables with rows or --archs")

    ctx = RunContext(cfg=cfg, run_dir=run_dir, progress=False)
    out_path = Path(args.out or DATA / f"proxy_init-{name}.json")
    scores: dict[str, dict[str, dict[str, float]]] = {}
    print(
        f"teacher {cfg.teacher.name}, proxy {cfg.distill.proxy_tokens:,} tokens, seed {cfg.seed}, {len(archs)} archs"
    )
    print(f"{'arch':<24} " + " ".join(f"{i + ' kd':>11} {'sentence':>9} {'s':>5}" for i in INITS))
    for arch_id, arch in archs.items():
        scores[arch_id] = {init: _score(ctx, arch, init) for init in INITS}
        cells = []
        for init in INITS:
            s = scores[arch_id][init]
            cells.append(f"{s['kd']:>11.4f} {s.get('kd_sentence', float('nan')):>9.4f} {s['seconds']:>5.0f}")
        print(f"{arch_id:<24} " + " ".join(cells), flush=True)
        out_path.write_text(json.dumps({"config": args.config, "teacher": cfg.teacher.name, "seed": cfg.seed,
                                        "proxy_tokens": cfg.distill.proxy_tokens, "scores": scores},
                                       indent=1) + "\n")  # fmt: skip

    for tname, rows in tables.items():
        final = [float(r["final"]) for r in rows]
        ids = [Arch.from_dict(r["arch"]).arch_id for r in rows]
        print(f"\n{tname}: {len(rows)} models")
        print(f"{'init':<8} {'tau vs final':>12} {'top-1 regret':>13}")
        for init in INITS:
            tau, regret = _tau_regret([scores[i][init]["kd"] for i in ids], final)
            print(f"{init:<8} {tau:>12.3f} {regret:>13.3f}")
    print(f"\nrows: {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
