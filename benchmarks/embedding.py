"""Embedding space (issue 21): the same students distilled with and without the sentence losses, and a
Model2Vec static model of the same teacher, scored side by side on label-free fidelity to the teacher.

For each student shape: two distillations in this process from the same inherited init, the same data, seed
and token budget (`--tokens`, default `distill.full_tokens`), one with the default losses (hidden, relation,
sentence cosine, in-batch similarity KL) and one with hidden + relation only (the losses before issue 21).
Then on the corpus's held-out passages (`evaluate.fidelity_passages`, 2,000 sentences of documents no
student saw): mean cosine of the pooled embedding to the teacher's (through the learned sentence projection
when the student is narrower; n/a without one), linear CKA, and recall@10 of the teacher's neighbours.

`--m2v DIR`: a Model2Vec static model of the same teacher (saved with `StaticModel.save_pretrained`) gets the
same recall@10 and cosine, and its encode time for the passages against the teacher's in this process. Make it
in a separate environment: `model2vec[distill]` 0.10 pins transformers<5.4 and pulls `kernels`, which breaks
the import of transformers 5.23 in kdnas's environment (seen here: every model load failed until it was
removed). Reading a saved model needs only `model2vec` itself:

    python3 -m venv /tmp/m2v && /tmp/m2v/bin/pip install -c constraints.txt "model2vec[distill]==0.10.0" scikit-learn
    /tmp/m2v/bin/python -c "from model2vec.distill import distill; \
        distill(model_name='$HOME/.cache/kdnas/zoo/minilm-l6', pca_dims=None).save_pretrained('runs/bench/m2v')"
    pip install -c constraints.txt model2vec==0.10.0      # in kdnas's environment: no [distill]
    python benchmarks/embedding.py [--tokens 600000] [--archs L2-H384-A12-F384,L3-H128-A2-F512] [--m2v runs/bench/m2v]

Reports, does not assert.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="L2-H384-A12-F384,L3-H128-A2-F512")
    ap.add_argument("--tokens", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="runs/bench/embedding", help="teacher cache and results")
    ap.add_argument("--m2v", help="dir of a saved Model2Vec static model of the same teacher")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=LOSS:W,...",
                    help="another loss set to compare, e.g. 'sentence x10=hidden:1,relation:1,sentence:10,similarity:1'")  # fmt: skip
    ap.add_argument("--no-defaults", action="store_true", help="only the --variant loss sets")
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()

    import torch

    from kdnas import config
    from kdnas.data.corpus import build_corpus, heldout_batch, heldout_passages
    from kdnas.distill import TeacherCache, distill
    from kdnas.distill.distiller import teacher_pooling
    from kdnas.evaluate.fidelity import embedding_fidelity, encode, recall_at_k
    from kdnas.models.inherit import inherit_student
    from kdnas.models.pooling import Pooling
    from kdnas.models.teacher import load_teacher
    from kdnas.space.arch import Arch

    torch.set_num_threads(a.threads)
    cfg = config.RunConfig()
    tokens = a.tokens or cfg.distill.full_tokens
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    teacher = load_teacher(cfg.teacher.name)
    pooling = teacher_pooling(teacher) or Pooling(mode="mean")
    splits = build_corpus(cfg.corpus, teacher.tokenizer, seed=cfg.seed)
    texts = heldout_passages(cfg.corpus, seed=cfg.seed, n=cfg.evaluate.fidelity_passages)
    ids, mask = heldout_batch(cfg.corpus, teacher.tokenizer, seed=cfg.seed, n=cfg.evaluate.fidelity_passages)
    print(
        f"teacher {cfg.teacher.name}; {tokens:,} distillation tokens per student; {len(texts)} held-out passages"
    )
    cache = TeacherCache(work / "teacher_cache", budget_mb=cfg.distill.teacher_cache_mb)
    keep = ("hidden", "relation")
    variants: dict[str, dict[str, float]] = {
        "default losses": dict(cfg.distill.losses),
        "hidden + relation only": {k: v for k, v in cfg.distill.losses.items() if k in keep},
    }
    if a.no_defaults:
        variants = {}
    for v in a.variant:
        name, _, spec = v.partition("=")
        variants[name] = {k: float(w) for k, _, w in (x.partition(":") for x in spec.split(","))}
    rows: list[dict[str, Any]] = []
    for arch_id in [x for x in a.archs.split(",") if x]:
        arch = Arch.parse(arch_id)
        for label, losses in variants.items():
            dcfg = dataclasses.replace(cfg.distill, losses=losses)
            student = inherit_student(teacher.model, arch, layer_selection=dcfg.layer_selection,
                                      importance=dcfg.importance, seed=cfg.seed)  # fmt: skip
            t0 = time.perf_counter()
            res = distill(teacher, student, splits.train, dcfg, tokens=tokens, mode="standard", teacher_cache=cache,
                          seed=cfg.seed, progress=False)  # fmt: skip
            secs = time.perf_counter() - t0
            dense = dict(res.distiller.proj.items()).get("sentence")
            fid = embedding_fidelity(teacher.model, student, ids, mask, pooling=pooling, student_dense=dense)
            row = {"model": arch.arch_id, "losses": label, "cosine": fid.mean_cosine, "cka": fid.cka,
                   "recall_at_10": fid.recall_at_10, "distill_s": round(secs, 1), "final_loss": res.final_loss}  # fmt: skip
            rows.append(row)
            cos = "n/a" if fid.mean_cosine is None else f"{fid.mean_cosine:.3f}"
            print(f"  {arch.arch_id} ({label}): emb cosine {cos}, CKA {fid.cka:.3f}, recall@10 "
                  f"{fid.recall_at_10:.3f} ({secs:.0f} s distillation)", flush=True)  # fmt: skip

    if a.m2v:
        from model2vec import StaticModel

        static = StaticModel.from_pretrained(a.m2v)
        te = encode(teacher.model, ids, mask, pooling)[0]  # also the teacher's warm-up before it is timed
        t1 = time.perf_counter()
        se = torch.as_tensor(static.encode(texts, batch_size=64))
        m2v_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        encode(teacher.model, ids, mask, pooling)
        teacher_s = time.perf_counter() - t2
        same = se.shape[-1] == te.shape[-1]
        cos = float(torch.nn.functional.cosine_similarity(se, te, dim=-1).mean()) if same else None
        rec = recall_at_k(se, te, 10)
        rows.append({"model": "model2vec", "losses": f"static ({a.m2v})", "cosine": cos, "cka": None,
                     "recall_at_10": rec, "encode_speedup_vs_teacher": teacher_s / m2v_s})  # fmt: skip
        print(f"  Model2Vec: emb cosine {cos if cos is None else f'{cos:.3f}'}, recall@10 {rec:.3f}; encodes the "
              f"{len(texts)} passages in {m2v_s:.2f} s, the teacher in {teacher_s:.1f} s ({teacher_s / m2v_s:.0f}x)")  # fmt: skip

    print("\n| model | losses | emb cosine | CKA | recall@10 |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        c = "n/a" if r["cosine"] is None else f"{r['cosine']:.3f}"
        k = "n/a" if r["cka"] is None else f"{r['cka']:.3f}"
        print(f"| {r['model']} | {r['losses']} | {c} | {k} | {r['recall_at_10']:.3f} |")
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
