"""The real candidate evaluator: inherit a student from the teacher, distil it briefly on the proxy set, score
its held-out KD loss, and measure its latency on the target in an isolated worker.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdnas.config import RunConfig
from kdnas.errors import DistillError
from kdnas.search.candidate import CandidateResult, Fidelity
from kdnas.space.arch import Arch

log = logging.getLogger(__name__)

OUTLIER_FACTOR = 2.0
"""A candidate timed this many times slower than the calibrated predictor says is measured again."""


@dataclass
class ProxyEvaluator:
    """Scores one arch: proxy distillation + held-out KD loss + measured latency (see the module docstring).

    Every candidate shares one teacher cache, so its distillation costs about one student forward+backward per
    step, and one importance ranking of the teacher's units, so inheritance is cheap.
    """

    cfg: RunConfig
    teacher: Any
    """A `kdnas.models.teacher.Teacher`."""
    proxy: Any
    """TokenBlock the candidates are distilled on."""
    heldout: Any
    """TokenBlock their KD loss is measured on."""
    cache_dir: Path
    """Teacher cache dir (shared by every candidate)."""
    latency_cache: Any = None
    importance: Any = None
    vocab: Any = None
    """`kdnas.space.vocab.VocabTable` of the run: the kept teacher ids of archs with a trimmed vocabulary."""
    latency_predictor: Callable[[Arch], float] | None = None
    """The run's calibrated latency predictor (ms): a measurement far off it is taken again (`measure_latency`)."""
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from kdnas.distill import TeacherCache
        from kdnas.models.build import StudentBuilder

        self._cache = TeacherCache(self.cache_dir, budget_mb=self.cfg.distill.teacher_cache_mb)
        self._unk: dict[tuple[int | None, int], float | None] = {}
        self.builder = StudentBuilder.from_config(
            self.teacher, self.cfg.distill, seed=self.cfg.seed, data=self.proxy, vocab=self.vocab,
            importance=self.importance,
        )  # fmt: skip
        if self.cfg.distill.init == "inherit":  # one ranking for every candidate, computed up front
            self.importance = self.builder.ranking()

    def vocab_ids(self, arch: Arch) -> list[int] | None:
        """Teacher ids of `arch`'s embedding rows (None: the teacher's whole table)."""
        return self.builder.vocab_ids(arch)

    def input_map(self, arch: Arch) -> Any:
        """LongTensor [teacher vocab] teacher id -> student id for a trimmed vocabulary, else None."""
        return self.builder.input_map(arch)

    def build_student(self, arch: Arch) -> Any:
        """The student of shape `arch` (`kdnas.models.build.StudentBuilder`: the same for the search, the final
        students and `kdnas distill`)."""
        return self.builder.build(arch)

    def evaluate(self, arch: Arch, *, fidelity: Fidelity, tokens: int) -> CandidateResult:
        from kdnas.distill import distill, heldout_kd_losses
        from kdnas.distill.terms import state_terms
        from kdnas.space.cost import param_count

        t0 = time.perf_counter()
        student = self.build_student(arch)
        input_map = self.input_map(arch)
        result = distill(
            self.teacher,
            student,
            self.proxy,
            self.cfg.distill,
            tokens=tokens,
            teacher_cache=self._cache,
            seed=self.cfg.seed,
            progress=False,
            input_map=input_map,
        )
        if result.failed:
            raise DistillError(f"{arch.arch_id}: proxy distillation failed: {result.failed}")
        # the projections trained with the student and/or least-squares read-outs fitted on the held-out split;
        # the loss is the geometric mean of the read-outs taken (the one loss itself for a single read-out)
        readout = self.cfg.search.proxy_readout
        names = ("trained", "fitted") if readout == "geomean" else (readout,)
        comps: dict[str, dict[str, float]] = {}
        full = heldout_kd_losses(
            self.teacher, student, self.heldout, self.cfg.distill,
            readouts={n: result.distiller if n == "trained" else None for n in names}, teacher_cache=self._cache,
            input_map=input_map, components=comps,
        )  # fmt: skip
        for name, loss in full.items():
            if not math.isfinite(loss):
                raise DistillError(f"{arch.arch_id}: held-out KD loss ({name} read-out) is {loss}")
        # `search.proxy_loss: states`: the state terms alone (none active: the config check refuses that for a
        # kd_loss quality, and another quality does not read this loss)
        w = self.cfg.distill.losses
        terms = state_terms(w) if self.cfg.search.proxy_loss == "states" else []
        by_readout = {n: sum(w[k] * comps[n][k] for k in terms) for n in full} if terms else full
        kd = math.prod(by_readout.values()) ** (1 / len(by_readout))
        kd_full = math.prod(full.values()) ** (1 / len(full))
        quality: float = kd
        emb: dict[str, float | None] = {}
        if self.cfg.search.quality != "kd_loss":
            emb = self._embedding_fidelity(student, result.distiller, input_map)
            value = emb["emb_cosine"] if self.cfg.search.quality == "cosine" else emb["recall_at_10"]
            if value is None:
                raise DistillError(
                    f"{arch.arch_id}: search.quality cosine needs the student's embedding in the teacher's space; "
                    "this narrower student has no Dense (turn on distill.losses.sentence, or use quality: recall)"
                )
            quality = 1.0 - value
        distill_s = time.perf_counter() - t0
        lat, retake = self.measure_latency(arch)
        params = param_count(arch, self.teacher.config)
        extra = {
            "fidelity": fidelity,
            "quality": self.cfg.search.quality,
            "heldout_kd_loss": kd,
            "proxy_readout": readout,
            "proxy_loss": self.cfg.search.proxy_loss,
            **({f"heldout_kd_loss_{k}": v for k, v in by_readout.items()} if len(by_readout) > 1 else {}),
            "heldout_kd_loss_full": kd_full,
            "heldout_components": comps,
            **emb,
            "tokens": result.tokens,
            "steps": result.steps,
            "train_loss": result.final_loss,
            "tokens_per_s": round(result.tokens_per_s, 1),
            "distill_s": round(distill_s, 2),
            "latency_p90_ms": lat.p90_ms,
            "latency_repeats": lat.repeats,
            "latency_attn": lat.attn,
            "params_non_embedding_m": params.non_embedding / 1e6,
            "params_embedding_m": params.embedding / 1e6,
        }
        if retake:
            extra["latency_retake"] = retake
        if arch.vocab_size is not None:
            extra["vocab_size"] = arch.vocab_size
            extra["unk_rate_proxy"] = self._unk_rate(arch, self.proxy)
            extra["unk_rate_heldout"] = self._unk_rate(arch, self.heldout)
        self.history.append(
            {"arch_id": arch.arch_id, "kd_loss": quality, "latency_ms": lat.median_ms, **extra}
        )
        log.info("%s %s: kd %.4f, quality %.4f, %.2f ms (%.0f s)", fidelity, arch.arch_id, kd, quality,
                 lat.median_ms, distill_s)  # fmt: skip
        return CandidateResult(
            kd_loss=quality, latency_ms=lat.median_ms, params_m=params.total / 1e6, extra=extra
        )

    def measure_latency(self, arch: Arch) -> tuple[Any, dict[str, float] | None]:
        """The arch's latency on the target, and what was retaken (None when nothing was).

        A process that competed for the cores while the worker timed (a compiler, another job) can slow a
        model 20x and more: the OpenMP threads of the timed model wait on each other. Such a reading would put
        the candidate out of every budget for the whole search. So a reading more than `OUTLIER_FACTOR` times
        slower than the calibrated predictor says is taken again in a fresh worker, and the faster of the two is
        kept: other work on the machine only ever slows a model down, and the predictor errs by tens of %, not
        2x. A reading faster than predicted is kept as it is: a retake could only replace it with a faster one.
        """
        from kdnas.latency import measure_arch

        lat = measure_arch(self.teacher.config, arch, self.cfg.target, cache=self.latency_cache)
        if self.latency_predictor is None:
            return lat, None
        predicted = float(self.latency_predictor(arch))
        if predicted <= 0 or lat.median_ms <= OUTLIER_FACTOR * predicted:
            return lat, None
        again = measure_arch(self.teacher.config, arch, self.cfg.target, cache=False)
        keep = again if again.median_ms < lat.median_ms else lat
        log.warning(
            "%s: measured at %.2f ms, %.1fx the latency predictor's %.2f ms; measured again in a fresh worker: "
            "%.2f ms; the search keeps %.2f ms (the faster: other work only slows a model)",
            arch.arch_id, lat.median_ms, lat.median_ms / predicted, predicted, again.median_ms, keep.median_ms,
        )  # fmt: skip
        return keep, {"first_ms": lat.median_ms, "again_ms": again.median_ms, "predicted_ms": predicted}

    def _embedding_fidelity(self, student: Any, distiller: Any, input_map: Any) -> dict[str, float | None]:
        """Mean cosine and recall@10 of the student's sentence embedding (the teacher's pooling, then the
        distiller's Dense when narrower) to the teacher's on `search.quality_passages` held-out passages."""
        import torch

        from kdnas.distill.distiller import teacher_pooling
        from kdnas.evaluate.fidelity import embedding_fidelity
        from kdnas.models.pooling import Pooling

        if not hasattr(self, "_passages"):
            from kdnas.data.corpus import heldout_batch

            ids, mask = heldout_batch(
                self.cfg.corpus,
                self.teacher.tokenizer,
                seed=self.cfg.seed,
                n=self.cfg.search.quality_passages,
            )
            if len(ids) < 20:
                raise DistillError(
                    f"search.quality {self.cfg.search.quality}: only {len(ids)} held-out passages; raise "
                    "corpus.heldout_fraction or use search.quality: kd_loss"
                )
            self._passages = (ids, mask)
        ids, mask = self._passages
        pooling = teacher_pooling(self.teacher) or Pooling(mode="mean", source="default: mean pooling")
        dense = dict(distiller.proj.items()).get("sentence") if distiller is not None else None
        was = student.training
        with torch.no_grad():
            res = embedding_fidelity(self.teacher.model, student, ids, mask, pooling=pooling, student_dense=dense,
                                     student_input_map=input_map)  # fmt: skip
        student.train(was)
        cos = None if res.mean_cosine is None else float(res.mean_cosine)
        return {"emb_cosine": cos, "recall_at_10": float(res.recall_at_10)}

    def _unk_rate(self, arch: Arch, block: Any) -> float | None:
        key = (arch.vocab_size, id(block))
        if key not in self._unk:
            self._unk[key] = self.vocab.unk_rate(arch, block)
        return self._unk[key]
