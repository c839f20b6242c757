"""Serving dtype: latency of the teacher and students in fp32 (`torch`) and bf16 (`torch-bf16`) side by side.

Per backend, the teacher and the students are timed together in `--rounds` fresh workers (order alternating,
`measure_side_by_side`); the table gives each model's median in fp32 and bf16, the bf16/fp32 ratio and the
speed-up over the teacher under each. A last column checks what bf16 does to the output: mean cosine of the
mean-pooled last hidden state, bf16 against fp32, on random token ids (same weights). Reports, does not assert.

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

    import torch

    from kdnas.latency import ModelSpec, TargetConfig, load_teacher_config, measure_side_by_side
    from kdnas.models.student import build_student
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

    from transformers import AutoModel

    torch.manual_seed(0)
    ids = torch.randint(5, 30000, (8, a.seq))
    mask = torch.ones_like(ids)
    cos: list[float] = []
    for spec_arch in [None, *archs]:
        model = AutoModel.from_config(tcfg) if spec_arch is None else build_student(tcfg, spec_arch, seed=0)
        model.eval()
        with torch.inference_mode():
            ref = model(input_ids=ids, attention_mask=mask).last_hidden_state.mean(1)
            low = (
                model.to(torch.bfloat16)(input_ids=ids, attention_mask=mask).last_hidden_state.float().mean(1)
            )
        cos.append(float(torch.nn.functional.cosine_similarity(ref, low).mean()))

    print(
        "| model | fp32 ms | bf16 ms | bf16 / fp32 | speed-up fp32 | speed-up bf16 | output cosine bf16 vs fp32 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for i, n in enumerate(names):
        f, b = res["torch"]["ms"][i], res["torch-bf16"]["ms"][i]
        rows.append({"model": n, "fp32_ms": f, "bf16_ms": b, "ratio": b / f, "speedup_fp32": res["torch"]["speedup"][i],
                     "speedup_bf16": res["torch-bf16"]["speedup"][i], "cosine": cos[i]})  # fmt: skip
        print(f"| {n} | {f:.2f} | {b:.2f} | {b / f:.2f} | {res['torch']['speedup'][i]:.2f}x | "
              f"{res['torch-bf16']['speedup'][i]:.2f}x | {cos[i]:.5f} |")  # fmt: skip
    if a.out:
        Path(a.out).write_text(json.dumps({"units": units, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
