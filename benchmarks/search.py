"""Compare search strategies by replaying them against a recorded table of (arch, proxy KD loss, latency).

Record the table once with the real evaluator (slow: one short proxy distillation per arch, a long one for every
4th), then replay every strategy with 30 seeds at budgets 10, 20 and 40 evaluations (10 seeds were too few: random
search's HV@40 was 57.20 over seeds 0-9 and 56.05 over seeds 10-29, which moved kdnas's "evaluations to reach it"
from 21 to 17):

    python benchmarks/search.py --make-table recipes/default.yaml     # writes benchmarks/data/search_table.csv
    python benchmarks/search.py                                       # replays it; figures for docs/benchmarks.md
    python benchmarks/search.py --synthetic --quick                   # checks the script on a synthetic table

Reported: mean hypervolume (reference: the table's worst short loss and slowest latency, so every arch counts)
per strategy and budget; the evaluations each strategy needs for its mean hypervolume to reach random search's
at 40; Kendall tau between short- and long-proxy losses over the table rows that have both.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from kdnas.search.samplers import STRATEGIES
from kdnas.search.table import Table, kendall_tau_table, read_table, record_table, replay, write_table

DEFAULT_TABLE = Path(__file__).parent / "data" / "search_table.csv"


def make_table(
    config_ref: str, out: Path, n_archs: int, long_every: int, seed: int, proxy_tokens: int | None = None
) -> None:
    from kdnas import config
    from kdnas.latency import measure_archs
    from kdnas.search.evaluator import make_evaluator
    from kdnas.space.spaces import default_space

    cfg = config.load(config_ref, {"distill.proxy_tokens": proxy_tokens} if proxy_tokens else None)
    setup = make_evaluator(cfg, cfg.resolved_run_dir)
    space = default_space(setup.teacher_config)
    archs = space.sample_many(n_archs, seed)
    if len(archs) < min(n_archs, 150):
        sys.exit(f"the default space of this teacher has only {len(archs)} archs; the benchmark wants >= 150")
    print(
        f"recording {len(archs)} archs of the default space ({space.size()} in all) with teacher {cfg.teacher.name}"
    )
    t0 = time.time()
    # every latency in one worker first (one process start instead of one per arch); the evaluator then finds
    # them in the latency cache
    measure_archs(setup.teacher_config, archs, cfg.target)
    print(f"measured {len(archs)} latencies in {time.time() - t0:.0f} s", flush=True)

    def progress(i: int, arch: object) -> None:
        print(
            f"[{i + 1}/{len(archs)}] {getattr(arch, 'arch_id', arch)}  ({time.time() - t0:.0f} s)", flush=True
        )

    rows = record_table(
        archs,
        setup.evaluator,
        tokens=cfg.distill.proxy_tokens,
        long_factor=cfg.search.long_proxy_factor,
        long_every=long_every,
        progress=progress,
    )
    meta = {
        "teacher": cfg.teacher.name,
        "teacher_latency_ms": f"{setup.teacher_latency_ms:.6g}",
        "tokens_short": cfg.distill.proxy_tokens,
        "tokens_long": int(cfg.distill.proxy_tokens * cfg.search.long_proxy_factor),
        "target": f"{cfg.target.device}-{cfg.target.backend}-b{cfg.target.batch_size}-s{cfg.target.seq_lens[0]}",
        "sample_seed": seed,
        # which held-out loss the kd_loss columns hold; the replay reads them with the same reward scale
        "proxy_loss": cfg.search.proxy_loss,
    }
    print(f"wrote {write_table(out, rows, meta)}")


def synthetic_table(n_archs: int, seed: int) -> Table:
    """A table from the synthetic evaluator (for checking this script; never a measurement)."""
    from transformers import BertConfig

    from kdnas.search.table import Table as T
    from kdnas.search.testing import FakeEvaluator
    from kdnas.space.spaces import default_space

    tc = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    ev = FakeEvaluator.for_teacher(tc, seed=seed)
    archs = default_space(tc).sample_many(n_archs, seed)
    rows = record_table(archs, ev, tokens=1000, long_every=4)
    return T(
        {r["arch_id"]: r for r in rows}, {"teacher_latency_ms": str(ev.teacher_latency_ms), "synthetic": "1"}
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--make-table", metavar="CONFIG", help="record the table with the real evaluator of CONFIG"
    )
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    p.add_argument("--n-archs", type=int, default=160, help="archs to record (>= 150)")
    p.add_argument(
        "--long-every", type=int, default=4, help="every k-th recorded arch also gets the long proxy"
    )
    p.add_argument(
        "--synthetic", action="store_true", help="replay a synthetic table generated now (not measured)"
    )
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument(
        "--proxy-tokens", type=int, help="--make-table: short proxy tokens (default: the config's)"
    )
    p.add_argument("--budgets", default="10,20,40")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a search config key for every replayed strategy, e.g. predictor_ensemble=5 (repeatable)",
    )
    p.add_argument(
        "--quick", action="store_true", help="2 seeds, budgets 10,20, no bo (a check that it runs)"
    )
    args = p.parse_args(argv)
    if args.make_table:
        make_table(
            args.make_table, args.table, args.n_archs, args.long_every, seed=0, proxy_tokens=args.proxy_tokens
        )
        return 0
    strategies = args.strategies.split(",")
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = args.seeds
    if args.quick:
        seeds, budgets = 2, [10, 20]
        strategies = [s for s in strategies if s != "bo"]
    overrides = _overrides(args.set)
    table = synthetic_table(args.n_archs, 0) if args.synthetic else read_table(args.table)
    if args.synthetic:
        print("NOTE: synthetic table from the fake evaluator; these figures say nothing about real searches")
    ref = (
        max(r["kd_loss_short"] for r in table.rows.values()),
        max(r["latency_ms"] for r in table.rows.values()),
    )
    n_max = max(budgets)
    print(
        f"table: {len(table.rows)} archs, teacher {table.teacher_latency_ms:.3g} ms, "
        f"HV reference (kd_loss {ref[0]:.3f}, latency {ref[1]:.3g} ms); {seeds} seeds"
        + (f"; search {overrides}" if overrides else "")
    )
    curves: dict[str, np.ndarray] = {}
    for s in strategies:
        t0 = time.time()
        curves[s] = np.stack(
            [replay(table, s, seed=k, n_evals=n_max, reference=ref, **overrides) for k in range(seeds)]
        )
        print(f"  {s}: {time.time() - t0:.1f} s", file=sys.stderr)
    mean = {s: c.mean(axis=0) for s, c in curves.items()}
    head = "strategy  " + "".join(f"  HV@{b:<6}" for b in budgets) + "  evals to random@" + str(n_max)
    print(head)
    target = mean["random"][n_max - 1] if "random" in mean else None
    for s, m in mean.items():
        hv = "".join(f"  {m[b - 1]:<9.4f}" for b in budgets)
        std = curves[s][:, n_max - 1].std()
        reach = "-"
        if target is not None:
            hit = np.nonzero(m >= target - 1e-12)[0]
            reach = str(int(hit[0]) + 1) if len(hit) else f">{n_max}"
        print(f"{s:<9}{hv}  {reach:<6} (sd@{n_max} {std:.4f})")
    tau, n = kendall_tau_table(table)
    print(f"Kendall tau short vs long proxy: {'n/a' if tau is None else f'{tau:.3f}'} over {n} archs")
    return 0


def _overrides(items: list[str]) -> dict[str, object]:
    """`--set KEY=VALUE` pairs -> SearchConfig keyword arguments (values read as `kdnas run` overrides are)."""
    import dataclasses

    from kdnas.config import parse_overrides
    from kdnas.search.config import SearchConfig

    keys = {f.name for f in dataclasses.fields(SearchConfig)}
    out = parse_overrides([f"--{item}" for item in items])
    unknown = [k for k in out if k not in keys]
    if unknown:
        raise SystemExit(f"--set {', '.join(unknown)}: not a search config key (e.g. predictor_ensemble=5)")
    return out


if __name__ == "__main__":
    sys.exit(main())
