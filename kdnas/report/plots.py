"""The Pareto plot of a search: every trial (latency vs proxy KD loss), the front, budgets, teacher, baselines.

`pareto_png` draws it with matplotlib (Agg, no display needed); `pareto_html` with plotly, plotly.js inlined
so the file works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdnas._imports import optional_import
from kdnas.report.data import COMPLETE, ReportData, TrialRow

_COLORS = {
    "trial": "#7f9fbf",
    "front": "#d62728",
    "failed": "#444444",
    "filtered": "#bbbbbb",
    "teacher": "#2ca02c",
    "baseline": "#9467bd",
    "budget": "#ff7f0e",
}


def _groups(data: ReportData) -> dict[str, list[TrialRow]]:
    front = data.front()
    front_ids = {id(t) for t in front}
    out: dict[str, list[TrialRow]] = {"front": front, "trial": [], "failed": [], "filtered": []}
    for t in data.trials:
        if id(t) in front_ids:
            continue
        if t.state == COMPLETE:
            out["trial"].append(t)
        elif t.state == "failed":
            out["failed"].append(t)
        elif t.state in ("filtered", "pruned"):
            out["filtered"].append(t)
    return out


def _use_log_x(data: ReportData) -> bool:
    raw = [t.latency_ms for t in data.trials if t.plottable]
    raw += [p.latency_ms for p in [data.teacher, *data.baselines] if p and p.latency_ms]
    xs = [x for x in [*raw, *data.budgets_ms] if x is not None and x > 0]
    return bool(xs) and max(xs) / min(xs) > 8


def _hover(t: TrialRow) -> str:
    parts = [f"trial {t.number} ({t.state})", t.arch_id or "arch ?"]
    if t.latency_ms is not None:
        parts.append(f"latency {t.latency_ms:.3g} ms")
    if t.kd_loss is not None:
        parts.append(f"KD loss {t.kd_loss:.4f}")
    if t.kd_loss_long is not None:
        parts.append(f"long KD loss {t.kd_loss_long:.4f}")
    if t.params_m is not None:
        parts.append(f"{t.params_m:.2f} M params")
    if t.reason:
        parts.append(t.reason[:120])
    return "<br>".join(parts)


def pareto_png(data: ReportData, path: str | Path, *, dpi: int = 130) -> Path:
    """Write the Pareto plot as a PNG; trials without a loss (failed, filtered) are ticked along the bottom."""
    mpl = optional_import("matplotlib", purpose="the report's PNG plot")
    mpl.use("Agg", force=True)
    plt = optional_import("matplotlib.pyplot", purpose="the report's PNG plot")
    from matplotlib.transforms import blended_transform_factory

    g = _groups(data)
    fig, ax = plt.subplots(figsize=(9, 5.6))
    try:
        if _use_log_x(data):
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        ax.margins(x=0.06)
        pts = [t for t in g["trial"] if t.plottable]
        if pts:
            ax.scatter([t.latency_ms for t in pts], [t.kd_loss for t in pts], s=22, c=_COLORS["trial"],
                       alpha=0.7, label=f"trial ({len(pts)})", zorder=2, edgecolors="none")  # fmt: skip
        front = g["front"]
        if front:
            line = _front_2d(front)  # a params objective puts points on the front that this plane hides
            ax.step([t.latency_ms for t in line], [t.kd_loss for t in line], where="post", c=_COLORS["front"],
                    lw=1.4, alpha=0.8, zorder=3)  # fmt: skip
            ax.scatter([t.latency_ms for t in front], [t.kd_loss for t in front], s=46, c=_COLORS["front"],
                       label=f"Pareto front ({len(front)})", zorder=4, edgecolors="white", linewidths=0.6)  # fmt: skip
        bottom = blended_transform_factory(ax.transData, ax.transAxes)
        for state, marker in (("failed", "x"), ("filtered", "|")):
            rows = g[state]
            with_x = [t for t in rows if t.latency_ms is not None]
            plotted = [t for t in with_x if t.plottable]
            rug = [t for t in with_x if not t.plottable]
            label = f"{state} ({len(rows)})"
            if plotted:
                ax.scatter([t.latency_ms for t in plotted], [t.kd_loss for t in plotted], marker=marker, s=30,
                           c=_COLORS[state], label=label, zorder=2)  # fmt: skip
                label = "_"
            if rug:
                ax.scatter([t.latency_ms for t in rug], [0.02] * len(rug), marker=marker, s=30, c=_COLORS[state],
                           transform=bottom, label=label, zorder=2)  # fmt: skip
            elif rows and not plotted:  # nothing to place: keep the count in the legend
                ax.scatter([], [], marker=marker, c=_COLORS[state], label=label)

        top = blended_transform_factory(ax.transData, ax.transAxes)
        for b in sorted(data.budgets_ms):
            ax.axvline(b, color=_COLORS["budget"], ls="--", lw=1.1, zorder=1)
            ax.text(b, 0.985, f" {data.budget_label(b)}", transform=top, color=_COLORS["budget"], fontsize=8.5,
                    va="top", ha="left", rotation=90)  # fmt: skip
        if data.budgets_ms:
            ax.plot([], [], color=_COLORS["budget"], ls="--", label="latency budget")

        refs = [("teacher", data.teacher, "*", 180)] if data.teacher else []
        refs += [("baseline", b, "D", 60) for b in data.baselines]
        for kind, p, marker, size in refs:
            if p is None or p.latency_ms is None:
                continue
            if p.kd_loss is None:
                ax.axvline(p.latency_ms, color=_COLORS[kind], ls=":", lw=1.2)
                ax.text(p.latency_ms, 0.5, f" {p.name}", transform=top, color=_COLORS[kind], fontsize=8.5,
                        rotation=90, va="center")  # fmt: skip
                continue
            ax.scatter([p.latency_ms], [p.kd_loss], marker=marker, s=size, c=_COLORS[kind], zorder=5,
                       edgecolors="black", linewidths=0.6)  # fmt: skip
            right = kind == "teacher"  # the teacher is the slowest point: label it on its left
            ax.annotate(p.name, (p.latency_ms, p.kd_loss), textcoords="offset points", xytext=(-8 if right else 6, 6),
                        ha="right" if right else "left", fontsize=8.5, color=_COLORS[kind], zorder=6)  # fmt: skip
        if data.teacher and data.teacher.kd_loss is not None:
            ax.scatter([], [], marker="*", s=120, c=_COLORS["teacher"], edgecolors="black", label="teacher")
        if any(b.kd_loss is not None for b in data.baselines):
            ax.scatter([], [], marker="D", s=40, c=_COLORS["baseline"], edgecolors="black", label="baseline")

        for r in data.recommendations:
            if r.latency_ms is not None and r.kd_loss is not None:
                ax.scatter([r.latency_ms], [r.kd_loss], s=170, facecolors="none", edgecolors="black", lw=1.3,
                           zorder=6)  # fmt: skip
                ax.annotate(f"pick {r.budget_label}", (r.latency_ms, r.kd_loss), textcoords="offset points",
                            xytext=(7, -12), fontsize=8, zorder=7)  # fmt: skip

        rug_x = [
            t.latency_ms for st in ("failed", "filtered") for t in g[st] if t.latency_ms and not t.plottable
        ]
        if rug_x:  # ticks on a blended transform do not move the autoscaled limits
            lo, hi = ax.get_xlim()
            log = ax.get_xscale() == "log"
            ax.set_xlim(min(lo, min(rug_x) / 1.1 if log else min(rug_x) - 0.05 * (hi - lo)),
                        max(hi, max(rug_x) * 1.1 if log else max(rug_x) + 0.05 * (hi - lo)))  # fmt: skip
        ax.set_xlabel("latency on target (ms)" + (", log scale" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel("proxy KD loss vs teacher (lower is better)")
        ax.set_title(f"{data.title}: {len(data.trials)} trials")
        ax.grid(True, alpha=0.3, which="both")
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8.5, framealpha=0.9)
        return save_png(fig, path, dpi=dpi)
    finally:
        plt.close(fig)


def save_png(fig: Any, path: str | Path, *, dpi: int) -> Path:
    """Lay out a matplotlib figure and write it to `path` (parents made); the caller closes it."""
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def write_html(fig: Any, path: str | Path) -> Path:
    """A plotly figure as one self-contained HTML file (plotly.js inlined: works offline)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(p), include_plotlyjs=True, full_html=True, include_mathjax=False)
    return p


def _front_2d(front: list[TrialRow]) -> list[TrialRow]:
    """The points of `front` not dominated in the (latency, KD loss) plane, fastest first (for the step line)."""
    import numpy as np

    from kdnas.search.results import pareto_mask

    if not front:
        return []
    mask = pareto_mask(np.array([[t.latency_ms, t.kd_loss] for t in front], dtype=np.float64))
    return [t for t, m in zip(front, mask) if m]


def pareto_figure(data: ReportData) -> Any:
    """The interactive plotly figure (hover shows each trial's arch, loss, latency, params, reason)."""
    go = optional_import("plotly.graph_objects", purpose="the report's HTML plot")
    g = _groups(data)
    fig = go.Figure()

    def add(rows: list[TrialRow], name: str, color: str, **kw: Any) -> None:
        rows = [t for t in rows if t.plottable]
        if rows:
            fig.add_trace(go.Scatter(
                x=[t.latency_ms for t in rows], y=[t.kd_loss for t in rows], name=f"{name} ({len(rows)})",
                text=[_hover(t) for t in rows], hoverinfo="text", marker={"color": color, **kw.pop("marker", {})},
                **kw,
            ))  # fmt: skip

    add(g["trial"], "trial", _COLORS["trial"], mode="markers", marker={"size": 7, "opacity": 0.75})
    line = _front_2d(g["front"])
    add(line, "Pareto front", _COLORS["front"], mode="lines+markers", line={"shape": "hv"},
        marker={"size": 10})  # fmt: skip
    rest = [t for t in g["front"] if t not in line]  # on the front by params only
    add(
        rest,
        "Pareto front (by params)",
        _COLORS["front"],
        mode="markers",
        marker={"size": 10, "symbol": "diamond"},
    )
    for state, symbol in (("failed", "x"), ("filtered", "line-ns-open")):
        rows = [t for t in g[state] if t.latency_ms is not None]
        if rows:
            fig.add_trace(go.Scatter(
                x=[t.latency_ms for t in rows], y=[t.kd_loss if t.plottable else 0 for t in rows],
                name=f"{state} ({len(g[state])})", mode="markers", text=[_hover(t) for t in rows],
                hoverinfo="text", marker={"color": _COLORS[state], "symbol": symbol, "size": 9},
            ))  # fmt: skip
    for b in sorted(data.budgets_ms):
        fig.add_vline(x=b, line={"color": _COLORS["budget"], "dash": "dash"}, annotation_text=data.budget_label(b),
                      annotation_position="top")  # fmt: skip
    refs = [("teacher", data.teacher, "star", 16)] if data.teacher else []
    refs += [("baseline", b, "diamond", 11) for b in data.baselines]
    for kind, p, symbol, size in refs:
        if p is None or p.latency_ms is None:
            continue
        if p.kd_loss is None:
            fig.add_vline(
                x=p.latency_ms, line={"color": _COLORS[kind], "dash": "dot"}, annotation_text=p.name
            )
            continue
        fig.add_trace(go.Scatter(
            x=[p.latency_ms], y=[p.kd_loss], name=p.name, mode="markers+text", text=[p.name],
            textposition="top right", hovertext=f"{p.name}<br>{p.arch_id or ''}<br>{p.latency_ms:.3g} ms",
            hoverinfo="text", marker={"color": _COLORS[kind], "symbol": symbol, "size": size,
                                      "line": {"color": "black", "width": 1}},
        ))  # fmt: skip
    recs = [r for r in data.recommendations if r.latency_ms is not None and r.kd_loss is not None]
    if recs:
        fig.add_trace(go.Scatter(
            x=[r.latency_ms for r in recs], y=[r.kd_loss for r in recs], name="recommended", mode="markers+text",
            text=[f"pick {r.budget_label}" for r in recs], textposition="bottom right",
            hovertext=[f"{r.budget_label}: {r.arch_id}" for r in recs], hoverinfo="text",
            marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 2}},
        ))  # fmt: skip
    fig.update_layout(
        title=f"{data.title}: {len(data.trials)} trials",
        xaxis_title="latency on target (ms)",
        yaxis_title="proxy KD loss vs teacher (lower is better)",
        template="plotly_white",
        hovermode="closest",
    )
    if _use_log_x(data):
        fig.update_xaxes(type="log")
    return fig


def pareto_html(data: ReportData, path: str | Path) -> Path:
    """Write the interactive plot as one self-contained HTML file (plotly.js inlined: works offline)."""
    return write_html(pareto_figure(data), path)
