"""The terminal summary of a run (rich): counts, recommendations per budget, the front and retention."""

from __future__ import annotations

from typing import Any

from kdnas.report.data import ReportData
from kdnas.report.tables import BUDGET_NOTE, budget_verdict


def _f(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def print_summary(data: ReportData, console: Any = None) -> None:
    """Print the run's headline numbers as rich tables (to `console`, default a new stdout Console)."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    counts: dict[str, int] = {}
    for t in data.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    t_lat = data.teacher.latency_ms if data.teacher else None
    head = (
        f"[bold]{data.title}[/bold]: {len(data.trials)} trials ("
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + ")"
    )
    if data.teacher and t_lat:
        head += f"; teacher {data.teacher.name} at {t_lat:.3g} ms"
    con.print(head)

    if data.recommendations:
        tab = Table(title="Recommended students", title_justify="left")
        for col in ("budget", "arch", "latency ms", "speed-up", "KD loss", "params M"):
            tab.add_column(col, justify="left" if col in ("budget", "arch") else "right")
        for r in data.recommendations:
            speed = f"{t_lat / r.latency_ms:.1f}x" if t_lat and r.latency_ms else "–"
            arch = r.arch_id or f"[yellow]{r.reason or 'none'}[/yellow]"
            tab.add_row(f"{r.budget_label} ({r.budget_ms:.3g} ms)", arch, _f(r.latency_ms, ".3g"), speed,
                        _f(r.kd_loss, ".4f"), _f(r.params_m, ".2f"))  # fmt: skip
        con.print(tab)

    front = data.front()
    if front:
        tab = Table(title=f"Pareto front ({len(front)})", title_justify="left")
        for col in ("trial", "arch", "latency ms", "speed-up", "KD loss", "params M"):
            tab.add_column(col, justify="left" if col == "arch" else "right")
        for t in front:
            speed = f"{t_lat / t.latency_ms:.1f}x" if t_lat and t.latency_ms else "–"
            tab.add_row(str(t.number), t.arch_id or "?", _f(t.latency_ms, ".3g"), speed, _f(t.kd_loss, ".4f"),
                        _f(t.params_m, ".2f"))  # fmt: skip
        con.print(tab)
    else:
        con.print("[yellow]no completed trials: nothing on the front[/yellow]")

    if data.retention:
        tasks = data.tasks or sorted({k for e in data.retention for k in e.scores})
        tab = Table(title="Retention against the teacher", title_justify="left")
        tab.add_column("model")
        for task in tasks:
            tab.add_column(task, justify="right")
        tab.add_column("avg retention", justify="right")
        tab.add_column("speed-up", justify="right")
        for e in data.retention:
            cells = [_f(None if e.scores.get(k) is None else 100 * e.scores[k], ".2f") for k in tasks]
            avg = _f(None if e.avg_retention is None else 100 * e.avg_retention, ".1f") + "%"
            tab.add_row(e.model, *cells, avg, _f(e.speedup, ".2f") + "x")
        con.print(tab)
    missed = [c for c in data.budget_checks() if c.met is False]
    for c in missed:
        con.print(
            f"[yellow]{c.model}: {budget_verdict(c)} of its {c.budget_label} budget in the final table "
            f"({_f(c.final_speedup, '.2f')}x; {_f(c.chosen_speedup, '.2f')}x when the search chose it)[/yellow]"
        )
    if missed:
        con.print(BUDGET_NOTE)
