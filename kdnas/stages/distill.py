"""The distill stage: full distillation of each recommended student (and of the hand-made baselines) on the
training split, saved as HF + sentence-transformers folders."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas import run_dir as rd
from kdnas._io import write_json_atomic
from kdnas.distill.config import DistillConfig
from kdnas.errors import KdnasError
from kdnas.evaluate.config import EvaluateConfig
from kdnas.stages.context import RunContext
from kdnas.stages.results import DistillResult, LatencyResult, SearchOutcome

if TYPE_CHECKING:
    from kdnas.distill.teacher_cache import TeacherNeeds
    from kdnas.space.arch import Arch


def student_name(rec: dict[str, Any]) -> str:
    """students/<name> of a recommendation: student-3x, student-12ms, student-at-<baseline> (equal latency)."""
    label = str(rec["budget"]["label"]).replace(" ", "").replace(".", "_")
    return f"student-at-{label[1:]}" if label.startswith("=") else f"student-{label}"


def student_jobs(recs: list[dict[str, Any]]) -> dict[str, tuple[Arch, dict[str, Any]]]:
    """One distillation per distinct recommended arch (arch_id -> (arch, the recommendation that names it)).

    An arch is named by the first budget that recommends it in this order: the user's own budgets before the
    equal-latency bands, the tightest first. Not the recommendations' order: a band is re-centred on the
    side-by-side timing after the budgets were sorted, so it may come out looser than a plain budget listed after
    it, and an arch both recommended was distilled twice (student-3x and student-at-bert-mini, the same arch).
    """
    from kdnas.space.arch import Arch

    jobs: dict[str, tuple[Arch, dict[str, Any]]] = {}
    for rec in sorted(
        recs, key=lambda r: (r["budget"].get("min_latency_ms") is not None, r["budget"]["latency_ms"])
    ):
        arch = Arch.from_dict(rec["arch"])
        jobs.setdefault(arch.arch_id, (arch, rec))
    return jobs


def student_tokens(
    distill: DistillConfig, arch_id: str, recs: list[dict[str, Any]], teacher_latency_ms: float | None
) -> int:
    """Full-distillation tokens of the student of `arch_id`: `distill.fast_tokens` when a user budget that
    recommends it is at least `distill.fast_speedup` x faster than the teacher (the larger of the two budgets),
    else `distill.full_tokens`; an equal-latency band always counts as `full_tokens`."""
    from kdnas.space.arch import Arch

    if distill.fast_tokens is None:
        return distill.full_tokens
    for r in recs:
        b = r["budget"]
        if Arch.from_dict(r["arch"]).arch_id != arch_id or b.get("min_latency_ms") is not None:
            continue
        speedup = b.get("speedup")
        if speedup is None and teacher_latency_ms:
            speedup = teacher_latency_ms / b["latency_ms"]
        if speedup is not None and speedup >= distill.fast_speedup - 1e-9:
            return max(distill.fast_tokens, distill.full_tokens)
    return distill.full_tokens


def distill(
    ctx: RunContext,
    *,
    distill: DistillConfig,
    evaluate: EvaluateConfig,
    search: SearchOutcome,
    latency: LatencyResult | None = None,
) -> DistillResult:
    """Distil each recommended student (and the TinyBERT-shape baseline) on the full training split."""

    recs = search.recommended()
    if not recs:
        raise KdnasError(
            "no searched arch meets any latency budget; relax target.speedups / target.budgets_ms or search "
            "longer (search.n_trials)"
        )
    jobs = student_jobs(recs)
    twins = _vocab_twins(ctx, jobs) if distill.vocab_twins else []
    baselines_plan: list[tuple[str, Arch]] = []
    if evaluate.baselines:
        from kdnas.evaluate.baselines import baseline_archs

        family = evaluate.baseline_family
        for bname, arch in baseline_archs(ctx.teacher().config, family=family).items():
            if bname == "every-other-layer":
                if not family:
                    continue  # truncated teacher weights, fine-tuned directly (DistilBERT-style), see evaluate
                bname = "every-other-layer-kd"  # the same shape distilled on the students' budget
            baselines_plan.append((bname, arch))
    # a baseline whose shape the search also recommended is the same model: the same arch inherits the same
    # weights from the teacher (the builder is seeded) and trains on the same rows with the same seed, so it is
    # distilled (and scored) once, under the student's name. One distilled apart before this rule is kept.
    same_as = {
        bname: student_name(jobs[arch.arch_id][1])
        for bname, arch in baselines_plan
        if arch.arch_id in jobs and not _finished(ctx.run_dir / rd.BASELINES / bname)
    }
    students: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    total = len(jobs) + len(twins) + len(baselines_plan) - len(same_as)
    plan = [(arch, ctx.run_dir / rd.STUDENTS / student_name(rec)) for arch, rec in jobs.values()]
    plan += [(twin, ctx.run_dir / rd.STUDENTS / name) for name, twin, _ in twins]
    plan += [
        (arch, ctx.run_dir / rd.BASELINES / bname) for bname, arch in baselines_plan if bname not in same_as
    ]
    also = _later_needs(ctx, plan, distill)
    with ctx.steps("distill: models", total, bar=False) as step:  # each distillation has its own bar
        for arch, rec in jobs.values():
            name = student_name(rec)
            out_dir = ctx.run_dir / rd.STUDENTS / name
            tokens = student_tokens(
                distill, arch.arch_id, recs, latency.teacher_latency_ms if latency else None
            )
            model_dir = distill_student(
                ctx,
                name,
                arch,
                out_dir,
                distill=dataclasses.replace(distill, full_tokens=tokens),
                cache_also=also.get(out_dir),
            )
            students.append(
                {
                    "name": name,
                    "model_dir": str(model_dir.relative_to(ctx.run_dir)),
                    "arch_id": arch.arch_id,
                    "budget_label": rec["budget"]["label"],
                    "budget_ms": rec["budget"]["latency_ms"],
                    "tokens": tokens,
                    "kd_loss": rec.get("kd_loss"),
                    "search_latency_ms": rec.get("latency_ms"),
                    "params_m": rec.get("params_m"),
                    "vocab_size": arch.vocab_size,
                }
            )
            step(f"{name} ({arch.arch_id}) distilled")
        by_name = {st["name"]: st for st in students}
        for name, twin, of in twins:
            out_dir = ctx.run_dir / rd.STUDENTS / name
            # on its student's budget: the twin shows what the vocabulary alone changes
            twin_cfg = dataclasses.replace(distill, full_tokens=by_name[of]["tokens"])
            model_dir = distill_student(
                ctx, name, twin, out_dir, distill=twin_cfg, cache_also=also.get(out_dir)
            )
            students.append(
                {
                    **by_name[of],
                    "name": name,
                    "model_dir": str(model_dir.relative_to(ctx.run_dir)),
                    "arch_id": twin.arch_id,
                    "kd_loss": None,  # not a search trial: its held-out loss is in its result.json
                    "search_latency_ms": None,
                    "params_m": None,
                    "vocab_size": twin.vocab_size,
                    "twin_of": of,
                }
            )
            step(f"{name} ({twin.arch_id}) distilled")
        for bname, arch in baselines_plan:
            if bname in same_as:
                student = by_name[same_as[bname]]
                baselines.append(
                    {
                        "name": bname,
                        "model_dir": student["model_dir"],
                        "arch_id": arch.arch_id,
                        "same_as": student["name"],
                    }
                )
                ctx.say(
                    f"  baseline {bname} ({arch.arch_id}): the searched {student['name']} has its shape, so the same "
                    "start and seed: not distilled again, its model stands for both"
                )
                continue
            out_dir = ctx.run_dir / rd.BASELINES / bname
            d = distill_student(ctx, bname, arch, out_dir, distill=distill, cache_also=also.get(out_dir))
            baselines.append(
                {"name": bname, "model_dir": str(d.relative_to(ctx.run_dir)), "arch_id": arch.arch_id}
            )
            step(f"baseline {bname} ({arch.arch_id}) distilled")
    out = DistillResult(students=students, baselines=baselines)
    write_json_atomic(ctx.path(rd.SUMMARY), out.to_dict())
    return out


def _finished(out: Path) -> bool:
    return (out / "result.json").exists() and (out / "model" / "config.json").exists()


def _later_needs(
    ctx: RunContext, plan: list[tuple[Any, Path]], distill: DistillConfig
) -> dict[Path, TeacherNeeds]:
    """Out dir -> the teacher outputs that the distillations after it in `plan` (not yet finished) will read,
    so that the first one's teacher pass fills the run's cache for all of them (`kdnas.distill.distill`'s
    `cache_also`): with a 12-layer teacher, a second student that needs other layers otherwise runs the teacher
    again on every row. Empty with one distillation left."""
    from kdnas.distill import Distiller, teacher_info
    from kdnas.distill.distiller import mlm_head, teacher_pooling

    pending = [(arch, out) for arch, out in plan if not _finished(out)]
    if len(pending) < 2:
        return {}
    teacher = ctx.teacher()
    info, head, pooling = teacher_info(teacher), mlm_head(teacher), teacher_pooling(teacher)
    builder = ctx.student_builder()
    out: dict[Path, TeacherNeeds] = {}
    later: TeacherNeeds | None = None
    # from the last back: each out dir gets the union of what every distillation after it reads
    for (_, path), (arch, _) in zip(reversed(pending[:-1]), reversed(pending[1:]), strict=True):
        n = Distiller(builder.build(arch), info, distill, teacher_head=head, pooling=pooling).needs()
        later = n if later is None else later | n
        out[path] = later
    return out


def _vocab_twins(ctx: RunContext, jobs: dict[str, tuple[Any, dict[str, Any]]]) -> list[tuple[str, Any, str]]:
    """(name, arch, name of the student it twins) of each recommended student again with every other vocabulary
    choice of the space (`distill.vocab_twins`)."""
    space = ctx.space()
    out = []
    for arch, rec in jobs.values():
        for choice in space.vocab_choices:
            twin = arch.replace(vocab_size=space.vocab_size_of(choice))
            if twin.arch_id in jobs or twin.arch_id == arch.arch_id:
                continue
            out.append((f"{student_name(rec)}-vocab-{choice}", twin, student_name(rec)))
    return out


def distill_student(
    ctx: RunContext,
    name: str,
    arch: Any,
    out: Path,
    *,
    distill: DistillConfig,
    cache_also: TeacherNeeds | None = None,
) -> Path:
    """Full distillation of one arch on `distill.full_tokens` into out/model (resumes from out's checkpoint after a
    kill; a finished one is returned as it is). cache_also: teacher outputs of the stage's later distillations,
    written to the run's teacher cache in the same teacher pass when they fit its budget (not under torchrun,
    `distill.nproc` > 1: each of those fills its own)."""
    from kdnas.distill import distill as run_distill
    from kdnas.distill import heldout_kd_loss
    from kdnas.distill.checkpoint import has_checkpoint

    model_dir = out / "model"
    if _finished(out):
        _same_arch(out, arch)
        return model_dir
    if distill.nproc > 1:
        if arch.vocab_size is None:
            return _distill_under_torchrun(ctx, name, arch, out, distill=distill)
        ctx.say(
            f"  {name}: a trimmed vocabulary is distilled in one process (distill.nproc applies to full ones)"
        )
    splits = ctx.corpus()
    builder = ctx.student_builder()
    student = builder.build(arch)
    input_map = builder.input_map(arch)  # a trimmed vocabulary reads the data's (teacher) ids through it
    resume = has_checkpoint(out)
    ctx.say(
        f"  distilling {name} ({arch.arch_id}) on {distill.full_tokens:,} tokens{' (resuming)' if resume else ''}"
    )
    cache = ctx.run_dir / rd.TEACHER_CACHE
    result = run_distill(
        ctx.teacher(), student, splits.train, distill, tokens=distill.full_tokens, mode="standard",
        teacher_cache=cache, out_dir=out, resume=resume, seed=ctx.seed, progress=ctx.progress, input_map=input_map,
        cache_also=cache_also,
    )  # fmt: skip
    if result.failed:
        raise KdnasError(f"full distillation of {name} failed: {result.failed}; see {out}/train_log.jsonl")
    kd = heldout_kd_loss(
        ctx.teacher(), student, splits.heldout, distill, projections=result.distiller, teacher_cache=str(cache),
        input_map=input_map,
    )  # fmt: skip
    vocab: dict[str, Any] = {}
    if arch.vocab_size is not None:
        table = ctx.vocab()
        vocab = {
            "choice": table.choice_of(arch.vocab_size),
            "vocab_size": arch.vocab_size,
            "teacher_vocab_size": table.teacher_vocab_size,
            "unk_rate_train": table.unk_rate(arch, splits.train),
            "unk_rate_heldout": table.unk_rate(arch, splits.heldout),
        }
        ctx.say(
            f"  {name}: {vocab['unk_rate_heldout']:.3%} of held-out tokens are outside its vocabulary (unk)"
        )
    save_student(student, ctx.student_tokenizer(arch), result.distiller, model_dir)
    write_json_atomic(
        out / "result.json",
        {
            "name": name,
            "arch": arch.to_dict(),
            "heldout_kd_loss": kd,
            **({"vocab": vocab} if vocab else {}),
            **result.to_dict(history=False),
        },
    )
    return model_dir


def _distill_under_torchrun(
    ctx: RunContext, name: str, arch: Any, out: Path, *, distill: DistillConfig
) -> Path:
    """`torchrun --nproc-per-node N -m kdnas distill` for one student, with the run's own config (corpus, teacher,
    losses, seed), resumed from its checkpoint after a kill (with any number of processes); its result.json then
    says what the run's students say."""
    import json
    import subprocess
    import sys

    from kdnas.cli.distill import ARGS_FILE

    out.mkdir(parents=True, exist_ok=True)
    cfg_file = out / "run-config.yaml"
    cfg_file.write_text(ctx.config_with(distill=distill).to_yaml())
    n = distill.nproc
    threads = max(1, (os.cpu_count() or 1) // n)
    where = ["--resume", str(out)] if (out / ARGS_FILE).is_file() else ["--out", str(out)]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "-m", "kdnas",
        "distill", *where, "--config", str(cfg_file), "--arch", arch.arch_id, "--tokens", str(distill.full_tokens),
        "--seed", str(ctx.seed), "--threads", str(threads), *([] if ctx.progress else ["--no-progress"]),
    ]  # fmt: skip
    ctx.say(
        f"  distilling {name} ({arch.arch_id}) on {distill.full_tokens:,} tokens in {n} processes (torchrun, "
        f"{threads} threads each){' (resuming)' if where[0] == '--resume' else ''}"
    )
    proc = subprocess.run(cmd, capture_output=not ctx.progress, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-15:])
        raise KdnasError(
            f"full distillation of {name} under torchrun ({n} processes) failed (exit {proc.returncode}); run "
            f"the stage again to resume from its checkpoint, or set distill.nproc: 1"
            + (f":\n{tail}" if tail else "")
        )
    result = json.loads((out / "result.json").read_text())
    model_dir = out / "model"
    if "heldout_kd_loss" not in result or not (model_dir / "config.json").is_file():
        raise KdnasError(
            f"{out}: torchrun finished but left no distilled model; delete {out} to start it afresh"
        )
    write_json_atomic(out / "result.json", {"name": name, **result, "arch": arch.to_dict(), "processes": n})
    return model_dir


def save_student(student: Any, tokenizer: Any, distiller: Any, model_dir: Path) -> None:
    """A distilled student as an HF folder with its tokenizer and, for a sentence-embedding teacher, the
    sentence-transformers files (pooling, Dense into the teacher's space); written to a temp dir and renamed,
    so a kill leaves the old dir or the new one. `kdnas run` and `kdnas distill` both save with it."""
    tmp = model_dir.with_name(f"{model_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    student.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _write_sentence_config(distiller, tmp)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    os.replace(tmp, model_dir)


def _write_sentence_config(distiller: Any, model_dir: Path) -> None:
    """Make a distilled student dir a sentence-transformers folder: the pooling its sentence losses matched
    (the teacher's), and the Dense projection into the teacher's space when the student is narrower."""
    from kdnas.models.pooling import write_st_config

    pooling = getattr(distiller, "pooling", None)
    if pooling is None:
        return
    from kdnas.distill.teacher_cache import base_encoder

    enc: Any = base_encoder(distiller.student)
    hidden = int(enc.config.hidden_size)
    dense = None
    if "sentence" in distiller.proj:
        lin = distiller.proj["sentence"]
        dense = (lin.weight.detach().cpu(), lin.bias.detach().cpu())
    write_st_config(model_dir, pooling, hidden, dense=dense, max_seq_length=pooling.max_seq_length)


def _same_arch(out: Path, arch: Any) -> None:
    """A finished student dir is reused only for the arch it was distilled for (a hand-edited run dir could
    leave another budget's student under this name)."""
    from kdnas.space.arch import Arch

    got = json.loads((out / "result.json").read_text()).get("arch")
    if got is not None and Arch.from_dict(got).arch_id != arch.arch_id:
        raise KdnasError(
            f"{out} holds a student of {Arch.from_dict(got).arch_id}, but this run recommends {arch.arch_id} "
            f"for it: move {out} away (or rewind the run with a config change) and run again"
        )
