"""The last stages: export the recommended students, write the report."""

from __future__ import annotations

from kdnas import run_dir as rd
from kdnas.config import ExportConfig
from kdnas.latency.config import TargetConfig
from kdnas.stages.context import RunContext
from kdnas.stages.results import ExportResult, ReportResult


def export(ctx: RunContext, *, export: ExportConfig, target: TargetConfig) -> ExportResult:
    """Export every recommended student: HF folder, ONNX fp32 and int8 (checked and timed), model card."""
    from kdnas.export.run_dir import export_run

    results = export_run(
        ctx.run_dir,
        ctx.run_dir / rd.EXPORT,
        onnx=export.onnx,
        int8=export.int8,
        overwrite=True,
        target=target,
    )
    return ExportResult([str(getattr(r, "out_dir", r)) for r in results])


def report(ctx: RunContext) -> ReportResult:
    """Pareto plots (PNG, HTML), trials CSV and a Markdown summary into run_dir/report."""
    from kdnas.report import load_report_data, print_summary, write_report

    data = load_report_data(ctx.run_dir)
    files = write_report(data, ctx.run_dir / rd.REPORT)
    if ctx.console is not None:
        print_summary(data, console=ctx.console)
    return ReportResult({k: str(v) for k, v in files.items()})
