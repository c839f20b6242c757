"""Data-parallel distillation over processes started by `torchrun` (gloo on CPU, nccl on GPU).

The unit of work is a whole micro-batch: an optimiser step of one process reads `grad_accum` micro-batches of
`batch_size` rows; with W processes, process r reads the micro-batches a with a % W == r, and the gradients
are summed across processes before clipping and the step. Every micro-batch keeps its rows and its dropout
seed, so W processes take the same steps as one process up to the order of float additions, and a run
checkpointed with W processes resumes with any other count that divides `grad_accum`. Whole micro-batches
(not a split of each) keep the in-batch similarity loss the same as in one process.

    torchrun --nproc-per-node 2 -m kdnas distill --teacher minilm-l6 --arch L=4,H=256,A=4,F=1024 ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import torch
from torch import Tensor, nn

from kdnas.errors import DistillError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, micro: int) -> bool:
        """Whether this process runs micro-batch number `micro` (of a step)."""
        return micro % self.size == self.rank


def world() -> World:
    """This process's rank and the number of processes (1 when torch.distributed is not initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def init_from_env(device: str = "cpu") -> World:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK, MASTER_ADDR...);
    a plain process (no WORLD_SIZE, or 1) stays alone. gloo on CPU, nccl on CUDA."""
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise DistillError("WORLD_SIZE is set but this torch build has no torch.distributed")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    w = world()
    log.info("distributed distillation: process %d of %d (%s)", w.rank, w.size, backend)
    return w


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave(code: int) -> NoReturn:
    """End a torchrun worker whose work is saved and whose process group is destroyed, skipping the interpreter's
    teardown: gloo's threads can still drop tensors there and abort the process (SIGABRT at the end of finished
    2-process runs, seen three times in CI; pytorch/pytorch#179291), which torchrun reports as a failed run."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def check_accum(w: World, grad_accum: int) -> None:
    if grad_accum % w.size:
        raise DistillError(
            f"distill.grad_accum is {grad_accum}, not a multiple of the {w.size} processes: each process runs "
            f"whole micro-batches of an optimiser step, so set distill.grad_accum to {w.size} (or a multiple; the "
            "global batch is batch_size x grad_accum) or start another number of processes"
        )


def sum_(t: Tensor, w: World) -> Tensor:
    """All-reduce SUM of a tensor (in place; returned)."""
    if w.size > 1:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sum_grads(params: list[nn.Parameter], w: World) -> None:
    """Sum the gradients of `params` over the processes in one flat buffer (a missing grad counts as 0)."""
    if w.size <= 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    sum_(flat, w)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def broadcast_module(module: nn.Module, w: World) -> None:
    """Give every process rank 0's parameters and buffers (they are built alike; this makes it certain)."""
    if w.size <= 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def barrier(w: World) -> None:
    if w.size > 1:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first(w: World) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. computes the teacher cache on disk), the others after it (and read it)."""
    if not w.is_main:
        barrier(w)
    try:
        yield
    finally:
        if w.is_main:
            barrier(w)
