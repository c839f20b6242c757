"""The real candidate evaluator of a search, ready to run: teacher loaded, proxy data built, teacher latency on
the target measured, latency predictor loaded (when `kdnas latency calibrate` or the pipeline made one).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas import run_dir as rd
from kdnas.search.candidate import EvaluatorSetup

if TYPE_CHECKING:
    from kdnas.config import RunConfig


def make_evaluator(
    cfg: RunConfig,
    run_dir: Path,
    *,
    teacher: Any = None,
    splits: Any = None,
    teacher_latency_ms: float | None = None,
    vocab: Any = None,
) -> EvaluatorSetup:
    """The evaluator for a run and the teacher's numbers; pass what the caller already has to avoid redoing it.

    `vocab`: the run's `kdnas.space.vocab.VocabTable` (default: `run_dir/vocab.json` when there is one).
    """
    from kdnas.latency import LatencyCache, load_predictor, measure_teacher
    from kdnas.search.proxy import ProxyEvaluator
    from kdnas.space.vocab import VOCAB_FILE, VocabTable

    if teacher is None:
        from kdnas.models.teacher import load_teacher

        teacher = load_teacher(
            cfg.teacher.name,
            attn_implementation=cfg.teacher.attn_implementation,
            with_mlm_head=cfg.distill.losses.get("logits", 0) > 0,
            allow_pickle=cfg.teacher.allow_pickle,
        )
    if splits is None:
        from kdnas.data.corpus import build_corpus

        splits = build_corpus(cfg.corpus, teacher.tokenizer, seed=cfg.seed)
    latency_cache = LatencyCache(cfg.target.cache_dir) if cfg.target.cache_dir else None
    if teacher_latency_ms is None:
        teacher_latency_ms = measure_teacher(teacher.config, cfg.target, cache=latency_cache).median_ms
    predictor = load_predictor(teacher.config, cfg.target)
    if vocab is None and (Path(run_dir) / VOCAB_FILE).is_file():
        vocab = VocabTable.load(Path(run_dir) / VOCAB_FILE)
    evaluator = ProxyEvaluator(
        cfg=cfg,
        teacher=teacher,
        proxy=splits.proxy,
        heldout=splits.heldout,
        cache_dir=Path(run_dir) / rd.TEACHER_CACHE,
        latency_cache=latency_cache,
        vocab=vocab,
        latency_predictor=predictor.predict_ms if predictor is not None else None,
    )
    return EvaluatorSetup(
        evaluator=evaluator,
        teacher_config=teacher.config,
        teacher_latency_ms=teacher_latency_ms,
        latency_predictor=predictor.predict_ms if predictor is not None else None,
    )
