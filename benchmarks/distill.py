"""Benchmark of proxy distillation: throughput vs a plain reference loop, MFU, resume equivalence, quality.

    python benchmarks/distill.py            # full run (quiet machine; minutes)
    python benchmarks/distill.py --quick    # smoke check only (tiny budget; figures meaningless)

Throughput: tokens/s of kdnas (teacher cache, eager attention) against a reference loop in this script
(teacher forward every step, default attention as `AutoModel.from_pretrained` gives it, no cache) for three
students at about 1/2, 1/4 and 1/10 of the teacher's forward FLOPs; target >= 2x at <= 1/4 FLOPs. MFU is
3 x forward FLOPs per token x tokens/s over this machine's fp32 GEMM rate, measured here.
Resume: a run stopped after k steps in a subprocess and resumed in another must end at the same loss as an
uninterrupted run (relative difference <= 1e-4). Quality: inherited vs random init, same budget, held-out KD loss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

STUDENTS = {  # name -> arch; FLOPs ratios vs minilm-l6 (L6 H384 A12 F1536) are printed from kdnas.space.cost
    "1/2": "L=3,H=384,A=12,F=1536",
    "1/4": "L=3,H=256,A=4,F=1024",
    "1/10": "L=2,H=192,A=3,F=768",
}


def gemm_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """This machine's fp32 matmul rate (GFLOP/s) at the current torch thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    from kdnas.data.config import CorpusConfig
    from kdnas.data.corpus import build_corpus
    from kdnas.models.teacher import load_teacher

    teacher = load_teacher(args.teacher)
    ccfg = CorpusConfig(sources=[args.corpus], seq_len=args.seq_len, max_documents=args.max_documents)
    return teacher, build_corpus(ccfg, teacher.tokenizer, seed=0)


def cfg_of(args: argparse.Namespace) -> Any:
    from kdnas.distill import DistillConfig

    return DistillConfig(batch_size=args.batch_size, lr=5e-4, warmup_ratio=0.1)


def reference_loop(teacher_dir: Path, student_arch: str, data: Any, cfg: Any, steps: int) -> float:
    """Plain loop: default-attention teacher and student, teacher forward at every step. Returns tokens/s."""
    from transformers import AutoModel

    from kdnas.distill.distiller import Distiller
    from kdnas.distill.teacher_cache import run_teacher, teacher_info
    from kdnas.models.student import student_config
    from kdnas.space.arch import Arch

    teacher = AutoModel.from_pretrained(teacher_dir).eval()  # default attention implementation
    torch.manual_seed(0)
    student = AutoModel.from_config(student_config(teacher.config, Arch.parse(student_arch)))
    d = Distiller(student, teacher_info(teacher), cfg)
    items = d.needs().items(d.teacher)
    opt = torch.optim.AdamW(d.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ids, mask = data.input_ids, data.attention_mask
    g = torch.Generator().manual_seed(0)
    d.train()
    tokens, t0 = 0, 0.0
    for step in range(steps + 1):  # step 0 is a warm-up, not timed
        if step == 1:
            t0 = time.perf_counter()
        rows = torch.randint(0, len(ids), (cfg.batch_size,), generator=g)
        t_out = run_teacher(teacher, ids[rows], mask[rows], items)
        # variances from the batch: the reference has no pre-pass (it only scales the loss)
        var = {
            k: float(v[mask[rows].bool()].var(0).mean()) for k, v in t_out.items() if k.startswith("hidden")
        }
        loss, _ = d(ids[rows], mask[rows], t_out, var)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(d.parameters(), cfg.grad_clip)
        opt.step()
        if step >= 1:
            tokens += int(mask[rows].sum())
    return tokens / (time.perf_counter() - t0)


def throughput(args: argparse.Namespace, teacher: Any, splits: Any, gemm: float) -> list[dict[str, Any]]:
    from kdnas.distill import TeacherCache, distill
    from kdnas.models.inherit import inherit_student
    from kdnas.space.arch import Arch
    from kdnas.space.cost import config_forward_flops, forward_flops

    cfg = cfg_of(args)
    t_flops = config_forward_flops(teacher.config, seq_len=args.seq_len)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = TeacherCache(tmp, budget_mb=cfg.teacher_cache_mb)
        for name, spec in STUDENTS.items():
            arch = Arch.parse(spec)
            s_flops = forward_flops(arch, seq_len=args.seq_len, teacher_config=teacher.config)
            student = inherit_student(teacher.model, arch)
            distill(
                teacher, student, splits.proxy, cfg, steps=1, teacher_cache=cache, progress=False
            )  # warm-up
            student = inherit_student(teacher.model, arch)
            t0 = time.perf_counter()
            res = distill(
                teacher, student, splits.proxy, cfg, steps=args.steps, teacher_cache=cache, progress=False
            )
            wall = time.perf_counter() - t0
            ref = reference_loop(teacher.path, spec, splits.proxy, cfg, args.steps)
            mfu = 3 * s_flops / args.seq_len * res.tokens_per_s / (gemm * 1e9)
            rows.append({
                "student": name, "arch": spec, "flops_ratio": s_flops / t_flops,
                "kdnas_tokens_per_s": res.tokens_per_s, "kdnas_wall_tokens_per_s": res.tokens / wall,
                "reference_tokens_per_s": ref, "speedup": res.tokens_per_s / ref, "mfu": mfu,
                "cache_setup_s": res.setup_seconds,
            })  # fmt: skip
            r = rows[-1]
            print(f"  {name:>5} {spec:<24} flops {r['flops_ratio']:.3f}  kdnas {r['kdnas_tokens_per_s']:8.0f} tok/s  "
                  f"reference {ref:8.0f} tok/s  x{r['speedup']:.2f}  MFU {mfu:.1%}", flush=True)  # fmt: skip
    return rows


def child(args: argparse.Namespace) -> None:
    """One resumable run in its own process (for the resume check)."""
    from kdnas.distill import distill
    from kdnas.models.inherit import inherit_student
    from kdnas.space.arch import Arch

    teacher, splits = load(args)
    student = inherit_student(teacher.model, Arch.parse(STUDENTS["1/4"]))
    res = distill(
        teacher, student, splits.proxy, cfg_of(args), steps=args.resume_steps, out_dir=args.child_out,
        resume=args.child_resume, stop_after_steps=args.child_max_steps, progress=False,
    )  # fmt: skip
    print(json.dumps({"final_loss": res.final_loss, "steps": res.steps}))


def resume_check(args: argparse.Namespace) -> dict[str, Any]:
    base = [sys.executable, __file__, *_forward(args)]

    def run(out: str, *extra: str) -> dict[str, Any]:
        p = subprocess.run([*base, "--child-out", out, *extra], capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise SystemExit(f"resume child failed:\n{p.stderr[-3000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as tmp:
        full = run(f"{tmp}/full")
        k = args.resume_steps // 2
        part = run(f"{tmp}/killed", "--child-max-steps", str(k))
        resumed = run(f"{tmp}/killed", "--child-resume")
    rel = abs(resumed["final_loss"] - full["final_loss"]) / abs(full["final_loss"])
    out = {"uninterrupted": full["final_loss"], "resumed": resumed["final_loss"], "stopped_at": part["steps"],
           "relative_difference": rel, "ok": rel <= 1e-4}  # fmt: skip
    print(f"  stopped at step {part['steps']}/{args.resume_steps}, resumed in a new process: final loss "
          f"{resumed['final_loss']:.6f} vs {full['final_loss']:.6f} uninterrupted (rel. diff {rel:.1e}) "
          f"{'OK' if out['ok'] else 'FAIL'}")  # fmt: skip
    return out


def quality(args: argparse.Namespace, teacher: Any, splits: Any) -> dict[str, Any]:
    from kdnas.distill import distill, heldout_kd_loss
    from kdnas.models.inherit import inherit_student
    from kdnas.models.student import build_student
    from kdnas.space.arch import Arch

    cfg = cfg_of(args)
    arch = Arch.parse(STUDENTS["1/4"])
    out: dict[str, Any] = {"arch": STUDENTS["1/4"], "tokens": args.quality_tokens}
    for init in ("inherit", "random"):
        student = inherit_student(teacher.model, arch) if init == "inherit" else build_student(teacher.config, arch,
                                                                                                seed=0)  # fmt: skip
        res = distill(teacher, student, splits.proxy, cfg, tokens=args.quality_tokens, progress=False)
        out[init] = {
            "train_final_loss": res.final_loss,
            "heldout_kd_loss": heldout_kd_loss(
                teacher, student, splits.heldout, cfg, projections=res.distiller
            ),
            "heldout_kd_loss_lstsq": heldout_kd_loss(teacher, student, splits.heldout, cfg),
        }
        print(f"  {init:<8} held-out KD loss {out[init]['heldout_kd_loss']:.4f} (least-squares projection "
              f"{out[init]['heldout_kd_loss_lstsq']:.4f}), train {res.final_loss:.4f}", flush=True)  # fmt: skip
    out["inherited_better"] = out["inherit"]["heldout_kd_loss"] < out["random"]["heldout_kd_loss"]
    return out


def precision(args: argparse.Namespace, teacher: Any, splits: Any) -> dict[str, Any]:
    """fp32 vs bf16 autocast, same student, same data and seed, one process: training tokens/s (teacher cache
    built per dtype, its setup time apart), the loss curve at a few points and the held-out KD loss (scored
    in fp32 for both, so only the training precision differs)."""
    import dataclasses

    from kdnas.distill import distill, heldout_kd_loss
    from kdnas.models.inherit import inherit_student
    from kdnas.precision import bf16_supported, cpu_bf16_units
    from kdnas.space.arch import Arch

    units = cpu_bf16_units()
    out: dict[str, Any] = {"arch": STUDENTS["1/4"], "tokens": args.quality_tokens, "cpu_bf16_units": units}
    if not bf16_supported("cpu"):
        print(
            "  this CPU has no bf16 units (flags amx_bf16 / avx512_bf16): bf16 is not used here, nothing to compare"
        )
        return out
    print(f"  bf16 units: {', '.join(units)}")
    base = cfg_of(args)
    for dtype in ("fp32", "bf16"):
        cfg = dataclasses.replace(base, dtype=dtype)
        student = inherit_student(teacher.model, Arch.parse(STUDENTS["1/4"]))
        with tempfile.TemporaryDirectory() as tmp:
            res = distill(teacher, student, splits.proxy, cfg, tokens=args.quality_tokens, teacher_cache=tmp,
                          seed=0, progress=False)  # fmt: skip
        held = heldout_kd_loss(teacher, student, splits.heldout, dataclasses.replace(base, dtype="fp32"),
                               projections=res.distiller)  # fmt: skip
        curve = [
            round(float(h["loss"]), 4) for h in res.history[:: max(1, len(res.history) // 5)] if "loss" in h
        ]
        out[dtype] = {"tokens_per_s": res.tokens_per_s, "cache_setup_s": res.setup_seconds,
                      "train_final_loss": res.final_loss, "heldout_kd_loss": held, "curve": curve}  # fmt: skip
        print(f"  {dtype}: {res.tokens_per_s:8.0f} tok/s (teacher cache {res.setup_seconds:.1f} s), final train "
              f"loss {res.final_loss:.4f}, held-out KD loss {held:.4f}, curve {curve}", flush=True)  # fmt: skip
    f, b = out["fp32"], out["bf16"]
    out["speedup"] = b["tokens_per_s"] / f["tokens_per_s"]
    out["heldout_rel_diff"] = (b["heldout_kd_loss"] - f["heldout_kd_loss"]) / f["heldout_kd_loss"]
    print(
        f"  bf16 / fp32: x{out['speedup']:.2f} tokens/s, held-out KD loss {100 * out['heldout_rel_diff']:+.2f}%"
    )
    return out


def _forward(args: argparse.Namespace) -> list[str]:
    """Options a resume child needs to rebuild the same run."""
    return ["--teacher", args.teacher, "--corpus", args.corpus, "--seq-len", str(args.seq_len), "--batch-size",
            str(args.batch_size), "--max-documents", str(args.max_documents), "--resume-steps",
            str(args.resume_steps), "--threads", str(torch.get_num_threads())]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="smoke check: tiny budgets, figures are not meaningful"
    )
    p.add_argument("--teacher", default="minilm-l6")
    p.add_argument("--corpus", default="wiki-vital-en")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-documents", type=int, default=2000)
    p.add_argument("--steps", type=int, default=30, help="timed steps per throughput measurement")
    p.add_argument("--resume-steps", type=int, default=40)
    p.add_argument("--quality-tokens", type=int, default=150_000)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--only", choices=["precision"], help="run one section only")
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--child-max-steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-resume", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick and not args.child_out:
        args.seq_len, args.batch_size, args.max_documents = 64, 8, 150
        args.steps, args.resume_steps, args.quality_tokens = 3, 6, 2_000
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.child_out:
        child(args)
        return

    gemm = gemm_gflops(seconds=0.3 if args.quick else 2.0)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"fp32 GEMM {gemm:.1f} GFLOP/s{'  (--quick: figures not meaningful)' if args.quick else ''}")  # fmt: skip
    teacher, splits = load(args)
    if args.only == "precision":
        print(f"precision ({args.quality_tokens} tokens, {STUDENTS['1/4']}):")
        prec = precision(args, teacher, splits)
        if args.out:
            Path(args.out).write_text(json.dumps({"precision": prec}, indent=1))
        return
    print(f"teacher {args.teacher}, proxy rows {len(splits.proxy.input_ids)} x {args.seq_len} tokens, "
          f"batch {args.batch_size}")  # fmt: skip
    print("throughput (proxy distillation, training loop only):")
    thr = throughput(args, teacher, splits, gemm)
    print("resume equivalence:")
    res = resume_check(args)
    print(f"quality sanity ({args.quality_tokens} tokens, {STUDENTS['1/4']}):")
    qual = quality(args, teacher, splits)
    print(f"precision ({args.quality_tokens} tokens, {STUDENTS['1/4']}):")
    prec = precision(args, teacher, splits)
    result = {"machine": {"processor": platform.processor(), "threads": torch.get_num_threads(),
                          "gemm_gflops": gemm, "torch": torch.__version__},
              "quick": args.quick, "seq_len": args.seq_len, "batch_size": args.batch_size,
              "throughput": thr, "resume": res, "quality": qual, "precision": prec}  # fmt: skip
    small = [r for r in thr if r["flops_ratio"] <= 0.26]
    print(
        f"target >= 2x at <= 1/4 FLOPs: {'met' if small and all(r['speedup'] >= 2 for r in small) else 'NOT met'}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if not math.isfinite(qual["inherit"]["heldout_kd_loss"]):
        raise SystemExit("quality check produced a non-finite loss")


if __name__ == "__main__":
    main()
