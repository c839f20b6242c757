"""The evaluate stage: the teacher, the baselines and the students fine-tuned on the suite, their label-free
fidelity to the teacher, all timed side by side; the retention table."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdnas import run_dir as rd
from kdnas._io import write_json_atomic
from kdnas.config import TeacherConfig
from kdnas.evaluate.config import EvaluateConfig
from kdnas.latency.config import TargetConfig
from kdnas.stages.context import RunContext
from kdnas.stages.results import DistillResult, EvaluateResult


def evaluate(
    ctx: RunContext, *, evaluate: EvaluateConfig, target: TargetConfig, teacher: TeacherConfig,
    distill: DistillResult,
) -> EvaluateResult:  # fmt: skip
    """Fine-tune the teacher, the baselines and the students on the tasks; retention and speed-up tables."""
    from kdnas.evaluate.retention import ModelReport, retention_table
    from kdnas.evaluate.runner import evaluate_encoder, load_tasks
    from kdnas.latency import ModelSpec, measure_side_by_side

    tasks = load_tasks(evaluate.tasks, max_train=evaluate.max_train_examples, options=evaluate.task_options)
    models: list[tuple[str, Callable[[], Any], Path | None]] = [("teacher", _teacher_encoder(ctx), None)]
    if evaluate.baselines:
        eol_dir = _every_other_layer_dir(ctx)
        models.append(("every-other-layer", _dir_encoder(str(eol_dir), "every-other-layer"), eol_dir))
    for m in [*distill.baselines, *distill.students]:
        d = ctx.run_dir / m["model_dir"]  # relative to the run dir (absolute paths pass through)
        models.append((m["name"], _dir_encoder(str(d), m["name"]), d))
    if evaluate.static_peer:
        peer = static_peer_dir(ctx)
        models.append((rd.STATIC_PEER, _dir_encoder(str(peer), rd.STATIC_PEER), peer))

    # a baseline the search also recommended (`same_as`, see the distill stage) is the student's model: scored,
    # fidelity-checked and timed once, the baseline's row a copy under its own name
    order = [n for n, _, _ in models]
    aliases = {b["name"]: b["same_as"] for b in distill.baselines if b.get("same_as") in order}
    models = [m for m in models if m[0] not in aliases]
    reports: dict[str, ModelReport] = {}
    for name, _, _ in models:
        path = ctx.path(rd.EVALUATE, f"{name}.json")
        if path.exists():  # scored before a kill: kept
            reports[name] = ModelReport.from_dict(json.loads(path.read_text()))
    # a model is fine-tuned on the tasks it has no current result for (all of them the first time; after a
    # kill, or when the suite or a task's protocol changed, only those)
    todo = [(m, stale_tasks(reports.get(m[0]), tasks)) for m in models]
    todo = [(m, ts) for m, ts in todo if ts]
    with ctx.steps("evaluate: models fine-tuned", len(todo)) as step:
        for (name, make, _), todo_tasks in todo:
            cached = _teacher_eval_cache(ctx, teacher, evaluate) if name == "teacher" else None
            report = reports.get(name)
            if cached is not None and cached.exists():
                report = merge_reports(ModelReport.from_dict(json.loads(cached.read_text())), report)
                todo_tasks = stale_tasks(report, tasks)
                if not todo_tasks:
                    ctx.say("  teacher: scores reused from an earlier run with the same protocol")
            if todo_tasks:
                what = ", ".join(t.name for t in todo_tasks)
                redo = report is not None and len(todo_tasks) < len(tasks)
                ctx.say(f"  scoring {name} on {what}" + (" (the other tasks' scores kept)" if redo else ""))
                protocol = evaluate if name == "teacher" else evaluate.for_students()
                if name == rd.STATIC_PEER:  # a bare table learns slower: it may also take 10x the lr (on dev)
                    protocol = dataclasses.replace(
                        protocol, lrs=sorted({*protocol.lrs, *(10 * x for x in protocol.lrs)})
                    )

                def save(partial: ModelReport, name: str = name, kept: ModelReport | None = report) -> None:
                    # after every task: a kill loses at most the task in progress (`stale_tasks` on resume)
                    partial = merge_reports(partial, kept)
                    partial.name = name
                    write_json_atomic(ctx.path(rd.EVALUATE, f"{name}.json"), partial.to_dict())

                report = merge_reports(evaluate_encoder(make(), todo_tasks, protocol, on_result=save), report)
                if cached is not None:
                    write_json_atomic(cached, report.to_dict())
            assert report is not None
            report.name = name
            report.results = {t.name: report.results[t.name] for t in tasks}  # in the suite's order
            write_json_atomic(ctx.path(rd.EVALUATE, f"{name}.json"), report.to_dict())
            reports[name] = report
            step(f"{name} scored")
    for name, _, d in models:
        if d is not None and reports[name].fidelity is None and evaluate.fidelity_passages > 0:
            reports[name].fidelity = fidelity(ctx, d, passages=evaluate.fidelity_passages)
            f = reports[name].fidelity or {}
            if f:
                ctx.say(
                    f"  fidelity of {name}: emb cosine {_num(f.get('mean_cosine'))}, CKA {_num(f.get('cka'))}, "
                    f"recall@10 {_num(f.get('recall_at_10'))} ({f.get('passages')} held-out passages)"
                )
            write_json_atomic(ctx.path(rd.EVALUATE, f"{name}.json"), reports[name].to_dict())
    pair_tasks = [t for t in tasks if getattr(t, "is_pair", False)]
    if evaluate.pair_similarity and pair_tasks:
        for name, _, d in models:
            if reports[name].pair_similarity is None:
                scores = pair_scores(ctx, d, pair_tasks, max_len=evaluate.max_len)
                reports[name].pair_similarity = scores
                got = ", ".join(f"{t} {v['metric']} {v['value']:.3f}" for t, v in scores.items())
                ctx.say(f"  zero-shot pair similarity of {name}: {got or 'n/a'}")
                write_json_atomic(ctx.path(rd.EVALUATE, f"{name}.json"), reports[name].to_dict())
    for alias, of in aliases.items():
        reports[alias] = dataclasses.replace(reports[of], name=alias)
        write_json_atomic(ctx.path(rd.EVALUATE, f"{alias}.json"), reports[alias].to_dict())
        ctx.say(f"  {alias}: the same model as {of}, its scores, fidelity and timing copied")
    reports = {n: reports[n] for n in order}  # in the models' order, the baselines' copies among them
    # every model timed in the same workers, rounds alternating the order: speed-ups are per-round ratios
    from kdnas.latency.backends import get_backend

    static_ok = get_backend(target.backend).times_static
    timed = [
        (n, d)
        for n, _, d in models
        if n == "teacher" or (d is not None and (n != rd.STATIC_PEER or static_ok))
    ]
    if evaluate.static_peer and not static_ok:
        ctx.say(
            f"  {rd.STATIC_PEER}: not timed (the {target.backend} backend times graphs; a torch backend times it)"
        )
    specs = [
        ModelSpec.for_config(ctx.teacher().config) if d is None else ModelSpec.for_dir(d) for _, d in timed
    ]
    sbs = measure_side_by_side(specs, target, rounds=target.compare_rounds, progress=ctx.say)
    latency = {n: ms for (n, _), ms in zip(timed, sbs.median_ms)}
    spread = {n: [round(lo, 3), round(hi, 3)] for (n, _), (lo, hi) in zip(timed, sbs.speedup_range)}
    ratios = {n: s for (n, _), s in zip(timed, sbs.speedup)}  # medians of per-round ratios, as placement uses
    for alias, of in aliases.items():  # a student: always timed
        latency[alias], spread[alias], ratios[alias] = latency[of], spread[of], ratios[of]
    table = retention_table(
        reports["teacher"],
        [r for n, r in reports.items() if n != "teacher"],
        latency_ms=latency,
        speedup=ratios,
    )
    table.write_json(ctx.path(rd.RETENTION))
    table.write_markdown(ctx.path(rd.RETENTION_MD))
    if any(r.pair_similarity for r in reports.values()):
        with ctx.path(rd.RETENTION_MD).open("a") as fh:
            fh.write("\n" + pair_markdown(reports) + "\n")
    if aliases:
        with ctx.path(rd.RETENTION_MD).open("a") as fh:
            for alias, of in aliases.items():
                fh.write(
                    f"\n{alias} is the same model as {of}: the search recommended the baseline's own shape, "
                    "which inherits the same weights and trains with the same seed, so it was distilled, scored "
                    "and timed once.\n"
                )
    rows = table.to_dict()["rows"] if hasattr(table, "to_dict") else []
    return EvaluateResult(retention=rows, latency_ms=latency, speedup_range=spread, latency_rounds=sbs.rounds)


def static_peer_dir(ctx: RunContext) -> Path:
    """The teacher's static-embedding peer (`kdnas.models.static`), made once per run dir (atomically)."""
    from kdnas.models.static import is_static_dir, make_static_peer

    out = ctx.run_dir / rd.PEERS / rd.STATIC_PEER
    if not is_static_dir(out) or not (out / "model.safetensors").is_file():
        import time

        t0 = time.perf_counter()
        make_static_peer(ctx.teacher(), out, pooling=ctx.pooling())
        ctx.say(
            f"  {rd.STATIC_PEER}: static embeddings of the teacher's vocabulary made in {time.perf_counter() - t0:.0f} s"
        )
    return out


def stale_tasks(report: Any, tasks: list[Any]) -> list[Any]:
    """The tasks of `tasks` that `report` (a `ModelReport`, or None) has no current result for: missing, or a
    pair task scored under another pair encoding (a result from before `pair_encoding` counts as `cross`)."""
    if report is None:
        return list(tasks)
    out = []
    for t in tasks:
        r = report.results.get(t.name)
        if r is None or (getattr(t, "is_pair", False) and (r.pair_encoding or "cross") != t.pair_encoding):
            out.append(t)
    return out


def merge_reports(new: Any, old: Any) -> Any:
    """`new` (a `ModelReport`) with the task results of `old` that `new` does not have; fidelity and zero-shot
    pair scores are kept from `old` where `new` has none (they do not depend on the fine-tuning)."""
    if old is None:
        return new
    new.results = {**{k: v for k, v in old.results.items() if k not in new.results}, **new.results}
    new.fidelity = new.fidelity if new.fidelity is not None else old.fidelity
    new.pair_similarity = new.pair_similarity if new.pair_similarity is not None else old.pair_similarity
    return new


def pair_scores(ctx: RunContext, model_dir: Path | None, tasks: list[Any], *, max_len: int) -> dict[str, Any]:
    """Zero-shot pair similarity of the teacher (`model_dir` None) or of the model in `model_dir` on `tasks`,
    embedded as each one embeds (its pooling config, its Dense)."""
    from kdnas.distill.distiller import teacher_pooling
    from kdnas.evaluate.fidelity import load_embedder
    from kdnas.evaluate.pair_similarity import pair_similarity
    from kdnas.models.pooling import Pooling

    if model_dir is None:
        t = ctx.teacher()
        pooling = teacher_pooling(t) or Pooling(mode="mean", source="default: mean pooling")
        model, tok, dense = t.model, t.tokenizer, None
    else:
        model, tok, pooling, dense = load_embedder(model_dir)
    out = {}
    for task in tasks:
        r = pair_similarity(model, tok, task, pooling, dense=dense, max_len=max_len)
        if r is not None:
            out[task.name] = r.to_dict()
    return out


def pair_markdown(reports: dict[str, Any]) -> str:
    """The zero-shot pair table appended to retention.md: one row per model, one column per pair task."""
    tasks = sorted({t for r in reports.values() for t in (r.pair_similarity or {})})
    lines = [
        "## Zero-shot pair similarity (no fine-tuning)",
        "",
        "Cosine of the two texts' embeddings (each model's pooling and Dense): Spearman for regression, accuracy at "
        "the dev-chosen threshold for two classes. An order task stays at chance by construction (cosine is "
        "symmetric).",
        "",
        "| model | " + " | ".join(tasks) + " |",
        "| --- |" + " --- |" * len(tasks),
    ]
    for name, r in reports.items():
        ps = r.pair_similarity or {}
        cells = [f"{ps[t]['value']:.3f} ({ps[t]['metric']})" if t in ps else "n/a" for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _every_other_layer_dir(ctx: RunContext) -> Path:
    """The truncated teacher (every other layer, DistilBERT-style), saved once (atomically) as a model dir."""
    from kdnas.evaluate.baselines import every_other_layer

    eol_dir = ctx.run_dir / rd.BASELINES / "every-other-layer" / "model"
    if not (eol_dir / "config.json").exists():
        t = ctx.teacher()
        tmp = eol_dir.with_name("model.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        every_other_layer(t.model).save_pretrained(tmp)
        t.tokenizer.save_pretrained(tmp)
        os.replace(tmp, eol_dir)
    return eol_dir


def fidelity(ctx: RunContext, model_dir: Path, *, passages: int) -> dict[str, Any] | None:
    """Label-free fidelity of the model in `model_dir` to the teacher on `passages` held-out passages."""
    from transformers import AutoModel

    from kdnas.distill.distiller import teacher_pooling
    from kdnas.evaluate.fidelity import embedding_fidelity, load_dense
    from kdnas.models.pooling import Pooling
    from kdnas.models.static import is_static_dir, load_static
    from kdnas.space.arch import Arch

    ids, mask = ctx.fidelity_passages(passages)
    if len(ids) <= 10:
        ctx.say(f"  fidelity: only {len(ids)} held-out passages; left out (raise corpus.heldout_fraction)")
        return None
    teacher = ctx.teacher()
    pooling = teacher_pooling(teacher) or Pooling(mode="mean", source="default: mean pooling")
    static = is_static_dir(model_dir)
    student = (
        load_static(model_dir)[0]
        if static
        else AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    )
    input_map = None
    rows = int(student.get_input_embeddings().weight.shape[0])
    table = ctx.vocab()
    if table is not None and rows != table.teacher_vocab_size and not static:
        cfg: Any = student.config
        arch = Arch(num_layers=cfg.num_hidden_layers, hidden_size=cfg.hidden_size,
                    num_heads=cfg.num_attention_heads, ffn_size=cfg.intermediate_size,
                    vocab_size=rows)  # fmt: skip
        input_map = table.input_map(arch)
    res = embedding_fidelity(
        teacher.model, student, ids, mask, pooling=pooling, student_dense=None if static else load_dense(model_dir),
        student_input_map=input_map, teacher_out=ctx.teacher_fidelity_encoding(passages),
    )  # fmt: skip
    return res.to_dict()


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _teacher_encoder(ctx: RunContext) -> Callable[[], Any]:
    def make() -> Any:
        from kdnas.evaluate.encoder import Encoder

        t = ctx.teacher()
        return Encoder(model=t.model, tokenizer=t.tokenizer, name="teacher")

    return make


def _dir_encoder(model_dir: str, name: str) -> Callable[[], Any]:
    def make() -> Any:
        from kdnas.evaluate.encoder import load_encoder

        return load_encoder(model_dir, name=name)

    return make


def _teacher_eval_cache(ctx: RunContext, teacher: TeacherConfig, evaluate: EvaluateConfig) -> Path:
    """The teacher's scores depend only on the teacher, tasks and protocol: shared across runs."""
    import hashlib

    import kdnas
    from kdnas.cache import cache_dir
    from kdnas.distill.teacher_cache import teacher_info
    from kdnas.precision import resolve_device

    ev = dataclasses.asdict(evaluate)
    # what decides which other models are scored, or how fast, not the teacher's scores
    for k in ("baselines", "task_distill", "threads", "student_lrs", "pair_similarity", "static_peer"):
        ev.pop(k, None)
    # the same, added later: set to their defaults rather than dropped, so scores cached before stay valid
    ev.update(baseline_family=False, fidelity_passages=type(evaluate)().fidelity_passages)
    ev["device"] = resolve_device(evaluate.device).type  # `auto` on a CPU machine keeps the key of `cpu`
    tasks = []
    for t in ev.pop("tasks"):
        p = Path(t)
        tasks.append([t, p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else t)
    key = json.dumps(
        {
            "teacher": teacher.name,
            "weights": teacher_info(ctx.teacher().model).fingerprint,
            "kdnas": kdnas.__version__,
            "tasks": tasks,
            "evaluate": ev,
        },
        sort_keys=True,
    )
    return cache_dir() / "evaluate" / f"teacher-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
