"""The prepared device check (issue 18): kdnas on one CUDA GPU, no network, in a few minutes.

1. Latency on the GPU (`torch-cuda`: CUDA events after warm-up, in isolated workers): the teacher and two
   students side by side at batch 1 and batch 32, sequence 128, fp32 and bf16 (`target.dtype`-style serving
   through autocast), with each student's speed-up over the teacher in the same rounds.
2. A short CUDA distillation (the real trainer: teacher forward on the GPU into the fp16 teacher cache,
   student trained on the GPU) in fp32 and in bf16 autocast: tokens/s and the loss after the same steps.
3. The CUDA unit tests (distillation and fine-tuning on the GPU against the CPU; skipped on machines
   without a GPU).

Teachers come from the kdnas cache when fetched there, else from their configs in
benchmarks/data/teacher_configs.json with random weights: latency and throughput do not depend on the
weights, and the distillation's loss figures are then a smoke check of numerics, not of quality.

    PYTHONPATH=. python3 benchmarks/gpu_check.py [--teacher mpnet-base] [--students L6-H384-A12-F1536,...]
    bash benchmarks/gpu_check.sh            # the same, plus the unit tests, logged under $OUT when set
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def teacher_config(name: str) -> tuple[Any, str]:
    """(HF config, where it came from): the fetched zoo teacher when present, else the shipped config."""
    from transformers import AutoConfig

    from kdnas.cache import cache_dir

    local = cache_dir() / "zoo" / name
    if (local / "config.json").is_file():
        return AutoConfig.from_pretrained(local), f"fetched weights ({local})"
    configs = json.loads((HERE / "data" / "teacher_configs.json").read_text())
    if name not in configs:
        sys.exit(f"gpu_check: unknown teacher {name!r}; known without a fetch: {', '.join(configs)}")
    d = dict(configs[name])
    return AutoConfig.for_model(d.pop("model_type"), **d), "random weights (shipped config; not fetched here)"


def latency(tcfg: Any, archs: list[Any], rounds: int, device: str) -> list[dict[str, Any]]:
    from kdnas.latency import ModelSpec, TargetConfig, measure_side_by_side

    specs = [ModelSpec.for_config(tcfg), *(ModelSpec.for_arch(tcfg, a) for a in archs)]
    names = ["teacher", *(a.arch_id for a in archs)]
    rows = []
    backends = ("torch-cuda", "torch-cuda-bf16") if device == "cuda" else ("torch",)
    for backend in backends:
        for batch in (1, 32):
            target = TargetConfig(device=device, backend=backend, batch_size=batch, seq_lens=[128], threads=4)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            sbs = measure_side_by_side(specs, target, rounds=rounds)
            took = time.perf_counter() - t0
            for i, name in enumerate(names):
                rows.append({"backend": backend, "batch": batch, "model": name, "ms": sbs.median_ms[i],
                             "speedup": sbs.speedup[i], "cv": sbs.speedup_cv[i]})  # fmt: skip
                print(f"  {backend:16} b{batch:<3} {name:24} {sbs.median_ms[i]:8.3f} ms  {sbs.speedup[i]:6.2f}x "
                      f"(cv {100 * sbs.speedup_cv[i]:.1f}%)", flush=True)  # fmt: skip
            print(f"  ({took:.0f} s for {rounds} rounds)", flush=True)
    return rows


def distillation(
    name: str, tcfg: Any, fetched: bool, arch: Any, steps: int, device: str
) -> list[dict[str, Any]]:
    import torch

    from kdnas.distill import DistillConfig, distill
    from kdnas.models.student import build_student

    if fetched:
        from kdnas.models.teacher import load_teacher

        teacher: Any = load_teacher(name)
    else:
        from transformers import AutoModel

        torch.manual_seed(0)
        teacher = AutoModel.from_config(tcfg, attn_implementation="eager")
    g = torch.Generator().manual_seed(0)
    rows_n, seq = 32 * steps, 128
    ids = torch.randint(1000, int(tcfg.vocab_size) - 1, (rows_n, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[rows_n // 2 :, seq // 2 :] = 0  # half the rows padded to half length, as real batches are
    out = []
    for dtype in ("fp32", "bf16"):
        cfg = DistillConfig(
            device=device, dtype=dtype, batch_size=32, losses={"hidden": 1.0, "relation": 1.0}
        )  # type: ignore[arg-type]
        student = build_student(tcfg, arch, seed=0)
        t0 = time.perf_counter()
        res = distill(teacher, student, (ids, mask), cfg, steps=steps, progress=False)
        wall = time.perf_counter() - t0
        row = {"dtype": dtype, "arch": arch.arch_id, "steps": res.steps, "tokens_per_s": res.tokens_per_s,
               "setup_s": res.setup_seconds, "wall_s": wall, "first_loss": res.history[0]["loss"],
               "final_loss": res.final_loss, "failed": res.failed}  # fmt: skip
        out.append(row)
        print(f"  distill {dtype}: {res.steps} steps, {res.tokens_per_s:,.0f} tokens/s (teacher cache "
              f"{res.setup_seconds:.1f} s), loss {row['first_loss']:.4f} -> {res.final_loss:.4f}"
              + (f"  FAILED: {res.failed}" if res.failed else ""), flush=True)  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="mpnet-base", help="zoo teacher (default mpnet-base)")
    ap.add_argument("--students", default="L6-H384-A12-F1536,L3-H384-A12-F1536",
                    help="comma-separated student archs of the teacher (default: a MiniLM-L6 and -L3 shape)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="distillation steps per dtype (batch 32, seq 128)")
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument(
        "--cpu", action="store_true", help="the same steps on the CPU, to check the script itself"
    )
    a = ap.parse_args()

    import torch

    device = "cpu" if a.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU here; run this on a machine with one (nothing was measured)")
        return 2
    from kdnas.space.arch import Arch

    tcfg, source = teacher_config(a.teacher)
    archs = [Arch.parse(s) for s in a.students.split(",")]
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (--cpu: a check of the script)"
    bf16 = torch.cuda.is_bf16_supported() if device == "cuda" else None
    print(f"gpu_check: {gpu}, torch {torch.__version__}, bf16 {bf16}; "
          f"teacher {a.teacher} ({source})", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    print("latency, side by side (median over rounds; speed-up vs the teacher in the same rounds):")
    lat = latency(tcfg, archs, a.rounds, device)
    print(f"distillation on {device} ({archs[-1].arch_id} from {a.teacher}):")
    dist = distillation(a.teacher, tcfg, source.startswith("fetched"), archs[-1], a.steps, device)
    for batch in (1, 32):
        best = [
            r
            for r in lat
            if r["batch"] == batch and r["model"] != "teacher" and r["backend"] in ("torch-cuda", "torch")
        ]
        print(f"b{batch} fp32: " + ", ".join(f"{r['model']} {r['speedup']:.2f}x" for r in best)
              + ("  (KD-NAS GPU bar: >= 2x at b32)" if batch == 32 else ""))  # fmt: skip
    print(f"gpu_check: done in {time.perf_counter() - t0:.0f} s")
    if a.out:
        Path(a.out).write_text(json.dumps({"gpu": gpu, "torch": torch.__version__, "teacher": a.teacher,
                                           "teacher_source": source, "latency": lat, "distill": dist}, indent=1))  # fmt: skip
    return 1 if any(r["failed"] for r in dist) else 0


if __name__ == "__main__":
    sys.exit(main())
