"""`kdnas.search.search`: the architecture search of a config alone, as `kdnas search CONFIG` runs it (the same
functions `kdnas run`'s search stage calls: `kdnas.stages.search.budgets_for` and `run_study`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdnas import run_dir as rd


def search_inputs(cfg: Any, run_dir: Path, setup: Any) -> tuple[Any, list[Any]]:
    """(the search space, its vocabulary resolved when the run dir's data stage wrote vocab.json; the budgets)."""
    from kdnas.space.spaces import load_space
    from kdnas.stages.search import budgets_for

    space = load_space(cfg.search.space, setup.teacher_config)
    vocab_file = run_dir / rd.VOCAB
    if vocab_file.exists():  # a run dir whose data stage resolved the `vocab` choices (corpus, N) to sizes
        from kdnas.space.vocab import VocabTable

        space = space.with_vocab(VocabTable.load(vocab_file).sizes)
    return space, budgets_for(cfg.target, setup.teacher_latency_ms, {})  # a run adds the baselines' budgets


def search(
    config: Any = None,
    *,
    run_dir: str | Path | None = None,
    setup: Any = None,
    storage: str | None = None,
    study_name: str | None = None,
    callback: Any = None,
    hardware: str | None = None,
    **overrides: Any,
) -> Any:
    """Search the student space of `config` (a `RunConfig`, recipe name or YAML path; `section.key` overrides as
    keywords, `section__key` too) and return the `SearchResult`. `setup`: an `EvaluatorSetup` (default: the real
    proxy evaluator of the config's teacher and corpus; `kdnas.search.testing.FakeEvaluator(...).setup(cfg)` to
    try it without training). The study goes to `storage`, else `search.storage`, else SQLite in `run_dir`."""
    from kdnas import config as config_mod
    from kdnas.search.workers import target_fingerprint
    from kdnas.stages.search import run_study

    ov = {k.replace("__", "."): v for k, v in overrides.items()}
    if isinstance(config, config_mod.RunConfig):
        cfg = config_mod.from_dict(config.to_dict(), ov) if ov else config
    else:
        cfg = config_mod.load(config, ov)
    out = Path(run_dir) if run_dir else cfg.resolved_run_dir
    if setup is None:
        from kdnas.search.evaluator import make_evaluator

        setup = make_evaluator(cfg, out)
    space, budgets = search_inputs(cfg, out, setup)
    return run_study(
        space, setup, budgets, search=cfg.search, proxy_tokens=cfg.distill.proxy_tokens, run_dir=out,
        study_name=study_name or f"{cfg.name}-{cfg.search.strategy}", seed=cfg.seed, callback=callback,
        storage=storage, role=None, hardware=hardware or target_fingerprint(cfg.target),
    )  # fmt: skip
