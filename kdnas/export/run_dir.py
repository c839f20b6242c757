"""`kdnas export` on a run dir (every recommended student) or on one HF model dir.

Run-dir layout read here: summary.json `students` (name, model_dir, budget_label, budget_ms, kd_loss), each
student's HF folder (default students/<name>/model), config.yaml, teacher.json, search.json, retention.json.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas import run_dir as rd
from kdnas.errors import KdnasError
from kdnas.export.card import ModelCardInfo, TaskScore
from kdnas.export.exporter import ExportResult, export_model
from kdnas.export.onnx import ExportError

if TYPE_CHECKING:
    from kdnas.config import RunConfig
    from kdnas.latency.config import TargetConfig

log = logging.getLogger(__name__)

STUDENTS_DIR = rd.STUDENTS
"""Run-dir folder holding one folder per distilled student."""
STUDENT_MODEL = "model"
"""Inside `students/<name>/`: the student's HF folder (model + tokenizer + config)."""


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def is_run_dir(path: Path) -> bool:
    return (path / rd.CONFIG).is_file() or (path / STUDENTS_DIR).is_dir() or (path / rd.SUMMARY).is_file()


def load_model_dir(model_dir: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from an HF folder, with eager attention (needed for a faithful ONNX graph check)."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise ExportError(
            f"{model_dir}: no usable tokenizer ({e}); save the teacher's tokenizer into the folder "
            "(tokenizer.save_pretrained) so the export is usable on its own"
        ) from None
    try:
        model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    except (OSError, ValueError) as e:
        raise ExportError(f"{model_dir}: cannot load the model with transformers.AutoModel ({e})") from None
    return model, tok


def export_model_dir(
    model_dir: str | Path,
    out: str | Path,
    *,
    onnx: bool = True,
    int8: bool = True,
    overwrite: bool = False,
    card: ModelCardInfo | None = None,
    target: TargetConfig | None = None,
    measure: bool = True,
    beside_teacher: bool = True,
) -> ExportResult:
    """Export one HF model folder (e.g. students/<name>/model of a run) into `out` (`export_model`'s options)."""
    src = Path(model_dir)
    if Path(out).resolve() == src.resolve():
        raise ExportError(f"--out {out} is the model dir itself; choose another folder")
    model, tok = load_model_dir(src)
    return export_model(model, tok, out, onnx=onnx, int8=int8, overwrite=overwrite, card=card, target=target,
                        measure=measure, sentence_dir=src, beside_teacher=beside_teacher)  # fmt: skip


def recommended_students(run_dir: Path) -> list[dict[str, Any]]:
    """The students to export: summary.json `students`, or every students/*/model when there is no summary."""
    from kdnas.report.data import read_json

    summary = run_dir / rd.SUMMARY
    if summary.is_file():
        data = read_json(summary)
        students = data.get("students") if isinstance(data, dict) else None
        if not isinstance(students, list) or not all(isinstance(s, dict) and s.get("name") for s in students):
            raise ExportError(f'{summary}: expected {{"students": [{{"name": ..., ...}}, ...]}}')
        out = []
        for s in students:
            d = dict(s)
            name = rd.plain_name(str(s["name"]), f"{summary}: student name")
            given = s.get("model_dir", f"{STUDENTS_DIR}/{name}/{STUDENT_MODEL}")
            d["model_dir"] = str(rd.inside(run_dir, given, f"{summary}: model_dir of {name}"))
            out.append(d)
        return out
    found = sorted(p for p in (run_dir / STUDENTS_DIR).glob(f"*/{STUDENT_MODEL}") if is_model_dir(p))
    return [{"name": p.parent.name, "model_dir": str(p)} for p in found]


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    onnx: bool = True,
    int8: bool = True,
    overwrite: bool = False,
    target: TargetConfig | None = None,
    measure: bool = True,
) -> list[ExportResult]:
    """Export every recommended student of a run into `out/<name>`, each with a card from the run's results."""
    run = Path(run_dir)
    students = recommended_students(run)
    if not students:
        raise ExportError(
            f"{run}: no distilled students to export (no summary.json students and no "
            f"{STUDENTS_DIR}/*/{STUDENT_MODEL}); finish the run first (`kdnas run --resume {run}`)"
        )
    missing = [s["model_dir"] for s in students if not is_model_dir(Path(s["model_dir"]))]
    if missing:
        raise ExportError(f"{run}: student model dirs missing (no config.json): {', '.join(missing)}")
    cfg = _run_config(run)
    if target is None and cfg is not None:
        target = cfg.target
    dests = [Path(out) / s["name"] for s in students]
    clash = [str(d) for d in dests if d.exists()]
    if clash and not overwrite:  # refuse before exporting anything
        raise ExportError(f"{', '.join(clash)} already exist: choose another --out or pass --overwrite")
    results = []
    teachers = set()
    for s, dest in zip(students, dests):
        log.info("exporting %s -> %s", s["name"], dest)
        card = card_info_from_run(run, s, cfg)
        teachers.add(card.teacher)
        results.append(export_model_dir(s["model_dir"], dest, onnx=onnx, int8=int8, overwrite=overwrite,
                                        card=card, target=target, measure=measure,
                                        beside_teacher=False))  # fmt: skip
    teacher = next(iter(teachers))
    if measure and teacher and len(teachers) == 1:
        from kdnas.latency.config import TargetConfig

        _time_beside_teacher(results, teacher, target or TargetConfig())
    return results


def _time_beside_teacher(results: list[ExportResult], teacher: str, target: TargetConfig) -> None:
    """Every export's speed-up over the teacher, all timed in one side-by-side per backend (the teacher once per
    visit for all of them); the cards and export.json files get them."""
    from kdnas.export.exporter import set_speedups
    from kdnas.export.timing import measure_speedups_together

    backends = list(results[0].latency)
    log.info(
        "timing %d export(s) side by side with the teacher %s (%s)",
        len(results),
        teacher,
        ", ".join(backends),
    )
    try:
        together = measure_speedups_together(
            [Path(r.out_dir) for r in results], teacher, backends, target, rounds=target.compare_rounds
        )
    except KdnasError as e:  # the cards then say the teacher was not timed beside them
        msg = f"the teacher {teacher} could not be timed beside the exports: {e}"
        log.warning(msg)
        together = [{} for _ in results]
        for r in results:
            r.warnings.append(msg)
    for r, speedups in zip(results, together):
        set_speedups(r, speedups)


def _run_config(run: Path) -> RunConfig | None:
    from kdnas import config as config_mod

    if not (run / rd.CONFIG).is_file():
        return None
    return config_mod.load(str(run / rd.CONFIG))


def card_info_from_run(run: Path, student: dict[str, Any], cfg: RunConfig | None) -> ModelCardInfo:
    """Card facts for one student from the run's files (every file optional except the student itself)."""
    from kdnas.report.data import read_json

    info = ModelCardInfo(name=student["name"], budget_ms=student.get("budget_ms"),
                         proxy_kd_loss=student.get("kd_loss"), run_name=run.resolve().name)  # fmt: skip
    if cfg is not None:
        info.teacher = cfg.teacher.name
        info.config_hash = cfg.hash()
        info.seed = cfg.seed
        d = cfg.to_dict()
        info.distill_settings = d.get("distill", {})
        info.search_settings = d.get("search", {})
        # zoo names (a user's own files are named by their file name)
        info.datasets = [Path(str(s)).name for s in cfg.corpus.sources] + list(cfg.evaluate.tasks)
    if (run / rd.TEACHER).is_file():
        info.teacher = read_json(run / rd.TEACHER).get("teacher", info.teacher)
    if info.teacher:
        info.base_model, lic = _teacher_hub_id(info.teacher)
        if lic:
            info.license = lic
    result_json = Path(student["model_dir"]).parent / "result.json"
    if result_json.is_file():  # written by the pipeline's distill stage next to the model
        vocab = read_json(result_json).get("vocab")
        if isinstance(vocab, dict):
            info.vocab = vocab
    search_path = run / rd.SEARCH
    if search_path.is_file():
        t_lat = read_json(search_path).get("teacher_latency_ms")
        if isinstance(t_lat, int | float):
            info.teacher_latency_ms[cfg.target.backend if cfg else "torch"] = float(t_lat)
    ret_path = run / rd.RETENTION
    if ret_path.is_file():
        table = read_json(ret_path)
        rows = {r.get("model"): r for r in table.get("rows", [])}
        mine, teacher = rows.get(student["name"]), rows.get(table.get("teacher"))
        if mine and mine.get("fidelity"):
            info.fidelity = dict(mine["fidelity"])
        peer = rows.get(rd.STATIC_PEER)
        if info.fidelity and peer and peer.get("fidelity"):
            info.peer_fidelity = {**peer["fidelity"], "speedup": peer.get("speedup")}
        if mine and teacher:
            for task, score in mine.get("scores", {}).items():
                if task in teacher.get("scores", {}):
                    info.scores.append(TaskScore(task, table.get("metrics", {}).get(task, "score"), score,
                                                 teacher["scores"][task], mine.get("retention", {}).get(task),
                                                 zero_shot=task in (table.get("zero_shot") or [])))  # fmt: skip
    return info


def _teacher_hub_id(teacher: str) -> tuple[str | None, str | None]:
    """(hub id, license) of a teacher: a hub id is itself; a zoo teacher may record one in its meta."""
    if "/" in teacher and not Path(teacher).exists():
        return teacher, None
    try:
        from kdnas import zoo

        asset = zoo.ASSETS.get(teacher)
    except Exception:  # the zoo is optional for a card
        return None, None
    if asset is None:
        return None, None
    lic = getattr(asset, "license", None)
    return asset.meta.get("hub_id"), lic.lower() if isinstance(lic, str) else None


def export(
    source: str | Path,
    out: str | Path,
    *,
    onnx: bool = True,
    int8: bool = True,
    overwrite: bool = False,
    target: TargetConfig | None = None,
    measure: bool = True,
) -> list[ExportResult]:
    """Export a `kdnas run` dir (every recommended student into `out/<name>`, the run's target) or one HF model
    folder (into `out`): what `kdnas export SOURCE --out OUT` does."""
    from kdnas.export.onnx import ExportError

    src = Path(source)
    if is_model_dir(src):
        return [
            export_model_dir(
                src, out, onnx=onnx, int8=int8, overwrite=overwrite, target=target, measure=measure
            )
        ]
    if is_run_dir(src):
        return export_run(src, out, onnx=onnx, int8=int8, overwrite=overwrite, target=target, measure=measure)
    raise ExportError(
        f"{src}: neither an HF model folder (config.json) nor a run dir (config.yaml, students/); pass the dir "
        "`kdnas run` wrote or a folder saved with save_pretrained"
    )
