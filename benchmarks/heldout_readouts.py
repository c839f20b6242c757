"""The proxy's two held-out read-outs of one student, one at a time (3 student passes) and together (2).

`search.proxy_readout: geomean` scores every candidate through the projections trained in its proxy distillation
and through least-squares ones fitted on the held-out split. `heldout_kd_losses` scores both in one call: one
student pass serves the trained read-out and the fit, one more scores the fitted read-out. Per arch: the proxy
distillation's time, both ways' wall time (alternating, `--repeats` each), their ratio and the losses (which must
agree). Reports, does not assert.

    python benchmarks/heldout_readouts.py [--archs L3-H384-A12-F384,L2-H320-A10-F320] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="L3-H384-A12-F384,L2-H320-A10-F320")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    import torch

    from kdnas import config
    from kdnas.data.corpus import build_corpus
    from kdnas.distill import distill, heldout_kd_loss, heldout_kd_losses
    from kdnas.models.teacher import load_teacher
    from kdnas.search.proxy import ProxyEvaluator
    from kdnas.space.arch import Arch

    torch.set_num_threads(a.threads)
    cfg = config.load(None)
    teacher = load_teacher(cfg.teacher.name, attn_implementation=cfg.teacher.attn_implementation)
    splits = build_corpus(cfg.corpus, teacher.tokenizer, seed=cfg.seed)
    ev = ProxyEvaluator(
        cfg=cfg,
        teacher=teacher,
        proxy=splits.proxy,
        heldout=splits.heldout,
        cache_dir=Path(tempfile.mkdtemp()),
    )
    for aid in a.archs.split(","):
        s = ev.build_student(Arch.parse(aid))
        t0 = time.perf_counter()
        res = distill(
            teacher, s, ev.proxy, cfg.distill, tokens=cfg.distill.proxy_tokens, teacher_cache=ev._cache,
            seed=cfg.seed, progress=False,
        )  # fmt: skip
        train_s = time.perf_counter() - t0
        heldout_kd_loss(
            teacher, s, ev.heldout, cfg.distill, teacher_cache=ev._cache
        )  # the teacher's pass, cached
        apart: list[float] = []
        together: list[float] = []
        for rep in range(a.repeats):
            for mode in ("apart", "together") if rep % 2 == 0 else ("together", "apart"):
                t0 = time.perf_counter()
                if mode == "apart":
                    one = [
                        heldout_kd_loss(
                            teacher, s, ev.heldout, cfg.distill, projections=p, teacher_cache=ev._cache
                        )
                        for p in (res.distiller, None)
                    ]
                    apart.append(time.perf_counter() - t0)
                else:
                    both = heldout_kd_losses(
                        teacher, s, ev.heldout, cfg.distill, readouts={"trained": res.distiller, "fitted": None},
                        teacher_cache=ev._cache,
                    )  # fmt: skip
                    together.append(time.perf_counter() - t0)
        print(
            f"{aid}: proxy distillation {train_s:.1f} s; read-outs one at a time "
            f"{' / '.join(f'{x:.1f}' for x in apart)} s, together {' / '.join(f'{x:.1f}' for x in together)} s, "
            f"ratio {statistics.fmean(together) / statistics.fmean(apart):.2f}; losses (trained, fitted) "
            f"{one[0]:.4f}, {one[1]:.4f} one at a time, {both['trained']:.4f}, {both['fitted']:.4f} together",
            flush=True,
        )


if __name__ == "__main__":
    main()
