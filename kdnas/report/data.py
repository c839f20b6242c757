"""What a report shows (`ReportData`: trials, teacher, baselines, budgets, recommendations, retention) and
`load_report_data`, which reads it from a run dir's files (search.json, teacher.json, retention.json, ...).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdnas import run_dir as rd
from kdnas.errors import KdnasError

# The run-dir files a report reads are named in kdnas.run_dir; only the search results are required.

COMPLETE = "complete"


class ReportError(KdnasError):
    """A report cannot be made (no run dir, no search results, unreadable JSON)."""


@dataclass
class TrialRow:
    """One search trial as plotted: x = latency_ms, y = kd_loss (the short proxy loss every trial has)."""

    number: int
    """Trial number."""
    state: str
    """complete, failed, filtered, duplicate or running."""
    arch_id: str | None = None
    """The arch's stable id."""
    latency_ms: float | None = None
    """Latency on the target (measured or predicted)."""
    kd_loss: float | None = None
    """Proxy KD loss after the short distillation (one fidelity for all points, as the front uses)."""
    kd_loss_long: float | None = None
    """Proxy KD loss after the long distillation (promoted trials only)."""
    params_m: float | None = None
    """Parameters in millions."""
    reason: str | None = None
    """Why a trial failed or was filtered."""
    vocab_size: int | None = None
    """Rows of a trimmed vocabulary (None: the teacher's)."""

    @property
    def plottable(self) -> bool:
        return _finite(self.latency_ms) and _finite(self.kd_loss)


@dataclass
class RefPoint:
    """A model plotted for reference: the teacher or a manual baseline."""

    name: str
    """Label on the plot."""
    latency_ms: float | None
    """Latency on the same target as the trials."""
    kd_loss: float | None = None
    """Proxy KD loss against the teacher (0 for the teacher itself; None if never measured)."""
    params_m: float | None = None
    """Parameters in millions."""
    arch_id: str | None = None
    """Shape, if known."""


@dataclass
class RecommendationRow:
    """The arch recommended for one latency budget."""

    budget_label: str
    """How the budget was given (`12 ms`, `7x`)."""
    budget_ms: float
    """The budget in ms."""
    arch_id: str | None = None
    """Recommended arch (None: no evaluated arch meets the budget)."""
    latency_ms: float | None = None
    """Its latency."""
    kd_loss: float | None = None
    """Its proxy KD loss (long fidelity when it had one)."""
    params_m: float | None = None
    """Its parameters in millions."""
    trial: int | None = None
    """The trial that evaluated it."""
    reason: str | None = None
    """Why nothing was recommended."""
    budget_speedup: float | None = None
    """The budget as a speed-up over the teacher, when it was given as one (`7x`)."""
    budget_min_ms: float | None = None
    """An equal-latency budget (`=tinybert-4L-312H`): the low end of its band, the high end being `budget_ms`."""


@dataclass
class RetentionEntry:
    """One model's downstream scores against the teacher."""

    model: str
    """Model name (teacher, a baseline or a student)."""
    scores: dict[str, float]
    """Task -> test score (main metric)."""
    retention: dict[str, float | None]
    """Task -> score / teacher score."""
    avg_retention: float | None = None
    """Mean retention over tasks."""
    latency_ms: float | None = None
    """Latency on the target."""
    speedup: float | None = None
    """Teacher latency / this model's latency."""
    params: int | None = None
    """Parameter count."""
    role: str = "baseline"
    """teacher, student (a recommendation of the search), baseline (hand-picked) or peer (the static model)."""
    fidelity: dict[str, Any] | None = None
    """Label-free fidelity to the teacher (mean_cosine, cka, recall_at_10), if measured."""
    budget_label: str | None = None
    """The budget a student was recommended for (`7x`); None for every other model."""

    @property
    def suite_avg(self) -> float | None:
        """Mean test score over the tasks (main metric each), the suite average of the headline."""
        vals = [v for v in self.scores.values() if v is not None]
        return sum(vals) / len(vals) if vals else None


@dataclass
class BudgetCheck:
    """A recommended student's budget read against the final table's timing, not only the search's."""

    model: str
    budget_label: str
    chosen_speedup: float | None
    """The speed-up the recommendation showed when the search chose it (its latency / the teacher's)."""
    final_speedup: float | None
    """The speed-up of the final table, timed side by side with every scored model after fine-tuning."""
    met: bool | None
    """Whether the final timing keeps the budget (None: not timed)."""
    shortfall: float
    """How far the final timing misses the budget, as a fraction (0 when met)."""
    floor: float | None = None
    """The lowest final speed-up that keeps the budget (None for a budget in ms)."""
    reference: str | None = None
    """An equal-latency budget: the baseline whose speed-up in the same final table sets `floor` (its speed-up
    less the band's tolerance), so both sides of the comparison come from one timing."""


@dataclass
class ReportData:
    """Everything a report shows; built by `load_report_data(run_dir)` or by hand (tests, notebooks)."""

    trials: list[TrialRow]
    """Every trial of the search."""
    teacher: RefPoint | None = None
    """The teacher (plotted at kd_loss 0)."""
    baselines: list[RefPoint] = field(default_factory=list)
    """Manual baselines."""
    budgets_ms: list[float] = field(default_factory=list)
    """Latency budgets, drawn as vertical lines."""
    recommendations: list[RecommendationRow] = field(default_factory=list)
    """One per budget."""
    retention: list[RetentionEntry] = field(default_factory=list)
    """Downstream results, teacher first (empty before evaluation)."""
    tasks: list[str] = field(default_factory=list)
    """Task order for the retention table."""
    title: str = "kdnas run"
    """Heading of the report."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Extra facts shown in the summary (strategy, hypervolume, counts, ...)."""

    def front(self) -> list[TrialRow]:
        """Pareto front of the search's objectives (`meta["objectives"]`, default kd_loss and latency_ms; params_m
        when the search had it) over completed trials, one per arch, fastest first."""
        import numpy as np

        from kdnas.search.results import pareto_mask

        seen: dict[str, TrialRow] = {}
        for t in self.trials:
            if t.state == COMPLETE and t.plottable:
                seen.setdefault(t.arch_id or f"trial-{t.number}", t)
        done = list(seen.values())
        if not done:
            return []
        objectives = self.meta.get("objectives") or ["kd_loss", "latency_ms"]
        inf = math.inf

        def value(t: TrialRow, o: str) -> float:
            v = {"kd_loss": t.kd_loss, "latency_ms": t.latency_ms, "params_m": t.params_m}.get(o)
            return inf if v is None else float(v)

        mask = pareto_mask(np.array([[value(t, o) for o in objectives] for t in done], dtype=np.float64))
        return sorted((t for t, m in zip(done, mask) if m), key=lambda t: (t.latency_ms, t.kd_loss))

    def budget_checks(self) -> list[BudgetCheck]:
        """Each recommended student's budget against the final table's timing. The search places students by a
        timing taken side by side with their rivals; the final table re-times every model later, and on a shared
        host the two can differ by ~10% (docs/latency.md), so a student chosen at 7.3x may read 6.5x there."""
        recs = {r.budget_label: r for r in self.recommendations}
        final = {e.model: e.speedup for e in self.retention}
        t_lat = self.teacher.latency_ms if self.teacher else None
        out = []
        for e in self.retention:
            r = recs.get(e.budget_label or "")
            if r is None:
                continue
            chosen = t_lat / r.latency_ms if t_lat and r.latency_ms else None
            met: bool | None = None
            short = 0.0
            floor, ref = r.budget_speedup, None
            if r.budget_min_ms is not None and r.budget_speedup:  # at a baseline's latency, within a band
                tol = (r.budget_ms - r.budget_min_ms) / (r.budget_ms + r.budget_min_ms)
                name = r.budget_label.removeprefix("=")
                base = final.get(name)
                ref = name if base else None
                floor = (base or r.budget_speedup) / (1 + tol)
            if floor and e.speedup:
                met = e.speedup >= floor
                short = max(0.0, 1 - e.speedup / floor)
            elif e.latency_ms and _finite(r.budget_ms):
                met = e.latency_ms <= r.budget_ms
                short = max(0.0, e.latency_ms / r.budget_ms - 1)
            out.append(BudgetCheck(e.model, r.budget_label, chosen, e.speedup, met, short, floor, ref))
        return out

    def budget_label(self, budget_ms: float) -> str:
        for r in self.recommendations:
            if math.isclose(r.budget_ms, budget_ms, rel_tol=1e-9):
                return r.budget_label
        return f"{budget_ms:g} ms"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportData:
        def ref(x: dict[str, Any] | None) -> RefPoint | None:
            return RefPoint(**x) if x else None

        return cls(
            trials=[TrialRow(**t) for t in d.get("trials", [])],
            teacher=ref(d.get("teacher")),
            baselines=[RefPoint(**b) for b in d.get("baselines", [])],
            budgets_ms=[float(b) for b in d.get("budgets_ms", [])],
            recommendations=[RecommendationRow(**r) for r in d.get("recommendations", [])],
            retention=[RetentionEntry(**r) for r in d.get("retention", [])],
            tasks=list(d.get("tasks", [])),
            title=d.get("title", "kdnas run"),
            meta=dict(d.get("meta", {})),
        )


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e}); re-run the stage that writes it") from None


def load_report_data(run_dir: str | Path) -> ReportData:
    """Read a run dir's search results (required) plus teacher, baselines and retention files (optional)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"{run}: no such run dir (pass the dir `kdnas run` wrote, e.g. runs/default)")
    search_path = run / rd.SEARCH
    if not search_path.is_file():
        raise ReportError(
            f"{run}: no search results ({rd.SEARCH}); run the search stage first (`kdnas run --resume {run}`)"
        )
    search = read_json(search_path)
    if not isinstance(search, dict) or not isinstance(search.get("trials"), list):
        raise ReportError(f"{search_path}: expected a search result with a `trials` list")

    trials = [_trial(t) for t in search["trials"]]
    # `kdnas run` re-places the recommendations side by side (kdnas.search.placement) and writes them apart
    placed = read_json(run / rd.RECOMMENDATIONS) if (run / rd.RECOMMENDATIONS).is_file() else None
    recs = [
        _recommendation(r)
        for r in (placed if isinstance(placed, list) else search.get("recommendations", []))
    ]
    teacher_info = read_json(run / rd.TEACHER) if (run / rd.TEACHER).is_file() else {}
    t_params = teacher_info.get("params")
    teacher = RefPoint(
        name=f"teacher ({teacher_info.get('teacher', 'teacher')})" if teacher_info else "teacher",
        latency_ms=search.get("teacher_latency_ms"),
        kd_loss=0.0,
        params_m=t_params / 1e6 if isinstance(t_params, int | float) else None,
        arch_id=teacher_info.get("arch_id"),
    )
    baselines: list[RefPoint] = []
    if (run / rd.MANUAL_BASELINES).is_file():
        raw = read_json(run / rd.MANUAL_BASELINES)
        items = raw.get("baselines", []) if isinstance(raw, dict) else raw
        baselines = [RefPoint(**{k: b.get(k) for k in ("name", "latency_ms", "kd_loss", "params_m", "arch_id")})
                     for b in items]  # fmt: skip

    retention: list[RetentionEntry] = []
    tasks: list[str] = []
    ret_path = run / rd.RETENTION
    if ret_path.is_file():
        table = read_json(ret_path)
        tasks = list(table.get("tasks", []))
        budgets = {s.get("name"): s.get("budget_label") for s in _summary_students(run)}
        students = set(budgets)
        for r in table.get("rows", []):
            name = r["model"]
            role = ("teacher" if name == table.get("teacher") else "student" if name in students
                    else "peer" if name == rd.STATIC_PEER else "baseline")  # fmt: skip
            retention.append(RetentionEntry(
                model=name, scores=r.get("scores", {}), retention=r.get("retention", {}),
                avg_retention=r.get("avg_retention"), latency_ms=r.get("latency_ms"), speedup=r.get("speedup"),
                params=r.get("params"), role=role, fidelity=r.get("fidelity"), budget_label=budgets.get(name),
            ))  # fmt: skip
        # baselines named in the retention table but absent from baselines.json still get a point when timed
        known = {b.name for b in baselines} | {table.get("teacher")}
        for r in retention:
            if r.model not in known and r.model not in students and r.latency_ms is not None:
                baselines.append(RefPoint(name=r.model, latency_ms=r.latency_ms))

    meta: dict[str, Any] = {"search_file": str(search_path.relative_to(run))}
    for k in ("strategy", "hypervolume", "counts", "kendall_tau_short_long", "stopped_reason", "study_name",
              "objectives"):  # fmt: skip
        if search.get(k) is not None:
            meta[k] = search[k]
    return ReportData(
        trials=trials,
        teacher=teacher if teacher.latency_ms is not None else None,
        baselines=baselines,
        budgets_ms=[r.budget_ms for r in recs],
        recommendations=recs,
        retention=retention,
        tasks=tasks,
        title=f"kdnas run {run.resolve().name}",
        meta=meta,
    )


def _summary_students(run: Path) -> list[dict[str, Any]]:
    if not (run / rd.SUMMARY).is_file():
        return []
    s = read_json(run / rd.SUMMARY)
    return [x for x in s.get("students", []) if isinstance(x, dict)] if isinstance(s, dict) else []


def _trial(t: dict[str, Any]) -> TrialRow:
    arch_id = t.get("arch_id")
    return TrialRow(
        number=int(t.get("number", -1)),
        state=str(t.get("state", "unknown")),
        arch_id=arch_id,
        latency_ms=t.get("latency_ms"),
        kd_loss=t.get("kd_loss_short", t.get("kd_loss")),
        kd_loss_long=t.get("kd_loss_long"),
        params_m=t.get("params_m"),
        reason=t.get("reason"),
        vocab_size=(t.get("arch") or {}).get("vocab_size"),
    )


def _recommendation(r: dict[str, Any]) -> RecommendationRow:
    b = r.get("budget") or {}
    ms = float(b.get("latency_ms", r.get("budget_ms", math.nan)))
    return RecommendationRow(
        budget_label=str(b.get("label") or f"{ms:g} ms"),
        budget_ms=ms,
        arch_id=r.get("arch_id"),
        latency_ms=r.get("latency_ms"),
        kd_loss=r.get("kd_loss"),
        params_m=r.get("params_m"),
        trial=r.get("trial"),
        reason=r.get("reason"),
        budget_speedup=b.get("speedup"),
        budget_min_ms=b.get("min_latency_ms"),
    )
