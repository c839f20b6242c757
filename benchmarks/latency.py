"""Latency engine benchmark: repeatability, predictor accuracy, cost per measurement, backends vs a lower bound.

Run on a quiet machine (nothing else loading the CPU):
    python benchmarks/latency.py                 # full: minilm-l6, 2 threads (about 15 min)
    python benchmarks/latency.py --quick         # smoke test on a tiny random teacher (about a minute)
Figures go to stdout (and --json FILE); record them with the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

GEMM_CODE = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1])); n = int(sys.argv[2])
a, b = torch.randn(n, n), torch.randn(n, n)
for _ in range(3): a @ b
best = 0.0
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); a @ b; dt = time.perf_counter() - t
    best = max(best, 2 * n**3 / dt / 1e9)
print(json.dumps({"gflops": best}))
"""


def gemm_gflops(threads: int, n: int, reps: int) -> float:
    """Best fp32 GEMM rate of this machine with `threads` pinned, in a fresh process."""
    import os

    from kdnas.latency.worker import thread_env

    env = {**os.environ, **thread_env(threads)}
    out = subprocess.run(
        [sys.executable, "-c", GEMM_CODE, str(threads), str(n), str(reps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["gflops"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny teacher, few archs: checks the script works")
    ap.add_argument("--n-train", type=int, default=40, help="predictor design archs (default 40)")
    ap.add_argument(
        "--n-test", type=int, default=30, help="held-out archs for predictor accuracy (default 30)"
    )
    ap.add_argument("--predictor-max-time", type=float, default=3.0, help="time cap per predictor arch (s)")
    ap.add_argument("--teacher", default="minilm-l6")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", default="torch,onnxruntime,onnxruntime-int8")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    from kdnas.latency import LatencyCache, TargetConfig, calibrate, load_teacher_config, measure_many
    from kdnas.latency.api import measure_archs
    from kdnas.latency.features import forward_flops
    from kdnas.latency.predictor import default_archs
    from kdnas.latency.result import LatencyResult, Shape
    from kdnas.latency.spec import ModelSpec
    from kdnas.models.student import arch_of
    from kdnas.space.arch import Arch

    figures: dict[str, Any] = {"quick": args.quick, "threads": args.threads}
    if args.quick:
        from kdnas.testing import tiny_config

        tcfg = tiny_config(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)
        seq, big_batch, n_train, n_test, repeats, max_time = 16, 4, 10, 4, 2, 0.3
        students = [Arch(1, 64, 1, 128), Arch(2, 64, 2, 256), Arch(1, 128, 2, 256)]
        cost_arch = Arch(2, 128, 2, 256)
        gemm_n, gemm_reps = 256, 5
    else:
        tcfg = load_teacher_config(args.teacher)
        seq, big_batch, n_train, n_test, repeats, max_time = 128, 32, args.n_train, args.n_test, 5, 8.0
        students = [Arch(4, 256, 4, 1024), Arch(4, 384, 6, 1536), Arch(3, 192, 3, 768)]
        cost_arch = Arch(6, 384, 12, 1536)  # MiniLM-L6 size
        gemm_n, gemm_reps = 1024, 20
    target = TargetConfig(
        threads=args.threads, seq_lens=[seq], max_time_s=max_time, attn_implementation="auto"
    )
    backends = [b for b in args.backends.split(",") if b]
    print(
        f"# latency benchmark ({'quick' if args.quick else 'full'}), teacher {tcfg.model_type} "
        f"{arch_of(tcfg).describe()}, {args.threads} threads"
    )

    # 1. compute lower bound: this machine's fp32 GEMM rate, same threads, same run
    rate = gemm_gflops(args.threads, gemm_n, gemm_reps)
    figures["gemm_gflops"] = rate
    print(f"fp32 GEMM rate ({gemm_n}^3, {args.threads} threads): {rate:.1f} GFLOP/s")

    # 2. repeatability: one arch, `repeats` fresh worker processes, no cache
    rep_arch = students[0]
    meds = []
    for _ in range(repeats):
        (r,) = measure_archs(tcfg, [rep_arch], target, cache=False)
        meds.append(r.median_ms)
    cv = statistics.pstdev(meds) / statistics.mean(meds)
    figures["repeatability"] = {"arch": rep_arch.arch_id, "medians_ms": meds, "cv": cv}
    print(
        f"repeatability {rep_arch.describe()} b1/s{seq}, {repeats} fresh processes: medians "
        f"{', '.join(f'{m:.3f}' for m in meds)} ms, CV {cv:.2%} (target <= 3%)"
    )

    # 3. cost of one fresh measurement of a MiniLM-size student (worker start included)
    t = time.perf_counter()
    (r,) = measure_archs(tcfg, [cost_arch], target, cache=False)
    cost_s = time.perf_counter() - t
    figures["cost_s"] = cost_s
    print(
        f"cost: fresh measurement of {cost_arch.describe()}: {cost_s:.1f} s ({r.repeats} repeats, "
        f"median {r.median_ms:.2f} ms) (target <= 10 s)"
    )

    # 4. predictor: calibrate on n_train design archs, evaluate on n_test other archs
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        test_archs = [a for a in default_archs(tcfg, n_test * 2, seed=1)][:n_test]
        # the predictor models one attention kernel: eager (the faster here, see the backends table), with a
        # shorter time cap per arch so 70 archs fit in a few minutes
        ptarget = TargetConfig(
            threads=args.threads, seq_lens=[seq], max_time_s=min(max_time, args.predictor_max_time),
            attn_implementation="eager",
        )  # fmt: skip
        cal = calibrate(tcfg, "default", ptarget, n=n_train, test_archs=test_archs, cache=LatencyCache(tmp))
    acc = cal.accuracy
    figures["predictor"] = acc.__dict__
    print(
        f"predictor ({len(cal.train)} train archs): {acc.describe()} (targets >= 95% within ±10%, ρ >= 0.98)"
    )

    # 5. backends: teacher + students, b1 and b{big}, every backend, ratio to FLOPs / GEMM rate
    specs = [ModelSpec.for_config(tcfg)] + [ModelSpec.for_arch(tcfg, a) for a in students]
    archs = [arch_of(tcfg), *students]
    names = ["teacher", *[a.describe() for a in students]]
    shapes = [Shape(1, seq), Shape(big_batch, seq)]
    out = measure_many(specs, target, backends=backends, shapes=shapes, cache=False)
    rows = []
    print(
        f"\n{'model':28} {'backend':17} {'shape':9} {'median ms':>10} {'bound ms':>9} {'x bound':>8} "
        f"{'vs teacher':>10}"
    )
    for i, name in enumerate(names):
        for b in backends:
            for sh in shapes:
                res = out[(i, b, sh)]
                bound = (
                    forward_flops(archs[i], seq_len=sh.seq_len, batch_size=sh.batch_size) / (rate * 1e9) * 1e3
                )
                if not isinstance(res, LatencyResult):
                    print(f"{name:28} {b:17} {sh!s:9} failed: {res}")
                    continue
                tr = out[(0, b, sh)]
                speed = tr.median_ms / res.median_ms if isinstance(tr, LatencyResult) else float("nan")
                rows.append(
                    {
                        "model": name,
                        "backend": b,
                        "shape": str(sh),
                        "median_ms": res.median_ms,
                        "bound_ms": bound,
                        "ratio": res.median_ms / bound,
                        "speedup": speed,
                        "attn": res.attn,
                    }
                )
                print(
                    f"{name:28} {b:17} {sh!s:9} {res.median_ms:10.3f} {bound:9.3f} "
                    f"{res.median_ms / bound:8.2f} {speed:9.2f}x"
                )
    figures["backends"] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
