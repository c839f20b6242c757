"""Which terms of the held-out KD loss rank proxy-distilled students like their final suite scores?

The search ranks each candidate by its held-out KD loss after the short proxy (`search.proxy_loss`). That loss is
a weighted sum of terms on the student's token states (hidden, relation) and on its pooled sentence embedding
(sentence x10, similarity x0.1), read through trained or fitted projections (`search.proxy_readout`). This scores
every arch of a finals table (`benchmarks/data/finals-minilm-l6.json`: archs fully distilled and fine-tuned under
the current protocol, gathered from several runs) with the search's own short proxy, keeps every term per
read-out, and prints the Kendall tau against the finals of each way to sum and read them: over every arch, over
the search space (without BERT-small, wider than the teacher) and inside the 7x band.

    KDNAS_CACHE=... python benchmarks/proxy_terms.py --run-dir runs/default-21 [--score]
        [--table benchmarks/data/proxy_terms-minilm-l6.json] [--finals benchmarks/data/finals-minilm-l6.json]

--score distils the archs the table lacks (resumable, ~30-190 s each here) with the run's config and data; without
it the table is read as it is (offline, seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
STATES = ("hidden", "relation")
WEIGHTS = {"hidden": 1.0, "relation": 1.0, "sentence": 10.0, "similarity": 0.1}


def short_proxy(ctx: Any, arch: Any) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The search's short proxy of `arch` on the run `ctx` (its student, data and steps): the held-out loss per
    read-out and their geometric mean, and every term (unweighted) per read-out."""
    from kdnas.distill import distill, heldout_kd_losses

    cfg, ev = ctx.cfg, ctx.evaluator_like()
    student, imap = ev.build_student(arch), ev.input_map(arch)
    res = distill(ctx.teacher(), student, ev.proxy, cfg.distill, tokens=cfg.distill.proxy_tokens,
                  teacher_cache=ev._cache, seed=cfg.seed, progress=False, input_map=imap)  # fmt: skip
    comps: dict[str, dict[str, float]] = {}
    got = heldout_kd_losses(ctx.teacher(), student, ev.heldout, cfg.distill,
                            readouts={"trained": res.distiller, "fitted": None}, teacher_cache=ev._cache,
                            input_map=imap, components=comps)  # fmt: skip
    return {**got, "geomean": math.sqrt(got["trained"] * got["fitted"])}, comps


def score(run: Path, archs: list[str], table: Path) -> list[dict[str, Any]]:
    """Short proxy of each arch missing from `table`, every term per read-out; the table is written per arch."""
    from kdnas import config
    from kdnas.space.arch import Arch
    from kdnas.stages import RunContext

    rows = json.loads(table.read_text())["rows"] if table.is_file() else []
    have = {r["arch_id"] for r in rows}
    cfg = config.load(str(run / "config.yaml"))
    if cfg.distill.losses != WEIGHTS:
        raise SystemExit(f"{run}: distill.losses {cfg.distill.losses} is not the default {WEIGHTS}")
    ctx = RunContext(cfg=cfg, run_dir=run, progress=False)
    for aid in archs:
        if aid in have:
            continue
        arch = Arch.parse(aid)
        print(f"{aid}: short proxy ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        got, comps = short_proxy(ctx, arch)
        rows.append(
            {"arch_id": aid, **got, "components": comps, "seconds": round(time.perf_counter() - t0, 1)}
        )
        meta = {"what": "short-proxy held-out KD loss of each arch per read-out, and every term (unweighted)",
                "run": str(run), "teacher": cfg.teacher.name, "proxy_tokens": cfg.distill.proxy_tokens,
                "seed": cfg.seed, "weights": WEIGHTS}  # fmt: skip
        table.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    return rows


def _sum(r: dict[str, Any], readout: str, terms: tuple[str, ...]) -> float:
    c = r["components"][readout]
    return sum(WEIGHTS[k] * c[k] for k in terms if k in c)


FIDELITIES: dict[str, Callable[[dict[str, Any]], float]] = {
    "full, trained": lambda r: r["trained"],
    "full, fitted": lambda r: r["fitted"],
    "full, geomean (kdnas before 2026-12-07)": lambda r: r["geomean"],
    "states, trained": lambda r: _sum(r, "trained", STATES),
    "states, fitted": lambda r: _sum(r, "fitted", STATES),
    "states, geomean (search.proxy_loss: states)": lambda r: math.sqrt(
        _sum(r, "trained", STATES) * _sum(r, "fitted", STATES)
    ),
    "hidden only, fitted": lambda r: _sum(r, "fitted", ("hidden",)),
    "sentence only, fitted": lambda r: _sum(r, "fitted", ("sentence",)),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--run-dir", default="runs/default-21", help="the run whose config and data the proxy uses"
    )
    ap.add_argument("--finals", default=str(DATA / "finals-minilm-l6.json"))
    ap.add_argument("--table", default=str(DATA / "proxy_terms-minilm-l6.json"))
    ap.add_argument(
        "--archs", default="", help="more arch ids to score besides the finals' (comma-separated)"
    )
    ap.add_argument("--score", action="store_true", help="distil the archs the table lacks first")
    a = ap.parse_args(argv)

    from scipy.stats import kendalltau

    finals = json.loads(Path(a.finals).read_text())
    final = {r["arch_id"]: r["final"] for r in finals["rows"]}
    table = Path(a.table)
    if a.score:
        extra = [s.strip() for s in a.archs.split(",") if s.strip()]
        rows = score(Path(a.run_dir), [*final, *extra], table)
    elif table.is_file():
        rows = json.loads(table.read_text())["rows"]
    else:
        raise SystemExit(f"{table} is missing: run with --score first")
    by = {r["arch_id"]: r for r in rows}
    band = set(finals.get("band_7x", []))
    groups = {
        "every arch with a final": [k for k in final if k in by],
        "inside the search space (no BERT-small)": [k for k in final if k in by and "-H512-" not in k],
        "the 7x band": [k for k in final if k in by and k in band],
    }
    print(f"{len(rows)} archs scored, {len(final)} finals ({finals.get('teacher')})")
    print(
        f"{'arch':<24} {'final':>6} {'full geo':>9} {'states geo':>11} {'hidden fit':>11} {'sent. fit':>10}"
    )
    for k in sorted(groups["every arch with a final"], key=lambda k: -final[k]):
        r = by[k]
        print(f"{k:<24} {final[k]:>6.2f} {r['geomean']:>9.3f} "
              f"{FIDELITIES['states, geomean (search.proxy_loss: states)'](r):>11.3f} "
              f"{_sum(r, 'fitted', ('hidden',)):>11.3f} {_sum(r, 'fitted', ('sentence',)):>10.3f}")  # fmt: skip
    print()
    print(f"{'Kendall tau vs final':<46}" + "".join(f"{g[:22]:>24}" for g in groups))
    print(f"{'(models)':<46}" + "".join(f"{len(ks):>24}" for ks in groups.values()))
    for name, fn in FIDELITIES.items():
        taus = []
        for ks in groups.values():
            taus.append(
                kendalltau([-fn(by[k]) for k in ks], [final[k] for k in ks]).statistic
                if len(ks) > 2
                else math.nan
            )
        print(f"{name:<46}" + "".join(f"{t:>24.3f}" for t in taus))
    ratio = sorted(r["geomean"] / FIDELITIES["states, geomean (search.proxy_loss: states)"](r) for r in rows)
    print(f"\nfull / states loss over {len(ratio)} archs: median {ratio[len(ratio) // 2]:.2f}, "
          f"range {ratio[0]:.2f}-{ratio[-1]:.2f} (search.reward_loss_scale's default)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
