"""Zero-shot pair similarity of the teacher and students on the suite's pair tasks (no fine-tuning).

Each model embeds both texts as it embeds (its sentence-transformers pooling and Dense); the cosine is scored
against the labels (`kdnas.evaluate.pair_similarity`): dev-thresholded accuracy and macro F1 for two classes,
Spearman for regression. Reports, does not assert.

    python benchmarks/pairs.py --teacher minilm-l6 MODEL_DIR [MODEL_DIR ...] [--tasks wiki-same-en,wiki-order-en]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="student / export dirs")
    ap.add_argument("--teacher", default="minilm-l6")
    ap.add_argument("--tasks", default="wiki-same-en,wiki-order-en")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()

    from kdnas.distill.distiller import teacher_pooling
    from kdnas.evaluate.fidelity import load_embedder
    from kdnas.evaluate.pair_similarity import pair_similarity
    from kdnas.evaluate.runner import load_tasks
    from kdnas.models.pooling import Pooling
    from kdnas.models.teacher import load_teacher

    tasks = load_tasks([t.strip() for t in a.tasks.split(",") if t.strip()])
    teacher = load_teacher(a.teacher, attn_implementation="eager")
    models = [("teacher", teacher.model, teacher.tokenizer, teacher_pooling(teacher) or Pooling(), None)]
    for d in a.models:
        label = Path(d).parent.name if Path(d).name == "model" else Path(d).name  # students/<name>/model
        models.append((label, *load_embedder(d)))
    out: dict[str, dict] = {}
    print(
        f"{'model':<28} "
        + " ".join(f"{t.name + ' (' + str(len(t.test)) + ')':>28}" for t in tasks)
        + "  seconds"
    )
    for name, model, tok, pooling, dense in models:
        t0 = time.perf_counter()
        res = {t.name: pair_similarity(model, tok, t, pooling, dense=dense, max_len=a.max_len) for t in tasks}
        cells = [f"{r.metric} {r.value:.3f}" + (f" F1 {r.macro_f1:.3f}" if r.macro_f1 is not None else "") if r else "n/a"
                 for r in res.values()]  # fmt: skip
        print(f"{name:<28} " + " ".join(f"{c:>28}" for c in cells) + f"  {time.perf_counter() - t0:.1f}")
        out[name] = {k: (v.to_dict() if v else None) for k, v in res.items()}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
