"""Candidate quality measured two ways in one short distillation: held-out KD loss vs the sentence-embedding gap
to the teacher (`search.quality`: 1 - recall@10, 1 - cosine), for archs of several depths at the run's proxy
budget, and how each ranks them. Reports, does not assert.

    python benchmarks/quality.py [--config default] [--archs L1-H384-A12-F768,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_ARCHS = (
    "L1-H384-A12-F768,L1-H384-A12-F1536,L2-H384-A12-F1152,L3-H384-A12-F1536,L4-H256-A4-F1024,L2-H256-A4-F512"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="default")
    ap.add_argument("--archs", default=DEFAULT_ARCHS)
    ap.add_argument(
        "--run-dir", default="runs/bench/quality", help="teacher cache and tokenised data go here"
    )
    ap.add_argument("--out")
    a = ap.parse_args()

    from scipy.stats import kendalltau

    from kdnas import config
    from kdnas.space.arch import Arch
    from kdnas.stages.context import RunContext

    cfg = config.load(
        a.config, {"search.quality": "recall", "target.backend": "fake"}
    )  # timing is not the point
    ctx = RunContext(cfg=cfg, run_dir=Path(a.run_dir), progress=False)
    ev = ctx.evaluator_like()
    rows = []
    for arch_id in a.archs.split(","):
        t0 = time.perf_counter()
        r = ev.evaluate(Arch.parse(arch_id), fidelity="short", tokens=cfg.distill.proxy_tokens)
        x = r.extra
        rows.append({"arch": arch_id, "kd": x["heldout_kd_loss"], "cosine": x["emb_cosine"],
                     "recall": x["recall_at_10"], "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(
            f"{arch_id:<24} kd {x['heldout_kd_loss']:.4f}  cosine {x['emb_cosine'] or float('nan'):.4f}  "
            f"recall@10 {x['recall_at_10']:.4f}  ({rows[-1]['seconds']} s)"
        )
    tau_rc, _ = kendalltau([-r["kd"] for r in rows], [r["recall"] for r in rows])
    tau_cc, _ = kendalltau([-r["kd"] for r in rows], [r["cosine"] or 0 for r in rows])
    print(f"\n{cfg.distill.proxy_tokens:,} proxy tokens, {cfg.search.quality_passages} held-out passages")
    print(f"Kendall tau, KD-loss ranking vs recall ranking: {tau_rc:.2f}; vs cosine ranking: {tau_cc:.2f}")
    for key, better in (("kd", min), ("recall", max), ("cosine", max)):
        best = better(rows, key=lambda r, k=key: r[k] if r[k] is not None else float("-inf"))
        print(f"  best by {key}: {best['arch']}")
    if a.out:
        Path(a.out).write_text(
            json.dumps({"rows": rows, "tau_kd_recall": tau_rc, "tau_kd_cosine": tau_cc}, indent=1)
        )


if __name__ == "__main__":
    main()
