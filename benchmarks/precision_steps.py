"""fp32 against bf16 autocast on this CPU, per teacher: what the teacher cache and the fine-tuning cost per step.

For each teacher, in one process, the two dtypes are timed alternately (`--repeats` rounds of each, fp32 first
then bf16, then bf16 first): a no-grad forward of a batch of random token ids (the work of the teacher cache,
tokens/s) and one fine-tuning step (forward, mean pooling, a linear head, backward, AdamW; seconds per step,
the work of `evaluate`'s fine-tuning). The output cosine of the pooled embeddings between the two dtypes on one
batch says what autocast changes numerically. Reports, does not assert; on a CPU without bf16 units it says so
and exits (kdnas would not use bf16 there).

    python benchmarks/precision_steps.py                             # minilm-l6 and mpnet-base, batch 32 x 128
    python benchmarks/precision_steps.py --teachers minilm-l6 --out runs/precision_steps.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _time(fn: Any, dtype: torch.dtype, n: int) -> float:
    fn(dtype)  # warm-up: oneDNN picks its kernels on the first call of a shape and dtype
    t0 = time.perf_counter()
    for _ in range(n):
        fn(dtype)
    return (time.perf_counter() - t0) / n


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from kdnas.models.teacher import load_teacher
    from kdnas.precision import autocast

    teacher = load_teacher(name)
    model = teacher.model
    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, min(vocab, 20000), (args.batch, args.seq), generator=g)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 3, (args.batch,), generator=g)
    head = torch.nn.Linear(int(model.config.hidden_size), 3)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-6)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    def pooled(dtype: torch.dtype) -> torch.Tensor:
        with autocast("cpu", dtype):
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        return (h.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    def forward(dtype: torch.dtype) -> None:
        with torch.no_grad():
            pooled(dtype)

    def step(dtype: torch.dtype) -> None:
        model.train()
        loss = torch.nn.functional.cross_entropy(head(pooled(dtype)), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.eval()

    fwd: dict[str, list[float]] = {k: [] for k in dtypes}
    stp: dict[str, list[float]] = {k: [] for k in dtypes}
    for r in range(args.repeats):
        order = list(dtypes) if r % 2 == 0 else list(reversed(dtypes))
        for k in order:
            fwd[k].append(args.batch * args.seq / _time(forward, dtypes[k], args.forward_iters))
            stp[k].append(_time(step, dtypes[k], args.step_iters))
    model.eval()
    with torch.no_grad():
        cos = (
            torch.nn.functional.cosine_similarity(pooled(torch.float32), pooled(torch.bfloat16)).mean().item()
        )
    out: dict[str, Any] = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "output_cosine": cos}
    for k in dtypes:
        out[k] = {"forward_tokens_per_s": statistics.median(fwd[k]), "step_s": statistics.median(stp[k])}
    out["forward_speedup"] = out["bf16"]["forward_tokens_per_s"] / out["fp32"]["forward_tokens_per_s"]
    out["step_speedup"] = out["fp32"]["step_s"] / out["bf16"]["step_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teachers", default="minilm-l6,mpnet-base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="rounds of each dtype (order alternating)")
    ap.add_argument("--forward-iters", type=int, default=3)
    ap.add_argument("--step-iters", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()

    from kdnas.latency.fingerprint import fingerprint
    from kdnas.precision import cpu_bf16_units

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    units = cpu_bf16_units()
    cpu = fingerprint(a.threads).cpu
    print(f"{cpu}; bf16 units: {', '.join(units) or 'none'}; {a.threads} threads, batch {a.batch} x {a.seq}")
    if not units:
        sys.exit("this CPU has no bf16 units: kdnas keeps fp32 here (dtype: auto), nothing to compare")
    rows: dict[str, Any] = {}
    print("| teacher | params | dtype | forward tokens/s | fine-tuning step s | bf16 speed-up (forward / step) "
          "| output cosine |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in a.teachers.split(","):
        r = rows[name] = measure(name, a)
        for k in ("fp32", "bf16"):
            extra = (
                f"{r['forward_speedup']:.2f}x / {r['step_speedup']:.2f}x | {r['output_cosine']:.5f}"
                if k == "bf16"
                else " | "
            )
            print(f"| {name} | {r['params_m']:.1f}M | {k} | {r[k]['forward_tokens_per_s']:,.0f} | "
                  f"{r[k]['step_s']:.2f} | {extra} |", flush=True)  # fmt: skip
    if a.out:
        meta = {"cpu": cpu, "bf16_units": units, "threads": a.threads, "batch": a.batch, "seq": a.seq}
        Path(a.out).write_text(json.dumps({"meta": meta, "teachers": rows}, indent=1))


if __name__ == "__main__":
    main()
