"""What the distillation rows look like (issue 21): the same student distilled on the same corpus and token budget
with packed 128-token rows and with sentence rows (consecutive sentences of one document, at most `seq_len`
tokens and `max_sentences` sentences), then scored side by side on the label-free fidelity (2,000 held-out sentences) and on the suite.

The sentence losses match the teacher's pooled embedding of each row. With packed rows every row is 128 tokens
cut across document boundaries, unlike what users embed (queries, sentences, passages), and unlike the held-out
sentences the fidelity is measured on; sentence rows are short and whole.

    python benchmarks/corpus_rows.py [--arch L2-H384-A12-F384] [--tokens 600000] [--rows packed:128,sentence:64,sentence:128:2]
                                     [--no-suite] [--out runs/bench/corpus_rows.json]

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
    ap.add_argument("--arch", default="L2-H384-A12-F384")
    ap.add_argument(
        "--tokens", type=int, help="distillation tokens per student (default distill.full_tokens)"
    )
    ap.add_argument("--rows", default="packed:128,sentence:64",
                    help="corpus MODE:SEQ_LEN[:MAX_SENTENCES] to compare, comma-separated")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--no-suite", action="store_true", help="fidelity only (seconds, not the suite's minutes)"
    )
    ap.add_argument("--work", default="runs/bench/corpus_rows")
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()

    import torch

    from kdnas import config
    from kdnas.data.corpus import build_corpus, heldout_batch
    from kdnas.distill import TeacherCache, distill
    from kdnas.distill.distiller import teacher_pooling
    from kdnas.evaluate.encoder import load_encoder
    from kdnas.evaluate.fidelity import embedding_fidelity, load_dense, teacher_encoding
    from kdnas.evaluate.runner import evaluate_encoder, load_tasks
    from kdnas.models.inherit import inherit_student
    from kdnas.models.pooling import Pooling
    from kdnas.models.teacher import load_teacher
    from kdnas.space.arch import Arch
    from kdnas.stages.distill import save_student

    torch.set_num_threads(a.threads)
    cfg = config.RunConfig()
    tokens = a.tokens or cfg.distill.full_tokens
    work = Path(a.work)
    teacher = load_teacher(cfg.teacher.name)
    pooling = teacher_pooling(teacher) or Pooling(mode="mean")
    ids, mask = heldout_batch(cfg.corpus, teacher.tokenizer, seed=cfg.seed, n=cfg.evaluate.fidelity_passages)
    t_out = teacher_encoding(teacher.model, ids, mask, pooling)
    tasks = [] if a.no_suite else load_tasks(cfg.evaluate.tasks, max_train=cfg.evaluate.max_train_examples)
    arch = Arch.parse(a.arch)
    print(f"teacher {cfg.teacher.name}; student {arch.arch_id}; {tokens:,} tokens each; {len(ids)} held-out "
          f"passages; suite: {', '.join(t.name for t in tasks) or 'skipped'}", flush=True)  # fmt: skip
    rows: list[dict[str, Any]] = []
    for spec in a.rows.split(","):
        mode, seq, most = [*spec.split(":"), "", ""][:3]
        ccfg = dataclasses.replace(cfg.corpus, mode=mode, seq_len=int(seq or cfg.corpus.seq_len),  # type: ignore[arg-type]
                                   max_sentences=int(most) if most else None)  # fmt: skip
        splits = build_corpus(ccfg, teacher.tokenizer, seed=cfg.seed)
        n_rows = len(splits.train.input_ids)
        real = float(splits.train.attention_mask.sum()) / n_rows
        student = inherit_student(teacher.model, arch, layer_selection=cfg.distill.layer_selection,
                                  importance=cfg.distill.importance, seed=cfg.seed)  # fmt: skip
        t0 = time.perf_counter()
        res = distill(teacher, student, splits.train, cfg.distill, tokens=tokens, mode="standard", seed=cfg.seed,
                      teacher_cache=TeacherCache(work / f"cache-{mode}{seq}-{most}", budget_mb=cfg.distill.teacher_cache_mb),
                      progress=False)  # fmt: skip
        secs = time.perf_counter() - t0
        model_dir = work / f"{mode}{seq}-{most}" / "model"
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        save_student(student, teacher.tokenizer, res.distiller, model_dir)
        fid = embedding_fidelity(teacher.model, student, ids, mask, pooling=pooling,
                                 student_dense=load_dense(model_dir), teacher_out=t_out)  # fmt: skip
        row: dict[str, Any] = {"rows": spec, "train_rows": n_rows, "tokens_per_row": round(real, 1),
                               "distill_s": round(secs, 1), "final_train_loss": res.final_loss, **fid.to_dict()}  # fmt: skip
        print(f"  {spec}: {n_rows} rows of {real:.0f} tokens; distilled in {secs:.0f} s; emb cosine "
              f"{fid.mean_cosine:.3f}, CKA {fid.cka:.3f}, recall@10 {fid.recall_at_10:.3f}", flush=True)  # fmt: skip
        if tasks:
            t1 = time.perf_counter()
            rep = evaluate_encoder(load_encoder(model_dir, name=spec), tasks, cfg.evaluate.for_students())
            row["suite"] = {t: (r.test_mean, r.test_std) for t, r in rep.results.items()}
            row["suite_avg"] = sum(r.test_mean for r in rep.results.values()) / len(rep.results)
            row["suite_s"] = round(time.perf_counter() - t1, 1)
            got = ", ".join(f"{t} {m:.2f} ± {s:.2f}" for t, (m, s) in row["suite"].items())
            print(f"    suite: {got}; average {row['suite_avg']:.2f} ({row['suite_s']:.0f} s)", flush=True)
        rows.append(row)

    print("\n| rows | train rows | tokens/row | distill s | emb cosine | CKA | recall@10 | suite avg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        suite = f"{r['suite_avg']:.2f}" if "suite_avg" in r else "–"
        print(f"| {r['rows']} | {r['train_rows']} | {r['tokens_per_row']} | {r['distill_s']} | "
              f"{r['mean_cosine']:.3f} | {r['cka']:.3f} | {r['recall_at_10']:.3f} | {suite} |")  # fmt: skip
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
