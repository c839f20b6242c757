"""Multilingual benchmark (issue 8): teacher me5-small, recommended student with and without vocabulary trimming.

Runs `kdnas run multilingual` (en/fr/es corpus mix, the vocabulary as a search dimension, `distill.vocab_twins`
so the recommended student is also distilled with the other vocabulary) and prints, side by side from that
one run dir: parameters (embedding and transformer separately), CPU latency and speed-up measured together,
retention per language (en, fr, es) and zero-shot (English-trained, tested on fr / es).
Target: >= 5x fewer params and >= 7x faster than the teacher at >= 90% average retention across en, fr, es.

    python benchmarks/multilingual.py [--run-dir runs/multilingual] [--section.key VALUE ...]

The run is resumable: rerunning the command continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from _run import run_and_read  # benchmarks/_run.py, next to this script

from kdnas import config
from kdnas.cli import split_overrides


def _params(model_dir: Path) -> tuple[int, int, int, int]:
    """(total, embedding tables, transformer parameters, vocabulary rows) of a saved model, from its config."""
    from transformers import AutoConfig

    from kdnas.space.cost import config_param_count

    cfg = AutoConfig.from_pretrained(model_dir)
    pc = config_param_count(cfg)
    return pc.total, pc.embedding, pc.non_embedding, int(cfg.vocab_size)


def main(argv: list[str] | None = None) -> int:
    rest, ov = split_overrides(list(sys.argv[1:] if argv is None else argv))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/multilingual")
    ap.add_argument("--speedup", type=float, default=7.0, help="speed-up target (default 7)")
    ap.add_argument("--params-ratio", type=float, default=5.0, help="parameter reduction target (default 5)")
    ap.add_argument("--retention", type=float, default=0.90, help="en/fr/es average retention target (0.90)")
    args = ap.parse_args(rest)
    overrides = {"distill.vocab_twins": True}  # the student with and without trimming
    overrides.update(config.parse_overrides(ov) if ov else {})
    cfg = config.load("multilingual", overrides)
    run_dir = Path(args.run_dir)
    run = run_and_read(cfg, run_dir)
    wall, stages, table, students = run.wall_s, run.stage_s, run.table, run.students
    teacher = json.loads((run_dir / "teacher.json").read_text())
    from kdnas.models.teacher import load_teacher_config

    teacher_vocab = int(load_teacher_config(cfg.teacher.name).vocab_size)
    ev = run.evaluate
    spread = ev.get("speedup_range", {})
    rows = table["rows"]
    zs = set(table.get("zero_shot") or [])
    langs = [t for t in table["tasks"] if t not in zs]
    zero = [t for t in table["tasks"] if t in zs]

    print(
        f"\nmultilingual: teacher {cfg.teacher.name}, corpus {' + '.join(cfg.corpus.sources)}, run dir {run_dir}"
    )
    print(f"machine: {platform.processor() or platform.machine()}, target {cfg.target.device} "
          f"{cfg.target.threads} threads, batch {cfg.target.batch_size}, seq {cfg.target.seq_lens[0]}, backend "
          f"{cfg.target.backend}; latency: {ev.get('latency_rounds', 1)} side-by-side rounds")  # fmt: skip
    print(f"stage seconds (this invocation {wall:.0f} s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()) + f"; total {sum(stages.values()) / 60:.1f} min")  # fmt: skip
    cols = [t.replace("wiki-vital-", "") for t in langs + zero]
    head = (
        f"{'model':30} {'vocab':>7} {'params':>8} {'embed':>8} {'transf':>8} {'lat ms':>7} {'speed-up':>18} "
        + " ".join(f"{c:>8}" for c in cols)
        + f" {'avg en/fr/es':>12} {'zero-shot':>9}"
    )
    print(head)
    print("-" * len(head))
    teacher_params = None
    results = []
    for r in rows:
        name = r["model"]
        if name == "teacher":
            total, transf = teacher["params"], teacher["params_non_embedding"]
            emb, vocab = total - transf, teacher_vocab
            teacher_params = total
        else:
            total, emb, transf, vocab = _params(run_dir / students[name]["model_dir"])
        lo, hi = spread.get(name, (r["speedup"], r["speedup"]))
        scores = " ".join(
            f"{100 * r['scores'][t]:8.2f}" if t in r["scores"] else f"{'-':>8}" for t in langs + zero
        )
        lang_avg = r.get("language_avg_retention") or r.get("avg_retention") or 0.0
        zsr = r.get("zero_shot_retention")
        print(f"{name:30} {vocab:7d} {total / 1e6:7.2f}M {emb / 1e6:7.2f}M {transf / 1e6:7.2f}M "
              f"{r['latency_ms']:7.2f} {r['speedup']:6.2f}x [{lo:4.1f}-{hi:4.1f}] {scores} {100 * lang_avg:11.1f}% "
              + (f"{100 * zsr:8.1f}%" if zsr is not None else f"{'-':>9}"))  # fmt: skip
        results.append((name, total, r["speedup"], lang_avg))
    print("\nretention per language (in-language columns; zero-shot into each language):")
    for r in rows:
        per = r.get("language_retention") or {}
        zper = r.get("language_zero_shot_retention") or {}
        print(f"  {r['model']:30} " + "  ".join(
            f"{lang} {100 * v:5.1f}%" + (f" (zero-shot {100 * zper[lang]:5.1f}%)" if zper.get(lang) else "")
            for lang, v in per.items() if v is not None))  # fmt: skip

    ok = False
    for name, total, speedup, lang_avg in results:
        if name == "teacher" or not teacher_params:
            continue
        ratio = teacher_params / total
        hit = ratio >= args.params_ratio and speedup >= args.speedup and lang_avg >= args.retention
        ok |= hit
        print(f"target for {name}: {ratio:.1f}x fewer params (>= {args.params_ratio:g}), {speedup:.2f}x faster "
              f"(>= {args.speedup:g}), {100 * lang_avg:.1f}% en/fr/es retention (>= {100 * args.retention:.0f}%): "
              + ("MET" if hit else "NOT MET"))  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
