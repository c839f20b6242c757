"""The search stage: the Optuna study over the space, then the best candidates near each budget placed by
side-by-side speed-ups (`kdnas.search.placement`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdnas import run_dir as rd
from kdnas._io import write_json_atomic
from kdnas.distill.config import DistillConfig
from kdnas.errors import SearchError
from kdnas.evaluate.config import EvaluateConfig
from kdnas.latency.config import TargetConfig
from kdnas.search.config import SearchConfig
from kdnas.stages.context import RunContext, trial_line
from kdnas.stages.results import LatencyResult, SearchOutcome


def search(
    ctx: RunContext,
    *,
    search: SearchConfig,
    target: TargetConfig,
    distill: DistillConfig,
    evaluate: EvaluateConfig,
    latency: LatencyResult,
) -> SearchOutcome:
    """Search the space: proxy-distil each candidate, measure it, keep the trials in the run's Optuna study."""
    from kdnas.search.workers import target_fingerprint

    setup = ctx.search_setup(latency.teacher_latency_ms)
    teacher_ms = setup.teacher_latency_ms
    refs: dict[str, str] = {}
    if latency.baseline_speedups():
        from kdnas.evaluate.baselines import baseline_archs

        family = baseline_archs(ctx.teacher().config, family=evaluate.baseline_family)
        refs = {name: arch.arch_id for name, arch in family.items()}
    budgets = budgets_for(target, teacher_ms, latency.baseline_speedups(), references=refs)
    with ctx.steps("search: candidates distilled", search.n_trials) as step:

        def on_trial(record: Any) -> None:  # the bar counts distilled candidates; filtered ones only say why
            if record.state in ("complete", "failed"):
                step(trial_line(record))
            elif not ctx.quiet:
                ctx.say("    " + trial_line(record))

        result = run_study(
            ctx.space(), setup, budgets, search=search, proxy_tokens=distill.proxy_tokens, run_dir=ctx.run_dir,
            study_name=f"search-{search.strategy}", seed=ctx.seed, callback=on_trial,
            hardware=target_fingerprint(target), role=ctx.role or "lead",
        )  # fmt: skip
    recommendations, placement = result.recommendations, None
    if target.place_candidates > 0 and ctx.role != "join":  # a helper stops after the search
        from kdnas.search.placement import place

        ctx.say(f"  placing the best {target.place_candidates} candidates near each budget side by side")
        recommendations, placement = place(
            result.records,
            budgets,
            lambda archs, names: _time_candidates(
                ctx, archs, names, target=target, family=evaluate.baseline_family
            ),
            teacher_latency_ms=teacher_ms,
            per_budget=target.place_candidates,
            tolerance=search.kd_loss_tolerance,
        )
        write_json_atomic(ctx.path(rd.PLACEMENT), placement)
        write_json_atomic(ctx.path(rd.RECOMMENDATIONS), [r.to_dict() for r in recommendations])
        for before, after in zip(result.recommendations, recommendations):
            if before.arch != after.arch:
                ctx.say(
                    f"  {after.budget.label}: side by side, {after.arch.arch_id if after.arch else 'none'} replaces "
                    f"{before.arch.arch_id if before.arch else 'none'}"
                )
    if not any(r.arch for r in recommendations):
        fastest = min((r.latency_ms for r in result.records if r.latency_ms), default=None)
        raise SearchError(
            f"no evaluated arch meets any latency budget ({', '.join(b.label for b in budgets)}; fastest measured "
            f"{fastest if fastest is None else f'{fastest:.2f} ms'}): relax target.speedups / target.budgets_ms, "
            f"or give the search more trials (search.n_trials); completed trials are kept in the study"
        )
    return SearchOutcome(
        n_evaluated=result.n_evaluated,
        hypervolume=result.hypervolume,
        kendall_tau_short_long=result.kendall_tau,
        pareto=[r.arch.arch_id for r in result.pareto if r.arch is not None],
        recommendations=[r.to_dict() for r in recommendations],
        search_recommendations=[r.to_dict() for r in result.recommendations],
        placed_side_by_side=placement is not None,
        leader=result.extra.get("leader"),
    )


def budgets_for(
    target: TargetConfig,
    teacher_latency_ms: float,
    baseline_speedups: dict[str, float],
    *,
    references: dict[str, str] | None = None,
) -> list[Any]:
    """The latency budgets of a search: the target's (ms and speed-ups over the teacher), plus one at each
    hand-made baseline's side-by-side speed-up (so a student is recommended at equal latency; `references`:
    name -> the baseline's arch_id, for the anchors), loosest first."""
    from kdnas.search.objectives import equal_latency_budgets, resolve_budgets

    budgets = resolve_budgets(
        budgets_ms=target.budgets_ms, speedups=target.speedups, teacher_latency_ms=teacher_latency_ms
    )
    if baseline_speedups:
        budgets = budgets + equal_latency_budgets(
            baseline_speedups, teacher_latency_ms, references=references
        )
    return sorted(budgets, key=lambda b: -b.latency_ms)


def run_study(
    space: Any,
    setup: Any,
    budgets: list[Any],
    *,
    search: SearchConfig,
    proxy_tokens: int,
    run_dir: Path,
    study_name: str,
    seed: int,
    callback: Any = None,
    hardware: str | None = None,
    role: str | None = "lead",
    storage: str | None = None,
) -> Any:
    """The study of a search over `space` with the candidates of `setup` (`EvaluatorSetup`): `kdnas run`'s search
    stage and `kdnas search` both run it. Returns the `SearchResult`."""
    from kdnas.search.study import run_search

    return run_search(
        space, setup.evaluator, search, tokens=proxy_tokens, teacher_latency_ms=setup.teacher_latency_ms,
        budgets=budgets, storage=storage, run_dir=run_dir, study_name=study_name, seed=seed,
        latency_predictor=setup.latency_predictor, callback=callback, hardware=hardware, role=role,
    )  # fmt: skip


def _time_candidates(
    ctx: RunContext, archs: list[Any], names: list[str], *, target: TargetConfig, family: bool
) -> Any:
    """Side-by-side speed-ups of `archs` and of the named hand-made baselines over the teacher, in the same
    workers (for `kdnas.search.placement`)."""
    from kdnas.evaluate.baselines import baseline_archs
    from kdnas.latency import ModelSpec, measure_side_by_side
    from kdnas.search.placement import Timed

    tcfg = ctx.teacher().config
    base = baseline_archs(tcfg, family=family)
    named = [(f"={n}", base[n]) for n in names if n in base]
    timed = [*named, *((a.arch_id, a) for a in archs)]
    specs = [ModelSpec.for_config(tcfg), *(ModelSpec.for_arch(tcfg, a) for _, a in timed)]
    sbs = measure_side_by_side(specs, target, rounds=max(3, target.compare_rounds), progress=ctx.say)
    speed = {k: sbs.speedup[i] for i, (k, _) in enumerate(timed, 1)}
    return Timed(
        speedup={k: v for k, v in speed.items() if not k.startswith("=")},
        baseline_speedup={k[1:]: v for k, v in speed.items() if k.startswith("=")},
        cv={k: sbs.speedup_cv[i] for i, (k, _) in enumerate(timed, 1)},
        rounds=sbs.rounds,
    )
