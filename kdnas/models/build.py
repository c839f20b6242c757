"""The one way kdnas builds a student of a given `Arch` from a teacher: the search's candidates, the final
students of `kdnas run` and `kdnas distill` all come from `StudentBuilder.build`.

Inherit (layers picked by `distill.layer_selection`, widths sliced by one importance ranking of the teacher's
units, computed once) or random init per `distill.init`; MobileBERT shapes are never inherited (their
bottlenecks have no teacher counterpart); a trimmed vocabulary keeps the embedding rows of its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdnas.errors import ArchError
from kdnas.space.arch import Arch

IMPORTANCE_ROWS = 64
"""Rows of the distillation data an activation-based importance ranking reads (in batches of 16)."""


@dataclass
class StudentBuilder:
    """Builds students of one teacher with one set of settings (see the module docstring)."""

    teacher: Any
    """A `kdnas.models.teacher.Teacher`."""
    init: str = "inherit"
    layer_selection: str = "uniform"
    importance_method: str = "magnitude"
    seed: int = 0
    data: Any = None
    """A TokenBlock whose first rows an activation-based importance ranking reads."""
    vocab: Any = None
    """`kdnas.space.vocab.VocabTable` of the run: the kept teacher ids of archs with a trimmed vocabulary."""
    importance: Any = None
    """The teacher's unit ranking (computed on first use when None)."""

    @classmethod
    def from_config(cls, teacher: Any, distill_cfg: Any, *, seed: int, data: Any = None, vocab: Any = None,
                    importance: Any = None) -> StudentBuilder:  # fmt: skip
        """A builder with the settings of a `DistillConfig` (init, layer_selection, importance)."""
        return cls(teacher, init=distill_cfg.init, layer_selection=distill_cfg.layer_selection,
                   importance_method=distill_cfg.importance, seed=seed, data=data, vocab=vocab,
                   importance=importance)  # fmt: skip

    def ranking(self) -> Any:
        """The importance ranking of the teacher's heads, neurons and hidden dims (computed once)."""
        if self.importance is None:
            from kdnas.models.importance import compute_importance

            batches = None
            if self.importance_method == "activation" and self.data is not None:
                n = min(IMPORTANCE_ROWS, len(self.data))
                batches = [self.data[i : i + 16] for i in range(0, n, 16)]
            self.importance = compute_importance(self.teacher.model, self.importance_method, batches)
        return self.importance

    def vocab_ids(self, arch: Arch) -> list[int] | None:
        """Teacher ids of `arch`'s embedding rows (None: the teacher's whole table)."""
        if arch.vocab_size is None:
            return None
        if self.vocab is None:
            raise ArchError(
                f"{arch.arch_id} has a trimmed vocabulary but this run has no vocabulary table (vocab.json, "
                "written by the data stage when the search space has a `vocab` dimension); run `kdnas run`"
            )
        return list(self.vocab.ids_for(arch))

    def input_map(self, arch: Arch) -> Any:
        """LongTensor [teacher vocab] teacher id -> student id for a trimmed vocabulary, else None."""
        return None if arch.vocab_size is None else self.vocab.input_map(arch)

    def build(self, arch: Arch) -> Any:
        """The student of shape `arch` (see the module docstring)."""
        from kdnas.models.inherit import inherit_student, remap_token_ids
        from kdnas.models.student import build_student

        ids = self.vocab_ids(arch)
        if self.init == "inherit" and arch.family != "mobilebert":
            return inherit_student(self.teacher.model, arch, layer_selection=self.layer_selection,
                                   importance=self.ranking(), seed=self.seed, vocab_ids=ids)  # fmt: skip
        student = build_student(self.teacher.config, arch, seed=self.seed)
        if ids is not None:
            remap_token_ids(student.config, ids)
        return student
