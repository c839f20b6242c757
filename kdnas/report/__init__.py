"""Reports of a run: Pareto plot (PNG and offline HTML), trials CSV, Markdown summary, terminal summary.

`load_report_data(run_dir)` reads a run dir; `write_report(data, out_dir)` writes every file.
"""

from __future__ import annotations

from pathlib import Path

from kdnas.report.data import (
    BudgetCheck,
    RecommendationRow,
    RefPoint,
    ReportData,
    ReportError,
    RetentionEntry,
    TrialRow,
    load_report_data,
)
from kdnas.report.plots import pareto_html, pareto_png
from kdnas.report.suite_plot import suite_html, suite_png
from kdnas.report.tables import summary_markdown, trials_csv
from kdnas.report.terminal import print_summary

REPORT_FILES = {"plot": "pareto.png", "interactive plot": "pareto.html", "trials": "trials.csv",
                "summary": "summary.md", "suite plot": "suite.png", "interactive suite plot": "suite.html"}  # fmt: skip
"""Role -> file name; the two suite plots only once the evaluate stage has timed its models."""


def write_report(data: ReportData, out_dir: str | Path) -> dict[str, Path]:
    """Write pareto.png, pareto.html, trials.csv, summary.md and (after evaluation) suite.png and suite.html into
    `out_dir`; return role -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "plot": pareto_png(data, out / REPORT_FILES["plot"]),
        "interactive plot": pareto_html(data, out / REPORT_FILES["interactive plot"]),
        "trials": trials_csv(data, out / REPORT_FILES["trials"]),
    }
    for role, draw in (("suite plot", suite_png), ("interactive suite plot", suite_html)):
        drawn = draw(data, out / REPORT_FILES[role])
        if drawn is not None:
            paths[role] = drawn
    md = summary_markdown(data, files={k: v.name for k, v in paths.items()})
    figures = f"![Pareto plot]({REPORT_FILES['plot']})\n"
    if "suite plot" in paths:
        figures += f"\n![Suite score against speed-up]({REPORT_FILES['suite plot']})\n"
    md = md.replace(f"# {data.title}\n", f"# {data.title}\n\n{figures}", 1)
    summary = out / REPORT_FILES["summary"]
    summary.write_text(md, encoding="utf-8")
    paths["summary"] = summary
    return paths


__all__ = [
    "REPORT_FILES",
    "BudgetCheck",
    "RecommendationRow",
    "RefPoint",
    "ReportData",
    "ReportError",
    "RetentionEntry",
    "TrialRow",
    "load_report_data",
    "pareto_html",
    "pareto_png",
    "print_summary",
    "suite_html",
    "suite_png",
    "summary_markdown",
    "trials_csv",
    "write_report",
]
