"""High-level measuring: archs, model dirs and teachers on a target, through the cache and isolated workers.

`measure_many` is the engine; `measure_archs` / `measure_arch` / `measure_model_dir` / `measure_teacher` are the
calls the search, the export and the CLI use; `measure_side_by_side` times a teacher and its students together.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kdnas.errors import ConfigError, KdnasError, LatencyError
from kdnas.latency.backends import LatencyBackend, get_backend
from kdnas.latency.cache import LatencyCache, backend_key
from kdnas.latency.config import COMPARE_STATISTICS, TargetConfig
from kdnas.latency.fingerprint import fingerprint
from kdnas.latency.result import LatencyResult, Shape
from kdnas.latency.runner import run_worker
from kdnas.latency.spec import ModelSpec, max_positions
from kdnas.latency.stats import TimingSettings
from kdnas.space.arch import Arch

if TYPE_CHECKING:
    from transformers import PretrainedConfig

log = logging.getLogger(__name__)

CacheArg = LatencyCache | bool | None
Outcome = dict[tuple[int, str, Shape], "LatencyResult | LatencyError"]


def load_teacher_config(ref: Any) -> PretrainedConfig:
    """A teacher's HF config from a config object, or a zoo name / model dir / hub id read and checked by
    `kdnas.models.teacher.load_teacher_config` (a supported text encoder; weights not loaded)."""
    from transformers import PretrainedConfig

    if isinstance(ref, PretrainedConfig):
        return ref
    from kdnas.models.teacher import load_teacher_config as checked_config

    return checked_config(ref)


def resolve_backend(name: str, device: str) -> str:
    """The registry name for `name` on `device` (torch on cuda is torch-cuda)."""
    return "torch-cuda" if name == "torch" and device == "cuda" else name


def settings_of(target: TargetConfig) -> TimingSettings:
    return TimingSettings(
        warmup_s=target.warmup_s,
        min_repeats=target.min_repeats,
        rel_ci=target.rel_ci,
        max_time_s=target.max_time_s,
    )


def shapes_of(target: TargetConfig) -> list[Shape]:
    return [Shape(target.batch_size, s) for s in target.seq_lens]


def open_cache(cache: CacheArg, target: TargetConfig | None = None) -> LatencyCache | None:
    """None -> the default cache (or target.cache_dir), False -> no cache, a LatencyCache -> itself."""
    if cache is False:
        return None
    if isinstance(cache, LatencyCache):
        return cache
    return LatencyCache(target.cache_dir if target and target.cache_dir else None)


def check_inputs(
    specs: Sequence[ModelSpec], target: TargetConfig, backends: Sequence[str], shapes: Sequence[Shape]
) -> list[type[LatencyBackend]]:
    """Every problem we can see before starting a worker, as a KdnasError."""
    problems = target.check()
    if problems:
        raise ConfigError([f"target.{p}" for p in problems])
    if not shapes:
        raise LatencyError("no shapes to measure: give at least one batch size and sequence length")
    for sh in shapes:
        if sh.batch_size < 1 or sh.seq_len < 1:
            raise LatencyError(f"shape {sh}: batch size and sequence length must be >= 1")
    classes = []
    for name in backends:
        cls = get_backend(resolve_backend(name, target.device))
        cls.check(target.device)
        classes.append(cls)
    longest = max(sh.seq_len for sh in shapes)
    for spec in specs:
        limit = max_positions(spec.hf_config())
        if limit is not None and longest > limit:
            raise LatencyError(
                f"{spec.label}: sequence length {longest} is longer than the model's {limit} positions "
                f"(max_position_embeddings); use seq_len <= {limit}"
            )
    return classes


def measure_many(
    specs: Sequence[ModelSpec],
    target: TargetConfig,
    *,
    backends: Sequence[str] | None = None,
    shapes: Sequence[Shape] | None = None,
    cache: CacheArg = None,
    backend_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Measure every spec x backend x shape; returns {(spec index, backend, shape): result or LatencyError}.

    Cache hits are returned without measuring; the rest of each backend runs in one fresh worker (re-started
    for the remaining models if one crashes or hangs). `backend_options` go to the backend constructor.
    """
    backends = list(backends or [target.backend])
    # the int8 graph is quantized from the fp32 one: measuring fp32 first lets the int8 worker reuse its export
    backends.sort(key=lambda b: b == "onnxruntime-int8")
    shapes = list(shapes or shapes_of(target))
    classes = check_inputs(specs, target, backends, shapes)
    db = open_cache(cache, target)
    fp = fingerprint(target.threads, target.device).id
    out: Outcome = {}
    keys = [s.key for s in specs]
    with tempfile.TemporaryDirectory(prefix="kdnas-onnx-") as onnx_dir:
        for name, cls in zip(backends, classes):
            opts: dict[str, Any] = dict(backend_options or {})
            if cls.name.startswith("torch"):
                opts.setdefault("attn", target.attn_implementation)
            if cls.name.startswith("onnxruntime"):
                opts.setdefault("workdir", onnx_dir)
            bkey = backend_key(cls.name, opts.get("attn"))
            todo: dict[int, list[Shape]] = {}
            for i in range(len(specs)):
                for sh in shapes:
                    hit = db.get(fp, bkey, keys[i], sh.batch_size, sh.seq_len) if db else None
                    if hit is not None:
                        out[(i, name, sh)] = hit
                    else:
                        todo.setdefault(i, []).append(sh)
            if not todo:
                continue
            if progress:
                n = sum(len(v) for v in todo.values())
                where = "in a fresh worker" if cls.isolate else "in-process"
                progress(f"{name}: measuring {n} model x shape(s) {where} ({target.threads} threads)")
            real = cls.isolate  # in-process test backends (fake) compute latencies, they do not time them
            busy_before = _machine_busy() if real else None
            fresh = _run_backend(cls, specs, todo, target, fp, opts)
            busy = busy_before or (_machine_busy() if real else None)
            if busy:
                log.warning(
                    "the machine was busy while measuring (%s): these latencies may be inflated and are not "
                    "cached; measure on a quiet machine for numbers to trust",
                    busy,
                )
            for (i, sh), r in fresh.items():
                out[(i, name, sh)] = r
                if (
                    isinstance(r, LatencyResult)
                    and db is not None
                    and not busy
                    and (not real or _converged(r, target))
                ):
                    db.put(fp, bkey, keys[i], r)
    return out


def _machine_busy() -> str | None:
    """Why the machine is too loaded to trust (and cache) a measurement, or None.

    A run queue longer than 1.5x the cores means other work competed for the CPU; such a number must never
    become a cache entry that every later search and report would reuse.
    """
    if os.environ.get("KDNAS_LATENCY_CACHE_ALWAYS") == "1":  # tests: cache whatever the machine is doing
        return None
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None
    cores = os.cpu_count() or 1
    return f"load average {load:.1f} on {cores} cores" if load > 1.5 * cores else None


def _converged(r: LatencyResult, target: TargetConfig) -> bool:
    """Only converged medians (CI within 2x the target width) are cached; a timed-out noisy one is not."""
    if os.environ.get("KDNAS_LATENCY_CACHE_ALWAYS") == "1":
        return True
    return r.ci_rel is not None and r.ci_rel <= 2 * target.rel_ci


def _run_backend(
    cls: type[LatencyBackend],
    specs: Sequence[ModelSpec],
    todo: dict[int, list[Shape]],
    target: TargetConfig,
    fp: str,
    opts: dict[str, Any],
) -> dict[tuple[int, Shape], Any]:
    res: dict[tuple[int, Shape], Any] = {}
    settings = settings_of(target)
    if not cls.isolate:
        backend = cls(
            threads=target.threads, device=target.device, settings=settings, fingerprint_id=fp, **opts
        )
        for i, shs in todo.items():
            for sh in shs:
                try:
                    res[(i, sh)] = backend.measure(specs[i], sh)
                except KdnasError as e:
                    res[(i, sh)] = LatencyError(f"{specs[i].label} on {cls.name} at {sh}: {e}")
        return res
    pending = dict(todo)
    while pending:
        order = list(pending)
        job = {
            "backend": cls.name,
            "device": target.device,
            "threads": target.threads,
            "fingerprint": fp,
            "options": opts,
            "settings": vars(settings),
            "items": [
                {"spec": specs[i].to_dict(), "shapes": [[s.batch_size, s.seq_len] for s in pending[i]]}
                for i in order
            ],
        }
        outcome = run_worker(job, timeout_s=target.timeout_s)
        done: set[tuple[int, Shape]] = set()
        for rec in outcome.records:
            i, sh = order[rec["item"]], Shape(*rec["shape"])
            done.add((i, sh))
            if "result" in rec:
                res[(i, sh)] = LatencyResult.from_dict(rec["result"])
            else:
                res[(i, sh)] = LatencyError(f"{specs[i].label} on {cls.name} at {sh}: {rec['error']}")
        remaining = {i: [s for s in pending[i] if (i, s) not in done] for i in order}
        remaining = {i: v for i, v in remaining.items() if v}
        if not remaining:
            break
        if outcome.error is None:  # finished without reporting some: should not happen
            outcome.error = "the worker finished without reporting these"
        # the model the worker was on when it died gets the blame; the others get a fresh worker
        culprit = next(iter(remaining))
        for sh in remaining.pop(culprit):
            res[(culprit, sh)] = LatencyError(
                f"{specs[culprit].label} on {cls.name} at {sh}: {outcome.error}"
            )
        if outcome.startup_s is None:  # died before measuring anything: the others would too
            for i, shs in remaining.items():
                for sh in shs:
                    res[(i, sh)] = LatencyError(f"{specs[i].label} on {cls.name} at {sh}: {outcome.error}")
            break
        pending = remaining
    return res


def _unwrap(results: list[Any], on_error: str) -> list[Any]:
    if on_error == "raise":
        for r in results:
            if isinstance(r, LatencyError):
                raise r
    return results


def measure_archs(
    teacher_config: Any,
    archs: Sequence[Arch],
    target: TargetConfig,
    *,
    cache: CacheArg = None,
    on_error: Literal["raise", "return"] = "raise",
    progress: Callable[[str], None] | None = None,
) -> list[Any]:
    """Latency of each arch (a student of the teacher) on the target's backend at its first shape.

    One worker for all archs (cache hits skipped). `on_error="return"` puts a LatencyError in the list for an
    arch that failed instead of raising, so a search can record that trial as failed and go on.
    """
    tcfg = load_teacher_config(teacher_config)
    specs = [ModelSpec.for_arch(tcfg, a) for a in archs]
    shape = shapes_of(target)[0]
    out = measure_many(specs, target, shapes=[shape], cache=cache, progress=progress)
    return _unwrap([out[(i, target.backend, shape)] for i in range(len(specs))], on_error)


def measure_arch(
    teacher_config: Any, arch: Arch, target: TargetConfig, *, cache: CacheArg = None
) -> LatencyResult:
    """Latency of one student arch on the target (see measure_archs)."""
    return measure_archs(teacher_config, [arch], target, cache=cache)[0]


def measure_model_dir(path: str | Path, target: TargetConfig, *, cache: CacheArg = None) -> LatencyResult:
    """Latency of a saved model (its own weights; its model.onnx / model-int8.onnx for the onnx backends)."""
    spec = ModelSpec.for_dir(path)
    shape = shapes_of(target)[0]
    r = measure_many([spec], target, shapes=[shape], cache=cache)[(0, target.backend, shape)]
    return _unwrap([r], "raise")[0]


def measure_teacher(
    teacher_config_or_dir: Any, target: TargetConfig, *, cache: CacheArg = None
) -> LatencyResult:
    """Latency of the teacher on the target, from its config with random weights (same cost as trained ones)."""
    spec = ModelSpec.for_config(load_teacher_config(teacher_config_or_dir))
    shape = shapes_of(target)[0]
    r = measure_many([spec], target, shapes=[shape], cache=cache)[(0, target.backend, shape)]
    return _unwrap([r], "raise")[0]


@dataclass
class SideBySide:
    """Latencies of several models timed together: every round measures all of them in one fresh worker."""

    median_ms: list[float]
    """Per model: the median over rounds of its per-round median."""
    speedup: list[float]
    """Per model: the median over rounds of the round's speed-up, the median over its visits of (the reference's
    readings just before and after the model / the model's reading), each reading its median pass (or fastest,
    `statistic`)."""
    speedup_range: list[tuple[float, float]]
    """Per model: the lowest and highest per-round speed-up."""
    rounds: int
    """Rounds measured."""
    speedup_cv: list[float] = field(default_factory=list)
    """Per model: the coefficient of variation (std / mean) of its per-round speed-up; 0 with one round."""
    statistic: str = "median"
    """Which pass time a round's ratio is taken from (`target.compare_statistic`): each model's median or its
    fastest pass."""
    round_ratios: dict[str, list[list[float]]] = field(default_factory=dict)
    """Per statistic (`COMPARE_STATISTICS`), per model: the speed-up of every round, so one measurement can be
    read both ways (benchmarks/side_by_side.py)."""


def measure_side_by_side(
    specs: Sequence[ModelSpec],
    target: TargetConfig,
    *,
    reference: int = 0,
    rounds: int = 3,
    slices: int | None = None,
    bracket: int | None = None,
    statistic: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SideBySide:
    """Time `specs` side by side: `rounds` fresh workers, each measuring every model in turn (never cached).

    A speed-up is a ratio of two numbers taken minutes apart in different processes; on a shared or throttling
    machine both drift. Measuring all models in the same worker, in alternating order over rounds, and taking
    the median of per-round ratios cancels most of that drift. With `slices` > 1 (default
    `target.compare_slices`) each round visits every model `slices` times in turn, timing it for
    `target.compare_slice_s` per visit (at most `target.max_time_s`), which also cancels the slow spells within
    a round. `bracket` (default `target.compare_bracket`) times the reference again after every `bracket`
    models of a visit, and a visit's ratio is taken against the mean of the reference's readings just before
    and after the model, seconds apart however many models there are; 0 times the reference once per visit, and
    a model late in a long visit is compared with a reading many seconds older. `reference` is the index of the
    model every speed-up is relative to (the teacher). `statistic` (default `target.compare_statistic`) is the
    pass time a ratio is taken from: the median, or the fastest pass (`min`), which a neighbour's load can only
    lengthen.
    """
    statistic = target.compare_statistic if statistic is None else statistic
    if statistic not in COMPARE_STATISTICS:
        raise ConfigError([f"statistic: {statistic!r} is not one of {', '.join(COMPARE_STATISTICS)}"])
    if rounds < 1:
        raise ConfigError([f"rounds: {rounds} must be >= 1"])
    if not 0 <= reference < len(specs):
        raise ConfigError([f"reference: {reference} is not an index of the {len(specs)} models"])
    slices = target.compare_slices if slices is None else slices
    if slices < 1:
        raise ConfigError([f"slices: {slices} must be >= 1"])
    bracket = target.compare_bracket if bracket is None else bracket
    if bracket < 0:
        raise ConfigError([f"bracket: {bracket} must be >= 0"])
    shape = shapes_of(target)[0]
    timing = target
    if slices > 1:
        # a visit is timed for its slice of time, not until its CI is narrow; after the first visit the warm-up
        # only brings the model back into the caches the others used
        timing = dataclasses.replace(
            target,
            max_time_s=min(target.compare_slice_s, target.max_time_s),
            rel_ci=1e-6,
            min_repeats=3,
            warmup_s=min(target.warmup_s, VISIT_WARMUP_S),
        )
    n = len(specs)
    per_round: list[list[float]] = []
    by_stat: dict[str, list[list[float]]] = {k: [[] for _ in specs] for k in COMPARE_STATISTICS}
    for r in range(rounds):
        if progress:
            progress(f"side-by-side latency: round {r + 1}/{rounds} ({n} models, {slices} visits each)")
        seq, refs = visit_order(n, reference, slices, bracket, first=r)
        res = measure_many([specs[i] for i in seq], timing, shapes=[shape], cache=False)
        got = [_unwrap([res[(j, timing.backend, shape)]], "raise")[0] for j in range(len(seq))]
        at = [[j for j, i in enumerate(seq) if i == m] for m in range(n)]  # each model's positions in `seq`
        per_round.append([statistics.median(got[j].median_ms for j in at[m]) for m in range(n)])
        for stat, ratios in by_stat.items():
            ms = [_pass_ms(g, stat) for g in got]
            for m in range(n):
                ratios[m].append(
                    1.0
                    if m == reference
                    else statistics.median(statistics.fmean(ms[p] for p in refs[j]) / ms[j] for j in at[m])
                )
    ratios = by_stat[statistic]
    med = [statistics.median(rd[i] for rd in per_round) for i in range(n)]
    return SideBySide(
        median_ms=med,
        speedup=[statistics.median(x) for x in ratios],
        speedup_range=[(min(x), max(x)) for x in ratios],
        rounds=rounds,
        speedup_cv=[ratio_cv(x) for x in ratios],
        statistic=statistic,
        round_ratios=by_stat,
    )


VISIT_WARMUP_S = 0.1
"""Warm-up seconds of a visit when a round visits every model several times (at most `target.warmup_s`)."""


def visit_order(
    n: int, reference: int, slices: int, bracket: int, *, first: int = 0
) -> tuple[list[int], dict[int, list[int]]]:
    """One round's timing sequence of `n` models (indexes into the list, repeats allowed) and, for every position
    of a model other than `reference`, the positions of the reference readings its ratio is taken against.

    The models are visited `slices` times, in reverse order every other visit (and every other round, `first`).
    With `bracket` > 0 the reference is read at the start and again after every `bracket` models, and a model's
    ratio uses the readings just before and after its group; with 0 the reference is read once per visit in its
    place in the order (the behaviour before 2026-12-06), and a model's ratio uses that reading.
    """
    seq: list[int] = []
    refs: dict[int, list[int]] = {}
    others = [i for i in range(n) if i != reference]
    if bracket == 0:
        for v in range(slices):
            order = list(range(n)) if (first + v) % 2 == 0 else list(range(n))[::-1]
            at = len(seq) + order.index(reference)
            refs.update({len(seq) + k: [at] for k, i in enumerate(order) if i != reference})
            seq += order
        return seq, refs
    seq.append(reference)
    for v in range(slices):
        order = others if (first + v) % 2 == 0 else others[::-1]
        for g in range(0, len(order), bracket):
            before = len(seq) - 1
            group = order[g : g + bracket]
            after = before + len(group) + 1
            refs.update({before + 1 + k: [before, after] for k in range(len(group))})
            seq += [*group, reference]
    return seq, refs


def _pass_ms(r: LatencyResult, stat: str) -> float:
    """A reading's pass time by `stat` (a result without a fastest pass, as a backend that does not record one
    returns, reads as its median rather than 0)."""
    return r.min_ms if stat == "min" and r.min_ms > 0 else r.median_ms


def ratio_cv(ratios: Sequence[float]) -> float:
    """Coefficient of variation (population std / mean) of per-round speed-ups; 0 for fewer than two."""
    return statistics.pstdev(ratios) / statistics.fmean(ratios) if len(ratios) > 1 else 0.0


def measure(model: Any, target: TargetConfig | None = None, *, teacher_config: Any = None) -> LatencyResult:
    """Latency of one model on `target` (default: CPU, 2 threads, batch 1, sequence 128) in an isolated worker:
    an `Arch` (a student of `teacher_config`'s family, random weights), a saved model dir (its own weights, or
    its ONNX files for the onnxruntime backends), or an HF config (e.g. the teacher's)."""
    from kdnas.space.arch import Arch

    target = target or TargetConfig()
    if isinstance(model, Arch):
        if teacher_config is None:
            raise LatencyError(
                "measure(Arch): pass teacher_config (the family and vocabulary the student takes)"
            )
        return measure_arch(load_teacher_config(teacher_config), model, target)
    if isinstance(model, (str, Path)) and Path(model).is_dir():
        return measure_model_dir(model, target)
    if hasattr(model, "model_type"):
        return measure_teacher(model, target)
    raise LatencyError(f"measure: {model!r} is neither an Arch, a model dir nor an HF config")
