"""Retention tables: per task and on average, student score / teacher score, speed-up and params ratio.

Scores come from the fine-tuning protocol (`TaskResult`); latencies are passed in (model name -> latency_ms).
Written as JSON and as Markdown: the main table, then (with several languages or zero-shot columns) a view per
language. Zero-shot columns are averaged apart from in-language ones (see `RetentionRow`).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdnas.data.topics import language_of_ref, split_task_ref
from kdnas.errors import DataError, KdnasError
from kdnas.evaluate.finetune import TaskResult

OTHER_LANGUAGE = "other"
"""Group of the columns whose language is unknown (task files); left out of `language_avg_retention`."""


@dataclass
class ModelReport:
    """One model's results under the protocol, task name -> result."""

    name: str
    results: dict[str, TaskResult]
    params: int | None = None
    arch: str | None = None
    """Shape of the encoder (Arch.describe()), if known."""
    fidelity: dict[str, Any] | None = None
    """Label-free fidelity to the teacher on held-out passages (`kdnas.evaluate.fidelity.FidelityResult`)."""
    pair_similarity: dict[str, Any] | None = None
    """Task -> zero-shot pair score (`kdnas.evaluate.pair_similarity.PairSimilarity`), None when not computed."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "arch": self.arch, "fidelity": self.fidelity,
                "pair_similarity": self.pair_similarity,
                "results": {k: v.to_dict() for k, v in self.results.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelReport:
        return cls(name=d["name"], params=d.get("params"), arch=d.get("arch"), fidelity=d.get("fidelity"),
                   pair_similarity=d.get("pair_similarity"),
                   results={k: TaskResult.from_dict(v) for k, v in d["results"].items()})  # fmt: skip


@dataclass
class RetentionRow:
    """A model's scores next to the teacher's.

    `avg_retention` is the mean over the in-language (supervised) columns only, so adding zero-shot columns
    does not move it; zero-shot columns have their own mean (`zero_shot_retention`), each against the
    teacher's own zero-shot score.
    """

    model: str
    scores: dict[str, float]
    """Task -> test score (main metric, mean over seeds)."""
    stds: dict[str, float]
    """Task -> std over seeds."""
    retention: dict[str, float | None]
    """Task -> score / teacher score (None where the teacher scored <= 0)."""
    avg_retention: float | None
    """Mean retention over the in-language columns (zero-shot columns excluded)."""
    params: int | None = None
    params_ratio: float | None = None
    """params / teacher params."""
    latency_ms: float | None = None
    speedup: float | None = None
    """teacher latency / this model's latency."""
    zero_shot_retention: float | None = None
    """Mean retention over the zero-shot columns (None: no zero-shot column)."""
    language_retention: dict[str, float | None] = field(default_factory=dict)
    """Language -> mean retention over its in-language columns."""
    language_zero_shot_retention: dict[str, float | None] = field(default_factory=dict)
    """Language -> mean retention over the zero-shot columns into it."""
    language_avg_retention: float | None = None
    """Mean of `language_retention` over the known languages (each language weighs the same)."""
    fidelity: dict[str, Any] | None = None
    """Label-free fidelity to the teacher (mean_cosine, cka, recall_at_10, passages), if measured."""


@dataclass
class RetentionTable:
    """Teacher first, then every other model, on the same tasks."""

    tasks: list[str]
    metrics: dict[str, str]
    """Task -> main metric name."""
    rows: list[RetentionRow]
    teacher: str
    notes: list[str] = field(default_factory=list)
    languages: dict[str, str] = field(default_factory=dict)
    """Task -> language of its test texts (`other` when unknown)."""
    zero_shot: list[str] = field(default_factory=list)
    """The zero-shot columns (`SOURCE>TARGET`), in task order."""
    majority: dict[str, float | None] = field(default_factory=dict)
    """Task -> test accuracy of always answering the most frequent train class (None: regression)."""
    test_se: dict[str, float | None] = field(default_factory=dict)
    """Task -> the teacher's test standard error (sampling error of the test split)."""
    embedding: list[str] = field(default_factory=list)
    """The columns scored without fine-tuning, from the cosine of two embeddings (`pair_encoding: embedding`)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return p

    def language_groups(self) -> dict[str, list[str]]:
        """Language -> its columns in task order; languages in order of first appearance, `other` last."""
        groups: dict[str, list[str]] = {}
        for t in self.tasks:
            groups.setdefault(self.languages.get(t, OTHER_LANGUAGE), []).append(t)
        if OTHER_LANGUAGE in groups:
            groups[OTHER_LANGUAGE] = groups.pop(OTHER_LANGUAGE)
        return groups

    def has_language_view(self) -> bool:
        """The per-language view adds something: several languages, or zero-shot columns."""
        return len(self.language_groups()) > 1 or bool(self.zero_shot)

    def header(self, task: str) -> str:
        zs = ", zero-shot" if task in self.zero_shot else ""
        zs += ", embedding cosine" if task in self.embedding else ""
        maj = self.majority.get(task)
        return (
            f"{task} ({self.metrics[task]}{zs}"
            + (f"; majority {100 * maj:.1f}" if maj is not None else "")
            + ")"
        )

    @property
    def has_fidelity(self) -> bool:
        return any(r.fidelity for r in self.rows)

    def score_cell(self, row: RetentionRow, task: str) -> str:
        """`score ± std (retention%)` (retention left out for the teacher), `–` when the model lacks the task."""
        if task not in row.scores:
            return "–"
        cell = f"{100 * row.scores[task]:.2f}"
        if task not in self.embedding:  # an embedding column is one deterministic score: no spread over seeds
            cell += f" ± {100 * row.stds[task]:.2f}"
        ret = row.retention.get(task)
        if ret is not None and row.model != self.teacher:
            cell += f" ({100 * ret:.1f}%)"
        return cell

    def to_markdown(self) -> str:
        zs = bool(self.zero_shot)
        head = ["model", *(self.header(t) for t in self.tasks), "avg retention",
                *(["zero-shot retention"] if zs else []), "speed-up", "params (M)", "params ratio"]  # fmt: skip
        fid = self.has_fidelity
        if fid:
            head += ["emb cosine", "CKA", "recall@10"]
        body = []
        for r in self.rows:
            cells = [r.model, *(self.score_cell(r, t) for t in self.tasks), _pct(r.avg_retention)]
            if zs:
                cells.append(_pct(r.zero_shot_retention))
            cells.append(_fmt(r.speedup, "{:.2f}x"))
            cells.append(_fmt(None if r.params is None else r.params / 1e6, "{:.1f}"))
            cells.append(_fmt(r.params_ratio, "{:.3f}"))
            if fid:
                f = r.fidelity or {}
                cells += [_fmt(f.get("mean_cosine"), "{:.3f}"), _fmt(f.get("cka"), "{:.3f}"),
                          _fmt(f.get("recall_at_10"), "{:.3f}")]  # fmt: skip
            body.append(cells)
        lines = _md(head, body)
        lines.append("")
        lines.append("Scores: test, main metric x 100, mean ± std over seeds at the lr chosen on dev; "
                     "(x%) = retention of the teacher's score; majority = the score of always answering the "
                     "most frequent train class.")  # fmt: skip
        if self.embedding:
            lines.append(f"{', '.join(self.embedding)}: no fine-tuning; the cosine of the two texts' embeddings "
                         "(each model's pooling and Dense) at the threshold best on dev, one deterministic score "
                         "per model (docs/evaluation.md#pair-tasks).")  # fmt: skip
        ses = [f"{t} ±{100 * v:.2f}" for t, v in self.test_se.items() if v is not None]
        if ses:
            lines.append("Test-set standard error of the teacher's score (sampling error of the test split "
                         f"alone, beside the seeds' std): {', '.join(ses)}.")  # fmt: skip
        if fid:
            passages = next((r.fidelity or {}).get("passages") for r in self.rows if r.fidelity)
            lines.append(
                f"Fidelity (label-free, {passages} held-out passages of the corpus): emb cosine = mean cosine "
                "of the pooled sentence embedding to the teacher's (as the teacher pools); CKA = linear CKA "
                "of the last hidden states; recall@10 = overlap of each passage's 10 nearest neighbours "
                "under the model and under the teacher."
            )
        if zs:
            lines.append(
                "Zero-shot columns (SOURCE>TARGET): fine-tuned on the source (lr chosen on the source's dev), "
                "tested on the target's test split through the topic map; retention against the teacher's own "
                "zero-shot score. `avg retention` covers the in-language columns only; `zero-shot retention` "
                "is the mean of the zero-shot columns."
            )
        lines.extend(self.notes)
        if self.has_language_view():
            lines += ["", *self._language_view()]
        return "\n".join(lines) + "\n"

    def _language_view(self) -> list[str]:
        groups = self.language_groups()
        cols: list[tuple[str, str, bool]] = []  # (header, language, zero-shot)
        for lang, tasks in groups.items():
            if any(t not in self.zero_shot for t in tasks):
                cols.append((lang, lang, False))
            if any(t in self.zero_shot for t in tasks):
                cols.append((f"{lang} zero-shot", lang, True))
        head = ["model", *(c[0] for c in cols), "avg over languages"]
        body = []
        for r in self.rows:
            cells = [r.model]
            for _, lang, z in cols:
                cells.append(_pct((r.language_zero_shot_retention if z else r.language_retention).get(lang)))
            body.append([*cells, _pct(r.language_avg_retention)])
        out = ["## Per language", "", *_md(head, body), "",
               "Retention against the teacher per language of the test texts: in-language columns and zero-shot "
               "columns into the language averaged apart; `avg over languages` is the mean of the in-language "
               f"figures, each language weighing the same ({OTHER_LANGUAGE!r}: tasks of unknown language, "
               "left out of it)."]  # fmt: skip
        for lang, tasks in groups.items():
            sup = [t for t in tasks if t not in self.zero_shot]
            zst = [t for t in tasks if t in self.zero_shot]
            head = ["model", *(self.header(t) for t in tasks)]
            head += [f"retention ({lang})"] if sup else []
            head += [f"zero-shot retention ({lang})"] if zst else []
            body = []
            for r in self.rows:
                cells = [r.model, *(self.score_cell(r, t) for t in tasks)]
                cells += [_pct(r.language_retention.get(lang))] if sup else []
                cells += [_pct(r.language_zero_shot_retention.get(lang))] if zst else []
                body.append(cells)
            out += ["", f"### {lang}", "", *_md(head, body)]
        return out

    def write_markdown(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_markdown())
        return p


def _md(head: list[str], body: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(c) + " |" for c in body),
    ]


def _fmt(v: float | None, f: str) -> str:
    return "–" if v is None else f.format(v)


def _pct(v: float | None) -> str:
    return _fmt(v, "{:.1%}")


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.fmean(vals) if vals else None


def retention(score: float, teacher_score: float) -> float | None:
    """score / teacher_score; None where the teacher's score is not positive (ratio meaningless)."""
    return score / teacher_score if teacher_score > 0 else None


def _is_zero_shot(task: str, res: TaskResult) -> bool:
    if res.zero_shot is not None:
        return True
    try:  # results written before zero-shot details were recorded: tell by the reference
        return split_task_ref(task) is not None
    except DataError:
        return False


def retention_table(
    teacher: ModelReport,
    models: list[ModelReport],
    *,
    latency_ms: dict[str, float] | None = None,
    speedup: dict[str, float] | None = None,
) -> RetentionTable:
    """Compare every model with the teacher on the teacher's tasks.

    latency_ms: model name -> latency (e.g. from `kdnas.latency` on the configured target); the teacher's entry
    is needed for speed-ups. speedup: model name -> speed-up measured side by side (the median of per-round
    ratios, `SideBySide.speedup`), used in preference to the ratio of the latencies' medians. Tasks a model lacks are left out of its averages. Zero-shot columns are compared
    with the teacher's zero-shot score and averaged apart (`RetentionRow.zero_shot_retention`).
    """
    tasks = list(teacher.results)
    if not tasks:
        raise KdnasError(f"{teacher.name}: no task results to compare against")
    zero_shot = [t for t in tasks if _is_zero_shot(t, teacher.results[t])]
    languages = {t: teacher.results[t].language or language_of_ref(t) or OTHER_LANGUAGE for t in tasks}
    langs = list(dict.fromkeys(languages.values()))
    lat = latency_ms or {}
    t_lat = lat.get(teacher.name)
    rows = []
    for m in [teacher, *models]:
        scores = {t: m.results[t].test_mean for t in tasks if t in m.results}
        stds = {t: m.results[t].test_std for t in tasks if t in m.results}
        ret = {t: retention(scores[t], teacher.results[t].test_mean) for t in scores}

        def mean_of(zs: bool, lang: str | None = None, ret: dict[str, float | None] = ret) -> float | None:
            return _mean([v for t, v in ret.items()
                          if (t in zero_shot) == zs and (lang is None or languages[t] == lang)])  # fmt: skip

        by_lang = {
            g: mean_of(False, g)
            for g in langs
            if any(languages[t] == g and t not in zero_shot for t in tasks)
        }
        by_lang_zs = {g: mean_of(True, g) for g in langs if any(languages[t] == g for t in zero_shot)}
        m_lat = lat.get(m.name)
        rows.append(RetentionRow(
            model=m.name, scores=scores, stds=stds, retention=ret,
            avg_retention=mean_of(False),
            params=m.params,
            params_ratio=m.params / teacher.params if m.params and teacher.params else None,
            latency_ms=m_lat,
            speedup=(speedup or {}).get(m.name) or (t_lat / m_lat if t_lat and m_lat else None),
            zero_shot_retention=mean_of(True) if zero_shot else None,
            language_retention=by_lang,
            language_zero_shot_retention=by_lang_zs,
            language_avg_retention=_mean([v for g, v in by_lang.items() if g != OTHER_LANGUAGE]),
            fidelity=m.fidelity,
        ))  # fmt: skip
    notes = []
    if lat and t_lat is None:
        notes.append(f"No latency for the teacher {teacher.name!r}: speed-ups left out.")
    for t in zero_shot:
        notes.append(_zero_shot_note(t, teacher.results[t]))
    return RetentionTable(tasks=tasks, metrics={t: teacher.results[t].metric for t in tasks}, rows=rows,
                          teacher=teacher.name, notes=notes, languages=languages, zero_shot=zero_shot,
                          majority={t: teacher.results[t].majority_rate for t in tasks},
                          test_se={t: teacher.results[t].test_se for t in tasks},
                          embedding=[t for t in tasks if teacher.results[t].pair_encoding == "embedding"])  # fmt: skip


def _zero_shot_note(task: str, res: TaskResult) -> str:
    z = res.zero_shot
    if not z:
        return f"{task}: zero-shot ({res.n_test} target test examples)."
    excluded = z.get("excluded") or {}
    ex = ", ".join(f"{k} {v}" for k, v in excluded.items()) if excluded else "none"
    unmapped = z.get("unmapped_source") or []
    merged = [f"{k} <- {' + '.join(v)}" for k, v in (z.get("classes") or {}).items() if len(v) > 1]
    note = (f"{task}: {res.n_test} {z.get('target')} test examples in {len(z.get('classes') or {})} shared "
            f"classes; excluded (target label with no source class): {ex}")  # fmt: skip
    if merged:
        note += f"; merged: {'; '.join(merged)}"
    if unmapped:
        note += f"; never predicted (no target class): {', '.join(unmapped)}"
    return note + "."
