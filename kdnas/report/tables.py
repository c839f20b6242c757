"""The report's tables: every trial as CSV, and the Markdown summary (front, recommendations, retention)."""

from __future__ import annotations

import csv
from pathlib import Path

from kdnas.report.data import BudgetCheck, ReportData

CSV_COLUMNS = (
    "number", "state", "arch_id", "latency_ms", "kd_loss", "kd_loss_long", "params_m", "vocab_size", "on_front",
    "reason",
)  # fmt: skip


def trials_csv(data: ReportData, path: str | Path) -> Path:
    """One row per trial (in trial order), with `on_front` marking the Pareto-optimal ones."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    front = {id(t) for t in data.front()}
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for t in sorted(data.trials, key=lambda t: t.number):
            w.writerow([
                t.number, t.state, t.arch_id or "", _num(t.latency_ms), _num(t.kd_loss), _num(t.kd_loss_long),
                _num(t.params_m), "" if t.vocab_size is None else t.vocab_size, int(id(t) in front),
                (t.reason or "").replace("\n", " "),
            ])  # fmt: skip
    return p


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def _f(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


BUDGET_NOTE = (
    "The search chose each student by a timing taken side by side with its rivals; the final table re-times every "
    "model after fine-tuning, and a student at a baseline's latency is read against that baseline's speed-up in "
    "the same table. On a shared host the two timings can differ by ~10% (docs/latency.md), so read a "
    "miss of a few percent as the host's drift between the two, and re-time the exported model where it will serve."
)


def budget_verdict(c: BudgetCheck) -> str:
    """`kept`, `missed by 7.4%` or `not timed` for one student's budget in the final table."""
    if c.met is None:
        return "not timed"
    return "kept" if c.met else f"missed by {100 * c.shortfall:.1f}%"


def budget_needs(c: BudgetCheck) -> str:
    """What the final table's speed-up must reach: `>= 7.00x`, or for an equal-latency budget the baseline's
    speed-up in the same table less the band's tolerance."""
    if c.floor is None:
        return "within the budget in ms"
    return f">= {c.floor:.2f}x" + (
        f" ({c.reference} in the same table, less the band)" if c.reference else ""
    )


def summary_markdown(data: ReportData, *, files: dict[str, str] | None = None) -> str:
    """The Markdown summary: counts, the Pareto front, the recommendation per budget, the retention table."""
    counts: dict[str, int] = {}
    for t in data.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    t_lat = data.teacher.latency_ms if data.teacher else None
    lines = [f"# {data.title}", ""]
    facts = [f"{len(data.trials)} trials (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"]
    if data.teacher and t_lat:
        facts.append(f"teacher: {data.teacher.name}, {t_lat:.3g} ms on the target")
    for k in ("strategy", "hypervolume", "kendall_tau_short_long", "stopped_reason"):
        if data.meta.get(k) is not None:
            v = data.meta[k]
            facts.append(
                f"{k.replace('_', ' ')}: {v:.4g}" if isinstance(v, float) else f"{k.replace('_', ' ')}: {v}"
            )
    lines += [f"- {x}" for x in facts] + [""]
    if files:
        lines += ["Files: " + ", ".join(f"[{k}]({v})" for k, v in files.items()), ""]

    lines += ["## Recommendations", ""]
    if data.recommendations:
        rows = []
        for r in data.recommendations:
            speed = f"{t_lat / r.latency_ms:.1f}x" if t_lat and r.latency_ms else "–"
            rows.append([r.budget_label, f"{r.budget_ms:.3g}", f"`{r.arch_id}`" if r.arch_id else (r.reason or "none"),
                         _f(r.latency_ms, ".3g"), speed, _f(r.kd_loss, ".4f"), _f(r.params_m, ".2f")])  # fmt: skip
        lines += _table(
            ["budget", "budget ms", "arch", "latency ms", "speed-up", "KD loss", "params (M)"], rows
        )
    else:
        lines.append("No latency budgets were set (target.budgets_ms / target.speedups).")
    lines.append("")

    front = data.front()
    lines += [
        "## Pareto front",
        "",
        "Over completed trials, fastest first: proxy KD loss against latency"
        + (" and parameters" if "params_m" in (data.meta.get("objectives") or []) else "")
        + ".",
        "",
    ]
    if front:
        rows = [[str(t.number), f"`{t.arch_id}`", _f(t.latency_ms, ".3g"),
                 f"{t_lat / t.latency_ms:.1f}x" if t_lat and t.latency_ms else "–", _f(t.kd_loss, ".4f"),
                 _f(t.params_m, ".2f")] for t in front]  # fmt: skip
        lines += _table(["trial", "arch", "latency ms", "speed-up", "KD loss", "params (M)"], rows)
    else:
        lines.append("No completed trials.")
    lines.append("")

    if data.retention:
        lines += ["## Retention against the teacher", ""]
        tasks = data.tasks or sorted({k for e in data.retention for k in e.scores})
        rows = []
        for e in data.retention:
            cells = [e.model]
            for task in tasks:
                s, ret = e.scores.get(task), e.retention.get(task)
                pct = f" ({100 * ret:.1f}%)" if ret is not None else ""
                cells.append("–" if s is None else f"{100 * s:.2f}{pct}")
            cells += [_f(None if e.avg_retention is None else 100 * e.avg_retention, ".1f") + "%",
                      _f(e.speedup, ".2f") + "x", _f(e.latency_ms, ".3g")]  # fmt: skip
            rows.append(cells)
        lines += _table(["model", *tasks, "avg retention", "speed-up", "latency ms"], rows)
        lines.append("")
    checks = data.budget_checks()
    if checks:
        lines += ["## Budgets in the final timing", ""]
        rows = [[c.model, c.budget_label, _f(c.chosen_speedup, ".2f") + "x", _f(c.final_speedup, ".2f") + "x",
                 budget_needs(c), budget_verdict(c)] for c in checks]  # fmt: skip
        lines += _table(
            ["student", "budget", "speed-up when chosen", "speed-up in the final table", "needs", "verdict"],
            rows,
        )
        lines += ["", BUDGET_NOTE, ""]
    failed = [t for t in data.trials if t.state == "failed"]
    if failed:
        lines += ["## Failed trials", ""]
        lines += [
            f"- trial {t.number} `{t.arch_id}`: {t.reason or 'no reason recorded'}" for t in failed[:20]
        ]
        if len(failed) > 20:
            lines.append(f"- ... and {len(failed) - 20} more (see trials.csv)")
        lines.append("")
    return "\n".join(lines)
