"""Serving dtype: latency of the teacher and students in fp32 (`torch`) and bf16 (`torch-bf16`) side by side.

Per backend, the teacher and the students are timed together in `--rounds` fresh workers (order alternating,
`measure_side_by_side`); the table gives each model's median in fp32 and bf16, the bf16/fp32 ratio and the
speed-up over the teacher under each (random weights, which cost what trained ones do; what bf16 does to a
trained student is the fp32-vs-bf16 section of benchmarks/distill.py). Reports, does not assert.

    python benchmarks/serving_dtype.py                  # minilm-l6 and three student shapes, target settings
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="minilm-l6")
    ap.add_argument("--archs", default="L3-H384-A12-F1536,L2-H384-A12-F384,L3-H128-A2-F512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()

    from kdnas.latency import ModelSpec, TargetConfig, load_teacher_config, measure_side_by_side
    from kdnas.precision import cpu_bf16_units
    from kdnas.space.arch import Arch

    units = cpu_bf16_units()
    print(f"bf16 units: {', '.join(units) or 'none'}; {a.threads} threads, batch {a.batch}, sequence {a.seq}")
    if not units:
        sys.exit("this CPU has no bf16 units: torch-bf16 refuses to run here (bf16 would be emulated)")
    tcfg = load_teacher_config(a.teacher)
    archs = [Arch.parse(x) for x in a.archs.split(",")]
    names = ["teacher", *(x.arch_id for x in archs)]
    specs = [ModelSpec.for_config(tcfg), *(ModelSpec.for_arch(tcfg, x) for x in archs)]
    res: dict[str, dict[str, list[float]]] = {}
    for backend in ("torch", "torch-bf16"):
        target = TargetConfig(threads=a.threads, batch_size=a.batch, seq_lens=[a.seq], backend=backend,
                              attn_implementation="eager")  # fmt: skip
        sbs = measure_side_by_side(specs, target, rounds=a.rounds, progress=print)
        res[backend] = {"ms": sbs.median_ms, "speedup": sbs.speedup, "cv": sbs.speedup_cv}

    print("| model | fp32 ms | bf16 ms | bf16 / fp32 | speed-up fp32 | speed-up bf16 |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for i, n in enumerate(names):
        f, b = res["torch"]["ms"][i], res["torch-bf16"]["ms"][i]
        rows.append({"model": n, "fp32_ms": f, "bf16_ms": b, "ratio": b / f, "speedup_fp32": res["torch"]["speedup"][i],
                     "speedup_bf16": res["torch-bf16"]["speedup"][i]})  # fmt: skip
        print(f"| {n} | {f:.2f} | {b:.2f} | {b / f:.2f} | {res['torch']['speedup'][i]:.2f}x | "
              f"{res['torch-bf16']['speedup'][i]:.2f}x |")  # fmt: skip
    if a.out:
        Path(a.out).write_text(json.dumps({"units": units, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
