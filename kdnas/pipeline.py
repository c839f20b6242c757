"""`kdnas run`: the whole flow, reading top to bottom, each stage resumable.

Every stage writes its outputs into the run dir and a `stages/<name>.json` marker last; a stage whose marker
exists is skipped, so a killed run resumes where it stopped and loses nothing already finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdnas import run_dir as rd
from kdnas._io import write_json_atomic
from kdnas.config import RunConfig
from kdnas.errors import ConfigError, KdnasError, SearchError

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What the stages share: the config, the run dir, the values earlier stages produced, and lazily loaded
    heavy objects (teacher, corpus splits, search space) that several stages use."""

    cfg: RunConfig
    run_dir: Path
    values: dict[str, Any] = field(default_factory=dict)
    console: Any = None
    progress: bool = True
    role: str | None = None
    """With a shared search storage: lead (default), take-over or join (`kdnas.search.workers.check_role`)."""
    _memo: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def say(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg, markup=False, highlight=False, soft_wrap=True)
        else:
            print(msg)

    def teacher(self) -> Any:
        if "teacher" not in self._memo:
            from kdnas.models.teacher import load_teacher

            self._memo["teacher"] = load_teacher(
                self.cfg.teacher.name,
                attn_implementation=self.cfg.teacher.attn_implementation,
                with_mlm_head=self.cfg.distill.losses.get("logits", 0) > 0,
                allow_pickle=self.cfg.teacher.allow_pickle,
            )
        return self._memo["teacher"]

    def corpus(self) -> Any:
        if "corpus" not in self._memo:
            from kdnas.data.corpus import build_corpus

            self._memo["corpus"] = build_corpus(self.cfg.corpus, self.teacher().tokenizer, seed=self.cfg.seed)
        return self._memo["corpus"]

    def space(self) -> Any:
        """The search space, its `vocab` choices resolved on this run's corpus (vocab.json) when it has some."""
        if "space" not in self._memo:
            space = self.raw_space()
            table = self.vocab()
            self._memo["space"] = space.with_vocab(table.sizes) if table is not None else space
        return self._memo["space"]

    def raw_space(self) -> Any:
        """The search space as configured (`vocab` choices not yet resolved)."""
        if "raw_space" not in self._memo:
            from kdnas.space.spaces import load_space

            self._memo["raw_space"] = load_space(self.cfg.search.space, self.teacher().config)
        return self._memo["raw_space"]

    def vocab(self) -> Any:
        """The run's `VocabTable` (vocab.json, written by the data stage), None when no choice trims."""
        if self._memo.get("vocab") is None:
            from kdnas.space.vocab import VOCAB_FILE, VocabTable

            p = self.run_dir / VOCAB_FILE
            self._memo["vocab"] = VocabTable.load(p) if p.is_file() else None
        return self._memo["vocab"]

    def student_tokenizer(self, arch: Any) -> Any:
        """The tokenizer a student of `arch` ships with: the teacher's, or its trimmed one (run_dir/vocab/)."""
        if arch.vocab_size is None:
            return self.teacher().tokenizer
        from transformers import AutoTokenizer

        key = self.vocab().choice_of(arch.vocab_size)
        return AutoTokenizer.from_pretrained(str(self.run_dir / "vocab" / key))

    def student_builder(self) -> Any:
        """The run's `kdnas.models.build.StudentBuilder`: students built as the search built its candidates."""
        if "student_builder" not in self._memo:
            from kdnas.models.build import StudentBuilder

            self._memo["student_builder"] = StudentBuilder.from_config(
                self.teacher(),
                self.cfg.distill,
                seed=self.cfg.seed,
                data=self.corpus().proxy,
                vocab=self.vocab(),
            )
        return self._memo["student_builder"]

    def evaluator_like(self) -> Any:
        """A ProxyEvaluator over the run's data and teacher cache (benchmarks/proxy_fidelity.py re-scores archs
        with it); the stages build students with `student_builder()`."""
        if "builder" not in self._memo:
            from kdnas.search.proxy import ProxyEvaluator

            splits = self.corpus()
            self._memo["builder"] = ProxyEvaluator(
                cfg=self.cfg, teacher=self.teacher(), proxy=splits.proxy, heldout=splits.heldout,
                cache_dir=self.run_dir / rd.TEACHER_CACHE, vocab=self.vocab(),
            )  # fmt: skip
        return self._memo["builder"]

    def trial_callback(self, record: Any) -> None:
        d = record.to_dict() if hasattr(record, "to_dict") else dict(record)
        kd = d.get("kd_loss_short", d.get("kd_loss"))
        lat = d.get("latency_ms")
        state = d.get("state", "")
        parts = [f"trial {d.get('number', '?')}", str(d.get("arch_id", "")), state]
        if kd is not None:
            parts.append(f"kd {kd:.4f}")
        if lat is not None:
            parts.append(f"{lat:.2f} ms")
        if d.get("reason"):
            parts.append(str(d["reason"])[:80])
        self.say("    " + "  ".join(parts))


@dataclass
class Stage:
    name: str
    run: Callable[[RunContext], dict[str, Any]]
    """Does the work and returns a JSON-able summary (stored in the marker)."""
    title: str


class NotBuiltYet(KdnasError):
    """A stage whose engine is not in this version yet."""


# ----------------------------------------------------------------------------------------------------- stages


def stage_fetch(ctx: RunContext) -> dict[str, Any]:
    """Fetch every zoo asset the config names (teacher, corpus sources, tasks) into the cache."""
    from kdnas import zoo
    from kdnas.data.topics import split_task_ref

    tasks = [p for t in ctx.cfg.evaluate.tasks for p in (split_task_ref(t) or (t,))]  # both sides of SRC>TGT
    names = [ctx.cfg.teacher.name, *ctx.cfg.corpus.sources, *tasks]
    fetched = {}
    for n in dict.fromkeys(names):
        if n in zoo.ASSETS:
            fetched[n] = str(zoo.fetch(n))
    return {"fetched": fetched}


def stage_inspect(ctx: RunContext) -> dict[str, Any]:
    """Record the teacher's shape and cost (teacher.json)."""
    from kdnas.models.student import arch_of
    from kdnas.space.cost import forward_flops, param_count

    teacher = ctx.teacher()
    arch = arch_of(teacher.config)
    pc = param_count(arch, teacher.config)
    seq = ctx.cfg.target.seq_lens[0]
    out = {
        "teacher": ctx.cfg.teacher.name,
        "name": "teacher",
        "family": teacher.config.model_type,
        "arch": arch.to_dict(),
        "arch_id": arch.arch_id,
        "params": pc.total,
        "params_non_embedding": pc.non_embedding,
        "gflops": forward_flops(
            arch, seq_len=seq, batch_size=ctx.cfg.target.batch_size, teacher_config=teacher.config
        )
        / 1e9,
        "seq_len": seq,
    }
    write_json_atomic(ctx.path(rd.TEACHER), out)
    return out


def stage_data(ctx: RunContext) -> dict[str, Any]:
    """Tokenize the corpus into disjoint proxy / train / held-out splits (cached by content in the kdnas cache)."""
    splits = ctx.corpus()
    out = {
        name: {"rows": len(block), "tokens": int(block.num_tokens)}
        for name, block in (("proxy", splits.proxy), ("train", splits.train), ("heldout", splits.heldout))
    }
    vocab = _resolve_vocab(ctx, splits)
    if vocab is not None:
        out["vocab"] = vocab
    write_json_atomic(ctx.path(rd.DATA), {**out, "stats": getattr(splits, "stats", None)})
    return out


def _resolve_vocab(ctx: RunContext, splits: Any) -> dict[str, Any] | None:
    """A space with `vocab` choices: keep ids per choice from the token counts of the proxy and train splits
    (vocab.json) and the trimmed tokenizer of each (vocab/<choice>/), so every later stage and a resumed run use
    the same ids."""
    from kdnas.models.vocab import trim_tokenizer
    from kdnas.space.vocab import VOCAB_FILE, build_vocab_table, trims, unk_rate

    choices = ctx.raw_space().vocab_choices
    if not trims(choices):
        return None
    teacher = ctx.teacher()
    table = build_vocab_table(  # from all the text students are distilled on; held-out text stays unseen
        teacher.tokenizer, [splits.proxy, splits.train], choices,
        teacher_vocab_size=int(teacher.config.vocab_size), source="proxy+train",
    )  # fmt: skip
    out: dict[str, Any] = {"corpus_tokens": table.corpus_tokens, "corpus_distinct": table.corpus_distinct}
    for key, ids in table.kept.items():
        d = ctx.run_dir / "vocab" / key
        tmp = d.with_name(f"{key}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        trim_tokenizer(teacher.tokenizer, ids).save_pretrained(str(tmp))
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
        rates = {
            f"unk_rate_{n}": unk_rate(b, ids, table.teacher_vocab_size)
            for n, b in (("proxy", splits.proxy), ("heldout", splits.heldout))
        }
        out[key] = {"vocab_size": len(ids), **rates}
        ctx.say(
            f"  vocab {key}: {len(ids):,} of {table.teacher_vocab_size:,} tokens; unk on proxy "
            f"{rates['unk_rate_proxy']:.3%}, held-out {rates['unk_rate_heldout']:.3%}"
        )
    table.save(ctx.run_dir / VOCAB_FILE)  # last: its presence means the tokenizers are there
    ctx._memo.pop("vocab", None)
    ctx._memo.pop("space", None)
    return out


def stage_latency(ctx: RunContext) -> dict[str, Any]:
    """Measure the teacher on the target and calibrate the latency predictor the search filters with."""
    from kdnas.latency import calibrate, load_predictor, measure_teacher

    cfg = ctx.cfg
    teacher = measure_teacher(ctx.teacher().config, cfg.target)
    out: dict[str, Any] = {"teacher": teacher.to_dict(), "teacher_latency_ms": teacher.median_ms}
    if cfg.target.calibrate_archs > 0:
        space = ctx.space()
        cal = calibrate(ctx.teacher().config, space, cfg.target, n=cfg.target.calibrate_archs, seed=cfg.seed)
        out["predictor"] = cal.to_dict() if hasattr(cal, "to_dict") else str(cal)
    else:
        out["predictor"] = None if load_predictor(ctx.teacher().config, cfg.target) is None else "cached"
    if cfg.evaluate.baselines and cfg.search.baseline_budgets:
        out["baselines"] = _baseline_speedups(ctx)
    write_json_atomic(ctx.path(rd.LATENCY), out)
    return out


def _baseline_speedups(ctx: RunContext) -> dict[str, Any]:
    """Each hand-made baseline's speed-up over the teacher, timed side by side in interleaved rounds (a ratio
    within one worker, not two numbers from different processes), with its spread over the rounds."""
    from kdnas.evaluate.baselines import baseline_archs
    from kdnas.latency import ModelSpec, measure_side_by_side

    cfg = ctx.cfg
    tcfg = ctx.teacher().config
    archs = baseline_archs(tcfg, family=cfg.evaluate.baseline_family)
    specs = [ModelSpec.for_config(tcfg), *(ModelSpec.for_arch(tcfg, a) for a in archs.values())]
    rounds = max(3, cfg.target.compare_rounds)
    sbs = measure_side_by_side(specs, cfg.target, rounds=rounds, progress=ctx.say)
    out: dict[str, Any] = {}
    for i, name in enumerate(archs, 1):
        lo, hi = sbs.speedup_range[i]
        out[name] = {"speedup": sbs.speedup[i], "speedup_range": [lo, hi], "median_ms": sbs.median_ms[i]}
        ctx.say(f"  baseline {name}: {sbs.speedup[i]:.2f}x the teacher (rounds {lo:.2f}-{hi:.2f}x)")
    out["rounds"] = rounds
    return out


def stage_search(ctx: RunContext) -> dict[str, Any]:
    """Search the space: proxy-distil each candidate, measure it, keep the trials in the run's Optuna study."""
    from kdnas.search.evaluator import make_evaluator
    from kdnas.search.objectives import resolve_budgets
    from kdnas.search.study import run_search
    from kdnas.search.workers import target_fingerprint

    cfg = ctx.cfg
    setup = make_evaluator(
        cfg,
        ctx.run_dir,
        teacher=ctx.teacher(),
        splits=ctx.corpus(),
        teacher_latency_ms=ctx.values["latency"]["teacher_latency_ms"],
        vocab=ctx.vocab(),
    )
    budgets = resolve_budgets(
        budgets_ms=cfg.target.budgets_ms,
        speedups=cfg.target.speedups,
        teacher_latency_ms=setup.teacher_latency_ms,
    )
    base = ctx.values["latency"].get("baselines") or {}
    if base:
        from kdnas.search.objectives import equal_latency_budgets

        ratios = {n: v["speedup"] for n, v in base.items() if isinstance(v, dict)}
        budgets = sorted(
            budgets + equal_latency_budgets(ratios, setup.teacher_latency_ms), key=lambda b: -b.latency_ms
        )
    result = run_search(
        ctx.space(),
        setup.evaluator,
        cfg.search,
        tokens=cfg.distill.proxy_tokens,
        teacher_latency_ms=setup.teacher_latency_ms,
        budgets=budgets,
        run_dir=ctx.run_dir,
        study_name=f"search-{cfg.search.strategy}",
        seed=cfg.seed,
        latency_predictor=setup.latency_predictor,
        callback=ctx.trial_callback,
        hardware=target_fingerprint(cfg.target),
        role=ctx.role or "lead",
    )
    recommendations, placement = result.recommendations, None
    if cfg.target.place_candidates > 0 and ctx.role != "join":  # a helper stops after the search
        from kdnas.search.placement import place

        ctx.say(f"  placing the best {cfg.target.place_candidates} candidates near each budget side by side")
        recommendations, placement = place(
            result.records,
            budgets,
            lambda archs, names: _time_candidates(ctx, archs, names),
            teacher_latency_ms=setup.teacher_latency_ms,
            per_budget=cfg.target.place_candidates,
            tolerance=cfg.search.kd_loss_tolerance,
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
    return {
        "n_evaluated": result.n_evaluated,
        "hypervolume": result.hypervolume,
        "kendall_tau_short_long": result.kendall_tau,
        "pareto": [r.arch.arch_id for r in result.pareto if r.arch is not None],
        "recommendations": [r.to_dict() for r in recommendations],
        "search_recommendations": [r.to_dict() for r in result.recommendations],
        "placed_side_by_side": placement is not None,
        "leader": result.extra.get("leader"),
    }


def _time_candidates(ctx: RunContext, archs: list[Any], names: list[str]) -> Any:
    """Side-by-side speed-ups of `archs` and of the named hand-made baselines over the teacher, in the same
    workers (for `kdnas.search.placement`)."""
    from kdnas.evaluate.baselines import baseline_archs
    from kdnas.latency import ModelSpec, measure_side_by_side
    from kdnas.search.placement import Timed

    cfg = ctx.cfg
    tcfg = ctx.teacher().config
    base = baseline_archs(tcfg, family=cfg.evaluate.baseline_family)
    named = [(f"={n}", base[n]) for n in names if n in base]
    timed = [*named, *((a.arch_id, a) for a in archs)]
    specs = [ModelSpec.for_config(tcfg), *(ModelSpec.for_arch(tcfg, a) for _, a in timed)]
    sbs = measure_side_by_side(specs, cfg.target, rounds=max(3, cfg.target.compare_rounds), progress=ctx.say)
    speed = {k: sbs.speedup[i] for i, (k, _) in enumerate(timed, 1)}
    return Timed(
        speedup={k: v for k, v in speed.items() if not k.startswith("=")},
        baseline_speedup={k[1:]: v for k, v in speed.items() if k.startswith("=")},
        cv={k: sbs.speedup_cv[i] for i, (k, _) in enumerate(timed, 1)},
        rounds=sbs.rounds,
    )


def _student_name(rec: dict[str, Any]) -> str:
    label = str(rec["budget"]["label"]).replace(" ", "").replace(".", "_")
    return f"student-at-{label[1:]}" if label.startswith("=") else f"student-{label}"


def stage_distill(ctx: RunContext) -> dict[str, Any]:
    """Distil each recommended student (and the TinyBERT-shape baseline) on the full training split."""
    from kdnas.space.arch import Arch

    cfg = ctx.cfg
    recs = [r for r in ctx.values["search"]["recommendations"] if r.get("arch")]
    if not recs:
        raise KdnasError(
            "no searched arch meets any latency budget; relax target.speedups / target.budgets_ms or search "
            "longer (search.n_trials)"
        )
    jobs: dict[str, tuple[Arch, dict[str, Any]]] = {}
    for rec in reversed(
        recs
    ):  # one job per distinct arch; budgets come loosest first, so the tightest names it
        arch = Arch.from_dict(rec["arch"])
        jobs.setdefault(arch.arch_id, (arch, rec))
    students = []
    for arch, rec in jobs.values():
        name = _student_name(rec)
        model_dir = _distill_full(ctx, name, arch, ctx.run_dir / rd.STUDENTS / name)
        students.append(
            {
                "name": name,
                "model_dir": str(model_dir.relative_to(ctx.run_dir)),
                "arch_id": arch.arch_id,
                "budget_label": rec["budget"]["label"],
                "budget_ms": rec["budget"]["latency_ms"],
                "kd_loss": rec.get("kd_loss"),
                "search_latency_ms": rec.get("latency_ms"),
                "params_m": rec.get("params_m"),
                "vocab_size": arch.vocab_size,
            }
        )
    if cfg.distill.vocab_twins:
        students += _vocab_twins(ctx, jobs, students)
    baselines = []
    if cfg.evaluate.baselines:
        from kdnas.evaluate.baselines import baseline_archs

        family = cfg.evaluate.baseline_family
        for bname, arch in baseline_archs(ctx.teacher().config, family=family).items():
            if bname == "every-other-layer":
                if not family:
                    continue  # truncated teacher weights, fine-tuned directly (DistilBERT-style), see evaluate
                bname = "every-other-layer-kd"  # the same shape distilled on the students' budget
            d = _distill_full(ctx, bname, arch, ctx.run_dir / rd.BASELINES / bname)
            baselines.append(
                {"name": bname, "model_dir": str(d.relative_to(ctx.run_dir)), "arch_id": arch.arch_id}
            )
    summary = {"students": students, "baselines": baselines}
    write_json_atomic(ctx.path(rd.SUMMARY), summary)
    return summary


def _vocab_twins(
    ctx: RunContext, jobs: dict[str, tuple[Any, dict[str, Any]]], students: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each recommended student again with every other vocabulary choice of the space (`distill.vocab_twins`)."""
    space = ctx.space()
    twins = []
    for (arch, _), student in zip(jobs.values(), students):
        for choice in space.vocab_choices:
            twin = arch.replace(vocab_size=space.vocab_size_of(choice))
            if twin.arch_id in jobs or twin.arch_id == arch.arch_id:
                continue
            name = f"{student['name']}-vocab-{choice}"
            model_dir = _distill_full(ctx, name, twin, ctx.run_dir / rd.STUDENTS / name)
            twins.append(
                {
                    **student,
                    "name": name,
                    "model_dir": str(model_dir.relative_to(ctx.run_dir)),
                    "arch_id": twin.arch_id,
                    "kd_loss": None,  # not a search trial: its held-out loss is in its result.json
                    "search_latency_ms": None,
                    "params_m": None,
                    "vocab_size": twin.vocab_size,
                    "twin_of": student["name"],
                }
            )
    return twins


def _distill_full(ctx: RunContext, name: str, arch: Any, out: Path) -> Path:
    """Full distillation of one arch into out/model (resumes from out/checkpoint after a kill)."""
    from kdnas.distill import distill, heldout_kd_loss

    cfg = ctx.cfg
    model_dir = out / "model"
    if (out / "result.json").exists() and (model_dir / "config.json").exists():
        return model_dir
    splits = ctx.corpus()
    builder = ctx.student_builder()
    student = builder.build(arch)
    input_map = builder.input_map(arch)  # a trimmed vocabulary reads the data's (teacher) ids through it
    from kdnas.distill.checkpoint import has_checkpoint

    resume = has_checkpoint(out)
    say = ctx.say
    say(
        f"  distilling {name} ({arch.arch_id}) on {cfg.distill.full_tokens:,} tokens{' (resuming)' if resume else ''}"
    )
    result = distill(
        ctx.teacher(),
        student,
        splits.train,
        cfg.distill,
        tokens=cfg.distill.full_tokens,
        mode="standard",
        teacher_cache=ctx.run_dir / rd.TEACHER_CACHE,
        out_dir=out,
        resume=resume,
        seed=cfg.seed,
        progress=ctx.progress,
        input_map=input_map,
    )
    if result.failed:
        raise KdnasError(f"full distillation of {name} failed: {result.failed}; see {out}/train_log.jsonl")
    kd = heldout_kd_loss(
        ctx.teacher(), student, splits.heldout, cfg.distill, projections=result.distiller,
        teacher_cache=str(ctx.run_dir / rd.TEACHER_CACHE), input_map=input_map,
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
        say(f"  {name}: {vocab['unk_rate_heldout']:.3%} of held-out tokens are outside its vocabulary (unk)")
    tmp = out / "model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    student.save_pretrained(tmp)
    ctx.student_tokenizer(arch).save_pretrained(tmp)
    _write_sentence_config(result.distiller, tmp)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    os.replace(tmp, model_dir)
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


def _fidelity(ctx: RunContext, model_dir: Path) -> dict[str, Any] | None:
    """Label-free fidelity of the model in `model_dir` to the teacher on the corpus's held-out passages."""
    from transformers import AutoModel

    from kdnas.distill.distiller import teacher_pooling
    from kdnas.evaluate.fidelity import embedding_fidelity, load_dense
    from kdnas.models.pooling import Pooling
    from kdnas.space.arch import Arch

    if "fidelity_passages" not in ctx._memo:
        from kdnas.data.corpus import heldout_passages

        texts = heldout_passages(ctx.cfg.corpus, seed=ctx.cfg.seed, n=ctx.cfg.evaluate.fidelity_passages)
        tok = ctx.teacher().tokenizer(
            texts, truncation=True, max_length=ctx.cfg.corpus.seq_len, padding=True, return_tensors="pt"
        )
        ctx._memo["fidelity_passages"] = (tok["input_ids"], tok["attention_mask"])
    ids, mask = ctx._memo["fidelity_passages"]
    if len(ids) <= 10:
        ctx.say(f"  fidelity: only {len(ids)} held-out passages; left out (raise corpus.heldout_fraction)")
        return None
    teacher = ctx.teacher()
    pooling = teacher_pooling(teacher) or Pooling(mode="mean", source="default: mean pooling")
    student = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    input_map = None
    rows = int(student.get_input_embeddings().weight.shape[0])
    table = ctx.vocab()
    if table is not None and rows != table.teacher_vocab_size:
        cfg: Any = student.config
        arch = Arch(num_layers=cfg.num_hidden_layers, hidden_size=cfg.hidden_size,
                    num_heads=cfg.num_attention_heads, ffn_size=cfg.intermediate_size,
                    vocab_size=rows)  # fmt: skip
        input_map = table.input_map(arch)
    res = embedding_fidelity(
        teacher.model, student, ids, mask, pooling=pooling, student_dense=load_dense(model_dir),
        student_input_map=input_map,
    )  # fmt: skip
    return res.to_dict()


def stage_evaluate(ctx: RunContext) -> dict[str, Any]:
    """Fine-tune the teacher, the baselines and the students on the tasks; retention and speed-up tables."""
    from kdnas.evaluate.baselines import every_other_layer
    from kdnas.evaluate.retention import ModelReport, retention_table
    from kdnas.evaluate.runner import evaluate_encoder, load_tasks
    from kdnas.latency import ModelSpec, measure_side_by_side

    cfg = ctx.cfg
    tasks = load_tasks(
        cfg.evaluate.tasks, max_train=cfg.evaluate.max_train_examples, options=cfg.evaluate.task_options
    )
    summary = ctx.values["distill"]
    models: list[tuple[str, Callable[[], Any], Path | None]] = [("teacher", _teacher_encoder(ctx), None)]
    eol_dir = ctx.run_dir / rd.BASELINES / "every-other-layer" / "model"
    if cfg.evaluate.baselines:
        if not (eol_dir / "config.json").exists():  # saved once (atomically), then treated like any model dir
            t = ctx.teacher()
            tmp = eol_dir.with_name("model.tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            every_other_layer(t.model).save_pretrained(tmp)
            t.tokenizer.save_pretrained(tmp)
            os.replace(tmp, eol_dir)
        models.append(("every-other-layer", _dir_encoder(str(eol_dir), "every-other-layer"), eol_dir))
    for b in summary.get("baselines", []):
        d = ctx.run_dir / b["model_dir"]  # relative to the run dir (absolute paths pass through)
        models.append((b["name"], _dir_encoder(str(d), b["name"]), d))
    for s in summary["students"]:
        d = ctx.run_dir / s["model_dir"]
        models.append((s["name"], _dir_encoder(str(d), s["name"]), d))

    reports: dict[str, ModelReport] = {}
    for name, make, _ in models:
        path = ctx.path(rd.EVALUATE, f"{name}.json")
        if path.exists():
            reports[name] = ModelReport.from_dict(json.loads(path.read_text()))
        else:
            cached = _teacher_eval_cache(ctx) if name == "teacher" else None
            if cached is not None and cached.exists():
                report = ModelReport.from_dict(json.loads(cached.read_text()))
                ctx.say("  teacher: scores reused from an earlier run with the same protocol")
            else:
                ctx.say(f"  fine-tuning {name} on {', '.join(t.name for t in tasks)}")
                protocol = cfg.evaluate if name == "teacher" else cfg.evaluate.for_students()
                report = evaluate_encoder(make(), tasks, protocol)
                if cached is not None:
                    write_json_atomic(cached, report.to_dict())
            report.name = name
            write_json_atomic(path, report.to_dict())
            reports[name] = report
    for name, _, d in models:
        if d is not None and reports[name].fidelity is None and cfg.evaluate.fidelity_passages > 0:
            reports[name].fidelity = _fidelity(ctx, d)
            f = reports[name].fidelity or {}
            if f:
                ctx.say(
                    f"  fidelity of {name}: emb cosine {_num(f.get('mean_cosine'))}, CKA {_num(f.get('cka'))}, "
                    f"recall@10 {_num(f.get('recall_at_10'))} ({f.get('passages')} held-out passages)"
                )
            write_json_atomic(ctx.path(rd.EVALUATE, f"{name}.json"), reports[name].to_dict())
    # every model timed in the same workers, rounds alternating the order: speed-ups are per-round ratios
    timed = [(n, d) for n, _, d in models if n == "teacher" or d is not None]
    specs = [
        ModelSpec.for_config(ctx.teacher().config) if d is None else ModelSpec.for_dir(d) for _, d in timed
    ]
    sbs = measure_side_by_side(specs, cfg.target, rounds=cfg.target.compare_rounds, progress=ctx.say)
    latency = {n: ms for (n, _), ms in zip(timed, sbs.median_ms)}
    spread = {n: [round(lo, 3), round(hi, 3)] for (n, _), (lo, hi) in zip(timed, sbs.speedup_range)}
    table = retention_table(
        reports["teacher"], [r for n, r in reports.items() if n != "teacher"], latency_ms=latency
    )
    table.write_json(ctx.path(rd.RETENTION))
    table.write_markdown(ctx.path(rd.RETENTION_MD))
    rows = table.to_dict()["rows"] if hasattr(table, "to_dict") else []
    return {"retention": rows, "latency_ms": latency, "speedup_range": spread, "latency_rounds": sbs.rounds}


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


def _teacher_eval_cache(ctx: RunContext) -> Path | None:
    """The teacher's scores depend only on the teacher, tasks and protocol: shared across runs."""
    import hashlib

    import kdnas
    from kdnas.distill.teacher_cache import teacher_info
    from kdnas.zoo import cache_dir

    ev = dict(ctx.cfg.to_dict()["evaluate"])
    for k in ("baselines", "task_distill", "threads", "student_lrs"):
        ev.pop(k, None)
    tasks = []
    for t in ev.pop("tasks"):
        p = Path(t)
        tasks.append([t, p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else t)
    key = json.dumps(
        {
            "teacher": ctx.cfg.teacher.name,
            "weights": teacher_info(ctx.teacher().model).fingerprint,
            "kdnas": kdnas.__version__,
            "tasks": tasks,
            "evaluate": ev,
        },
        sort_keys=True,
    )
    return cache_dir() / "evaluate" / f"teacher-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def stage_export(ctx: RunContext) -> dict[str, Any]:
    """Export every recommended student: HF folder, ONNX fp32 and int8 (checked and timed), model card."""
    from kdnas.export.run_dir import export_run

    cfg = ctx.cfg
    results = export_run(
        ctx.run_dir, ctx.run_dir / rd.EXPORT, onnx=cfg.export.onnx, int8=cfg.export.int8, overwrite=True,
        target=cfg.target,
    )  # fmt: skip
    return {"exported": [str(getattr(r, "out_dir", r)) for r in results]}


def stage_report(ctx: RunContext) -> dict[str, Any]:
    """Pareto plots (PNG, HTML), trials CSV and a Markdown summary into run_dir/report."""
    from kdnas.report import load_report_data, print_summary, write_report

    data = load_report_data(ctx.run_dir)
    files = write_report(data, ctx.run_dir / rd.REPORT)
    if ctx.console is not None:
        print_summary(data, console=ctx.console)
    return {k: str(v) for k, v in files.items()}


STAGES: list[Stage] = [
    Stage("fetch", stage_fetch, "fetch assets"),
    Stage("inspect", stage_inspect, "inspect the teacher"),
    Stage("data", stage_data, "tokenize and split the corpus"),
    Stage("latency", stage_latency, "measure the teacher, calibrate the latency predictor"),
    Stage("search", stage_search, "search student architectures"),
    Stage("distill", stage_distill, "distil the recommended students and baselines"),
    Stage("evaluate", stage_evaluate, "evaluate against the teacher"),
    Stage("export", stage_export, "export"),
    Stage("report", stage_report, "report"),
]
assert tuple(s.name for s in STAGES) == rd.STAGE_NAMES  # the run dir's markers and rewinds follow this order


# ------------------------------------------------------------------------------------------------- the runner


rerun_stage = rd.rerun_stage
prepare_run_dir = rd.prepare


def run(
    cfg: RunConfig,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
    console: Any = None,
    progress: bool = True,
    until: str | None = None,
    role: str | None = None,
) -> RunContext:
    """Run every stage in order (up to and including `until`); finished stages are skipped. Returns the
    context with each stage's summary. `role`: see `RunContext.role`."""
    run_dir = (Path(run_dir) if run_dir else cfg.resolved_run_dir).resolve()
    if cfg.evaluate.task_distill:
        raise ConfigError(
            "evaluate.task_distill: not part of `kdnas run` yet; run it per model with "
            "`kdnas evaluate MODEL_DIR --teacher T --task-distill`"
        )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per saved shard drowns the run's own progress lines
    ctx = RunContext(cfg=cfg, run_dir=run_dir, console=console, progress=progress, role=role)
    say = ctx.say
    rd.prepare(cfg, run_dir, resume=resume, say=say)
    for i, stage in enumerate(STAGES, 1):
        marker = rd.marker(run_dir, stage.name)
        head = f"[{i}/{len(STAGES)}] {stage.title}"
        if marker.exists():
            ctx.values[stage.name] = json.loads(marker.read_text())["summary"]
            say(f"{head}: done earlier (skipped)")
            if until == stage.name:
                break
            continue
        t0 = time.perf_counter()
        try:
            summary = stage.run(ctx)
        except NotBuiltYet as e:
            say(f"{head}: {e}; stopping here (finished stages are kept in {run_dir})")
            break
        seconds = time.perf_counter() - t0
        ctx.values[stage.name] = summary
        write_json_atomic(marker, {"stage": stage.name, "seconds": round(seconds, 2), "summary": summary})
        say(f"{head}: done in {seconds:.1f} s")
        if until == stage.name:
            break
    return ctx
