"""Embedding fidelity on the text a student was distilled on against held-out text: is it capacity or data?

Issue 21 asks the 7x student for a mean cosine of 0.90 to the teacher's embedding. The 1-layer student stops near
0.87 however many passes over the corpus it gets (ninth session: 0.871 at 1.8M tokens, 0.874 at 3.6M). Two
readings fit that: the student has fitted what one layer can hold (then its fidelity on the passages it was trained
on is no better than on held-out ones, and more text of the same kind will not help), or it has fitted the training
passages and does not carry it over (then a larger, more varied corpus would). This scores each model of a
finished run on the same number of passages from the corpus's train split and from its held-out split (the
sentences `kdnas.data.corpus.heldout_passages` takes: one sentence of >= 5 words, round robin over sources), with
the teacher's pooling and each model's own Dense, and prints the gap.

    python benchmarks/fidelity_split.py --run-dir runs/headline-family6 [--models student-7x,student-3x]
        [--passages 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch

    from kdnas import config as kconfig
    from kdnas.data.corpus import HELDOUT_MAX_LEN, heldout_passages
    from kdnas.distill.distiller import teacher_pooling
    from kdnas.evaluate.fidelity import embedding_fidelity, load_embedder, teacher_encoding
    from kdnas.models.pooling import Pooling
    from kdnas.models.teacher import load_teacher

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="a run whose distill stage finished")
    ap.add_argument(
        "--models", default="", help="comma-separated model names (default: every distilled model)"
    )
    ap.add_argument("--passages", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    run = Path(a.run_dir)
    cfg = kconfig.load(run / "config.yaml")
    summary = json.loads((run / "stages" / "distill.json").read_text())["summary"]
    dirs: dict[str, str] = {}
    for m in [*summary.get("students", []), *summary.get("baselines", [])]:
        dirs.setdefault(m["name"], m["model_dir"])
    names = [n for n in a.models.split(",") if n] or list(dirs)
    unknown = [n for n in names if n not in dirs]
    if unknown:
        raise SystemExit(f"--models: {', '.join(unknown)} not distilled in {run}; it has {', '.join(dirs)}")

    teacher = load_teacher(cfg.teacher.name)
    pooling = teacher_pooling(teacher) or Pooling(mode="mean", source="default: mean pooling")
    width = max(cfg.corpus.seq_len, HELDOUT_MAX_LEN)
    batches = {}
    for split in ("train", "heldout"):
        texts = heldout_passages(cfg.corpus, seed=cfg.seed, n=a.passages, split=split)
        tok = teacher.tokenizer(texts, truncation=True, max_length=width, padding=True, return_tensors="pt")
        ids, mask = tok["input_ids"], tok["attention_mask"]
        batches[split] = (ids, mask, teacher_encoding(teacher.model, ids, mask, pooling))
    n = {s: len(b[0]) for s, b in batches.items()}
    print(f"{run}: teacher {cfg.teacher.name}, {n['train']} train and {n['heldout']} held-out passages")
    print(
        f"{'model':32} {'cos train':>9} {'cos held':>9} {'gap':>7} {'r@10 train':>10} {'r@10 held':>9} {'gap':>7}"
    )
    for name in names:
        model, _, _, dense = load_embedder(run / dirs[name])
        got = {}
        for split, (ids, mask, t_out) in batches.items():
            got[split] = embedding_fidelity(
                teacher.model, model, ids, mask, pooling=pooling, student_dense=dense, teacher_out=t_out
            )
        tr, he = got["train"], got["heldout"]
        cos_gap = (
            "-"
            if tr.mean_cosine is None or he.mean_cosine is None
            else f"{tr.mean_cosine - he.mean_cosine:+.3f}"
        )
        cos_tr = "-" if tr.mean_cosine is None else f"{tr.mean_cosine:.3f}"
        cos_he = "-" if he.mean_cosine is None else f"{he.mean_cosine:.3f}"
        print(
            f"{name:32} {cos_tr:>9} {cos_he:>9} {cos_gap:>7} {tr.recall_at_10:>10.3f} {he.recall_at_10:>9.3f} "
            f"{tr.recall_at_10 - he.recall_at_10:>+7.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
