"""`RunContext`: the heavy objects of one run, built once from its config and shared by the stages.

The stages read their settings from their own arguments (`kdnas.pipeline.STAGES` says which sections); the
context is where what is expensive to build lives: the teacher, the corpus splits, the search space with its
vocabulary choices resolved, the student builder, the proxy evaluator, the held-out passages of the fidelity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdnas import run_dir as rd
from kdnas.config import RunConfig


@dataclass
class RunContext:
    cfg: RunConfig
    run_dir: Path
    values: dict[str, Any] = field(default_factory=dict)
    """Each finished stage's result, by stage name."""
    console: Any = None
    progress: bool = True
    """Progress bars (a terminal); without, one line per step (a log)."""
    quiet: bool = False
    """No per-step lines or bars, only the stages' own headers and results."""
    role: str | None = None
    """With a shared search storage: lead (default), take-over or join (`kdnas.search.workers.check_role`)."""
    _memo: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    def path(self, *parts: str) -> Path:
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def say(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg, markup=False, highlight=False, soft_wrap=True)
        else:
            print(msg)

    @contextlib.contextmanager
    def steps(self, what: str, total: int, *, bar: bool = True) -> Iterator[Callable[[str], None]]:
        """Progress over a stage's `total` steps: `step(msg)` after each. On a terminal a rich bar with its ETA
        (`bar=False` where the step has its own bar, e.g. the distillation's), the messages printed above it;
        in a log one line per step, `[i/total] msg`; nothing when quiet."""
        if self.quiet or total <= 0:
            yield lambda msg: None
            return
        if bar and self.progress and self.console is not None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            with Progress(
                TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True,
            ) as p:  # fmt: skip
                task = p.add_task(what, total=total)

                def advance(msg: str) -> None:
                    if msg:
                        p.console.print(f"    {msg}", markup=False, highlight=False, soft_wrap=True)
                    p.advance(task)

                yield advance
            return
        done = [0]

        def line(msg: str) -> None:
            done[0] += 1
            self.say(f"    [{what} {done[0]}/{total}] {msg}")

        yield line

    def config_with(self, **sections: Any) -> RunConfig:
        """The run's config with some sections replaced (what a subprocess of the run is handed)."""
        import dataclasses

        return dataclasses.replace(self.cfg, **sections)

    def forget(self, *names: str) -> None:
        """Drop memoised objects a stage has just changed on disk (vocab.json: the vocabulary and the space)."""
        for n in names:
            self._memo.pop(n, None)

    def teacher(self) -> Any:
        if "teacher" not in self._memo:
            from kdnas.models.teacher import load_teacher

            t = self.cfg.teacher
            self._memo["teacher"] = load_teacher(
                t.name,
                attn_implementation=t.attn_implementation,
                with_mlm_head=self.cfg.distill.losses.get("logits", 0) > 0,
                allow_pickle=t.allow_pickle,
            )
        return self._memo["teacher"]

    def corpus(self) -> Any:
        if "corpus" not in self._memo:
            from kdnas.data.corpus import build_corpus

            self._memo["corpus"] = build_corpus(self.cfg.corpus, self.teacher().tokenizer, seed=self.seed)
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
            from kdnas.space.vocab import VocabTable

            p = self.run_dir / rd.VOCAB
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
                self.teacher(), self.cfg.distill, seed=self.seed, data=self.corpus().proxy, vocab=self.vocab()
            )
        return self._memo["student_builder"]

    def search_setup(self, teacher_latency_ms: float) -> Any:
        """The search's `EvaluatorSetup` over this run's teacher, splits and vocabulary."""
        from kdnas.search.evaluator import make_evaluator

        return make_evaluator(
            self.cfg, self.run_dir, teacher=self.teacher(), splits=self.corpus(),
            teacher_latency_ms=teacher_latency_ms, vocab=self.vocab(),
        )  # fmt: skip

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

    def fidelity_passages(self, n: int) -> tuple[Any, Any]:
        """`n` held-out passages from outside the corpus splits, tokenised as the teacher reads them."""
        key = f"fidelity_passages:{n}"
        if key not in self._memo:
            from kdnas.data.corpus import heldout_batch

            self._memo[key] = heldout_batch(self.cfg.corpus, self.teacher().tokenizer, seed=self.seed, n=n)
        return self._memo[key]  # type: ignore[no-any-return]

    def pooling(self) -> Any:
        """How the teacher pools its sentence embedding (its sentence-transformers config, else mean pooling)."""
        from kdnas.distill.distiller import teacher_pooling
        from kdnas.models.pooling import Pooling

        return teacher_pooling(self.teacher()) or Pooling(mode="mean", source="default: mean pooling")

    def teacher_fidelity_encoding(self, n: int) -> tuple[Any, Any]:
        """The teacher's embeddings and token states on `fidelity_passages(n)`, once per run (every model's
        fidelity is measured against them)."""
        key = f"teacher_fidelity_encoding:{n}"
        if key not in self._memo:
            from kdnas.evaluate.fidelity import teacher_encoding

            self._memo[key] = teacher_encoding(
                self.teacher().model, *self.fidelity_passages(n), self.pooling()
            )
        return self._memo[key]  # type: ignore[no-any-return]

    def trial_callback(self, record: Any) -> None:
        """One line per search trial."""
        if not self.quiet:
            self.say("    " + trial_line(record))


def trial_line(record: Any) -> str:
    """What a finished search trial says: number, arch, state, KD loss, latency, why it was left out."""
    d = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    kd = d.get("kd_loss_short", d.get("kd_loss"))
    lat = d.get("latency_ms")
    parts = [f"trial {d.get('number', '?')}", str(d.get("arch_id", "")), d.get("state", "")]
    if kd is not None:
        parts.append(f"kd {kd:.4f}")
    if lat is not None:
        parts.append(f"{lat:.2f} ms")
    if d.get("reason"):
        parts.append(str(d["reason"])[:80])
    return "  ".join(parts)
