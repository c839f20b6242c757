"""The suite plot of a run: each evaluated model's suite average against its speed-up over the teacher, timed
side by side: the teacher, the searched students (and their front), the hand-picked baselines and the static
peer. This is the comparison the search exists for: a searched student above a baseline at the same speed-up.

`suite_png` draws it with matplotlib, `suite_html` with plotly (plotly.js inlined, works offline). Both need
the evaluate stage's retention table; without timed rows they draw nothing and return None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdnas._imports import optional_import
from kdnas.report.data import ReportData, RetentionEntry
from kdnas.report.plots import save_png, write_html

_STYLE = {  # role -> (colour, matplotlib marker, plotly symbol, size)
    "teacher": ("#2ca02c", "*", "star", 15),
    "student": ("#d62728", "o", "circle", 9),
    "baseline": ("#9467bd", "D", "diamond", 8),
    "peer": ("#8c564b", "s", "square", 8),
}
_LABEL = {"teacher": "teacher", "student": "searched student", "baseline": "hand-picked baseline",
          "peer": "static peer (Model2Vec recipe)"}  # fmt: skip


def suite_points(data: ReportData) -> list[RetentionEntry]:
    """The retention rows that have both a speed-up and a suite average, fastest last."""
    return sorted(
        (e for e in data.retention if e.speedup is not None and e.suite_avg is not None),
        key=lambda e: e.speedup or 0.0,
    )


def searched_front(points: list[RetentionEntry]) -> list[RetentionEntry]:
    """The searched students no other student beats on both speed-up and suite average, slowest first."""
    studs = [e for e in points if e.role == "student"]
    front = [
        e for e in studs
        if not any((o.speedup or 0) >= (e.speedup or 0) and (o.suite_avg or 0) > (e.suite_avg or 0) for o in studs)
    ]  # fmt: skip
    return sorted(front, key=lambda e: e.speedup or 0.0)


def _y(e: RetentionEntry) -> float:
    """The suite average as the tables print it (scores x 100)."""
    return 100.0 * (e.suite_avg or 0.0)


def _hover(e: RetentionEntry) -> str:
    parts = [f"{e.model} ({e.role})", f"suite {_y(e):.2f}", f"{e.speedup:.2f}x the teacher"]
    if e.avg_retention is not None:
        parts.append(f"retention {100 * e.avg_retention:.1f}%")
    f = e.fidelity or {}
    if f.get("mean_cosine") is not None:
        parts.append(f"emb cosine {f['mean_cosine']:.3f}")
    if f.get("recall_at_10") is not None:
        parts.append(f"recall@10 {f['recall_at_10']:.3f}")
    return "<br>".join(parts)


def suite_png(data: ReportData, path: str | Path, *, dpi: int = 130) -> Path | None:
    """Write the suite plot as a PNG (None, nothing written, when no evaluated model was timed)."""
    pts = suite_points(data)
    if not pts:
        return None
    mpl = optional_import("matplotlib", purpose="the report's PNG plot")
    mpl.use("Agg", force=True)
    plt = optional_import("matplotlib.pyplot", purpose="the report's PNG plot")
    fig, ax = plt.subplots(figsize=(9, 5.6))
    try:
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        for role, (color, marker, _, size) in _STYLE.items():
            rows = [e for e in pts if e.role == role]
            if not rows:
                continue
            ax.scatter([e.speedup for e in rows], [_y(e) for e in rows], marker=marker, s=size * 9, c=color,
                       edgecolors="black", linewidths=0.6, zorder=4, label=_LABEL[role])  # fmt: skip
            for e in rows:
                ax.annotate(e.model, (e.speedup, _y(e)), textcoords="offset points", xytext=(6, 5),
                            fontsize=8, color=color, zorder=5)  # fmt: skip
        front = searched_front(pts)
        if len(front) > 1:
            ax.plot([e.speedup for e in front], [_y(e) for e in front], c=_STYLE["student"][0], lw=1.2,
                    alpha=0.7, zorder=3, label="searched front")  # fmt: skip
        ax.set_xlabel("speed-up over the teacher, timed side by side (log scale)")
        ax.set_ylabel("suite average (test, x 100, mean over seeds)")
        ax.set_title(f"{data.title}: suite score against speed-up")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(loc="lower left", fontsize=8.5, framealpha=0.9)
        return save_png(fig, path, dpi=dpi)
    finally:
        plt.close(fig)


def suite_figure(data: ReportData) -> Any:
    """The interactive plotly figure of the suite plot (hover: role, suite, speed-up, retention, fidelity)."""
    go = optional_import("plotly.graph_objects", purpose="the report's HTML plot")
    pts = suite_points(data)
    fig = go.Figure()
    front = searched_front(pts)
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=[e.speedup for e in front], y=[_y(e) for e in front], mode="lines",
                                 name="searched front", line={"color": _STYLE["student"][0]}))  # fmt: skip
    for role, (color, _, symbol, size) in _STYLE.items():
        rows = [e for e in pts if e.role == role]
        if rows:
            fig.add_trace(go.Scatter(
                x=[e.speedup for e in rows], y=[_y(e) for e in rows], name=_LABEL[role], mode="markers+text",
                text=[e.model for e in rows], textposition="top right", hovertext=[_hover(e) for e in rows],
                hoverinfo="text", marker={"color": color, "symbol": symbol, "size": size + 3,
                                          "line": {"color": "black", "width": 1}},
            ))  # fmt: skip
    fig.update_layout(
        title=f"{data.title}: suite score against speed-up",
        xaxis_title="speed-up over the teacher, timed side by side",
        yaxis_title="suite average (test, x 100, mean over seeds)",
        template="plotly_white",
        hovermode="closest",
    )
    fig.update_xaxes(type="log")
    return fig


def suite_html(data: ReportData, path: str | Path) -> Path | None:
    """Write the interactive suite plot as one self-contained HTML file (None when nothing was timed)."""
    if not suite_points(data):
        return None
    return write_html(suite_figure(data), path)
