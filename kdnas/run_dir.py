"""The layout of a `kdnas run` dir, in one place: every file name, stage markers, and the dir's lifecycle
(create with its config, check a resumed one, rewind the stages a config change reaches, free the scratch space
only a resume reads: `scratch`, `free`).

Readers (report, export, the Python API, resume) take names from here; no other module spells them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas.errors import ConfigError

if TYPE_CHECKING:
    from kdnas.config import RunConfig

CONFIG = "config.yaml"
"""The run's config (what a resume must match)."""
TEACHER = "teacher.json"
"""Inspect stage: teacher name, arch id, params."""
DATA = "data.json"
"""Data stage: split sizes and corpus statistics."""
LATENCY = "latency.json"
"""Latency stage: teacher latency, predictor, the baselines' side-by-side speed-ups."""
STUDY = "search.db"
"""The Optuna study (SQLite) when no shared storage is given."""
SEARCH = "search.json"
"""`SearchResult.write_json`: trials, Pareto front, the search's own recommendations."""
PLACEMENT = "placement.json"
"""Per budget: the candidates re-timed side by side with the teacher, and the choice."""
RECOMMENDATIONS = "recommendations.json"
"""The recommendations placed by side-by-side speed-ups (what distill and the report use)."""
SUMMARY = "summary.json"
"""Distill stage: the distilled students and baselines (name, model dir, arch, budget)."""
RETENTION = "retention.json"
"""Evaluate stage: `RetentionTable.write_json` (scores, retention, latency, fidelity per model)."""
RETENTION_MD = "retention.md"
MANUAL_BASELINES = "baselines.json"
"""Optional, written by a user (never by kdnas): [{name, latency_ms, kd_loss, params_m, arch_id}] of baselines
measured elsewhere, drawn in the report."""
VOCAB = "vocab.json"
"""The search space's vocabulary table (`kdnas.space.vocab.VocabTable`), when vocabulary is a dimension."""
STUDENTS = "students"
"""students/<name>/model (HF folder), result.json, checkpoints, train_log.jsonl."""
BASELINES = "baselines"
EVALUATE = "evaluate"
PEERS = "peers"
"""peers/<name>/: models made from the teacher without distillation to compare against (the static peer)."""
STATIC_PEER = "model2vec-static"
"""The static-embedding peer (`evaluate.static_peer`): its dir under peers/ and its row name in the tables."""
"""evaluate/<model>.json: per-model task reports."""
EXPORT = "export"
REPORT = "report"
TEACHER_CACHE = "teacher_cache"
STAGES = "stages"
"""stages/<stage>.json: a finished stage's marker with its summary and seconds."""
PREVIOUS = "previous"
"""previous/<config hash>/: what rerun stages had written before a config change."""

STAGE_NAMES = ("fetch", "inspect", "data", "latency", "search", "distill", "evaluate", "export", "report")
"""The stages in order (kdnas.pipeline.STAGES runs them)."""
STAGE_OUTPUTS = {
    "search": (STUDY, SEARCH, PLACEMENT, RECOMMENDATIONS),
    "distill": (STUDENTS, BASELINES, SUMMARY),
    "evaluate": (f"{EVALUATE}/*.json", RETENTION, RETENTION_MD),
}
"""What a stage writes that its rerun would otherwise reuse or mix with new results: moved to previous/<hash>/."""
RERUN_FROM = {"search": "search", "distill": "search", "evaluate": "evaluate", "export": "export"}
"""Config sections a resumed run may change, and the first stage that reads them: that stage and every later
one run again, the earlier ones (data, latency calibration, and for evaluate/export the search and the
distilled students) are kept. Teacher, corpus and target changes need a new run dir."""
RERUN_KEYS = {
    "search.space": "data",  # its `vocab` choices are resolved on the corpus there, calibrated on in latency
    "distill.full_tokens": "distill",  # the search only uses the proxy budget
    "distill.vocab_twins": "distill",
}
"""Keys of those sections whose first reader is another stage than their section's."""


def inside(root: Path, path: str | Path, what: str) -> Path:
    """`path` (relative to `root`, or absolute) resolved, refused unless it lies under `root`: a run dir's
    files name paths (summary.json's model dirs, student names that become export dirs) that a tampered or
    hand-edited file must not point elsewhere with (`../..`, absolute paths, symlinks out)."""
    base = Path(root).resolve()
    p = Path(path)
    full = (p if p.is_absolute() else base / p).resolve()
    if not full.is_relative_to(base):
        raise ConfigError(
            f"{what} {str(path)!r} resolves to {full}, outside {base}; a run dir's paths must stay inside it "
            "(fix or regenerate the file that names it)"
        )
    return full


def plain_name(name: str, what: str) -> str:
    """A name that becomes one directory (a student's export dir): no separators, not `.` or `..`."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"{what} {name!r} must be a plain name (no '/' or '..'): it names a directory")
    return name


def marker(run_dir: Path, stage: str) -> Path:
    """The file that says `stage` finished (with its summary)."""
    return run_dir / STAGES / f"{stage}.json"


def read_marker(run_dir: Path, stage: str) -> dict[str, Any] | None:
    """A finished stage's summary, or None when it has not finished."""
    p = marker(run_dir, stage)
    return json.loads(p.read_text())["summary"] if p.exists() else None


BASELINE_KEYS = ("evaluate.baselines", "evaluate.baseline_family", "search.baseline_budgets")
"""Keys that decide which hand-made baselines there are: with `search.baseline_budgets` the latency stage times
them and the search adds a budget at each one's latency, so a change reaches back to the latency stage."""


def _baseline_reader(key: str, old: RunConfig, new: RunConfig) -> str | None:
    if key not in BASELINE_KEYS:
        return None
    timed = any(c.evaluate.baselines and c.search.baseline_budgets for c in (old, new))
    return "latency" if timed else "distill"


def rerun_stage(old: RunConfig, new: RunConfig) -> str | None:
    """The earliest stage that a change from `old` to `new` invalidates, when every changed key is in a section
    of `RERUN_FROM`; None when some change reaches further back (the run dir cannot be reused)."""
    from kdnas import config as config_mod

    order = list(STAGE_NAMES)
    first = len(order)
    for key in config_mod.changed_keys(old, new):
        stage = _baseline_reader(key, old, new) or RERUN_KEYS.get(key) or RERUN_FROM.get(key.split(".", 1)[0])
        if stage not in order:
            return None
        first = min(first, order.index(stage))
    searched_again = first <= order.index("search")
    if searched_again and (old.search.storage or new.search.storage):
        return None  # a study outside the run dir cannot be moved aside
    return order[first] if first < len(order) else None


def prepare(cfg: RunConfig, run_dir: Path, *, resume: bool, say: Callable[[str], None] = print) -> None:
    """Create the run dir with its config, or check that a resumed dir was made by the same config.

    A resumed run (`resume`) whose config differs only in search, distillation, evaluation or export settings
    (`RERUN_FROM`) keeps the stages before the first one the change reaches and runs again from there; the
    earlier config is kept as config.<hash>.yaml and what the rerun stages had written under previous/<hash>/.
    """
    from kdnas import config as config_mod

    saved = run_dir / CONFIG
    if saved.exists():
        old = config_mod.load(str(saved))
        if old.hash() != cfg.hash():
            diffs = config_mod.diff(old, cfg)
            changes = "\n".join(f"  {d}" for d in diffs)
            stage = rerun_stage(old, cfg)
            if stage is None or not resume:
                hint = (
                    f" These changes only reach the {stage} stage: resume with them (kdnas run CONFIG --resume "
                    f"{run_dir}, or --resume {run_dir} with the same overrides) to keep the earlier stages and "
                    "run again from there."
                    if stage is not None
                    else ""
                )
                raise ConfigError(
                    f"{run_dir} was made by a different config; use another run dir (--run-dir DIR) or the "
                    f"same config.{hint} Differences (run dir -> now):\n{changes}"
                )
            rewind(run_dir, old, cfg, stage)
            say(f"{run_dir}: config changed ({'; '.join(diffs)}): running again from the {stage} stage")
        return
    if resume:
        raise ConfigError(f"{run_dir}: nothing to resume (no {CONFIG} there)")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, cfg)


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    """run_dir/config.yaml, replaced in one step (a kill leaves the old file or the new one)."""
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{CONFIG}.")
    with os.fdopen(fd, "w") as f:
        f.write(cfg.to_yaml())
    os.replace(tmp, run_dir / CONFIG)


def rewind(run_dir: Path, old: RunConfig, new: RunConfig, stage: str) -> None:
    """Forget the stages from `stage` on: their markers go, and what they wrote that a rerun would reuse
    (`STAGE_OUTPUTS`: the study, the students, per-model scores) moves to previous/<old config hash>/, except
    what the change cannot reach (`search_independent`: the hand-made baselines and their scores)."""
    order = list(STAGE_NAMES)
    tag = old.hash()
    keep = run_dir / PREVIOUS / tag
    stays = search_independent(run_dir, old, new, stage)
    for name in order[order.index(stage) :]:
        marker(run_dir, name).unlink(missing_ok=True)
        for pattern in STAGE_OUTPUTS.get(name, ()):
            for p in sorted(run_dir.glob(pattern)):
                if p in stays:
                    continue
                dest = keep / p.relative_to(run_dir)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():  # the same config rewound twice: the newer outputs win
                    shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
                os.replace(p, dest)
    shutil.copy2(run_dir / CONFIG, run_dir / f"config.{tag}.yaml")
    write_config(run_dir, new)  # last: a kill before it leaves the old config with fewer finished stages


def search_independent(run_dir: Path, old: RunConfig, new: RunConfig, stage: str) -> set[Path]:
    """What a rerun from `stage` would make again identically, so a rewind keeps it: after a change that only
    reaches the search (its own keys, not the distillation's nor the baselines'), the distilled hand-made
    baselines (their arch and training do not depend on the search), and when the evaluation is unchanged too,
    the scores of every model that is not a searched student (teacher, baselines, static peer)."""
    from kdnas import config as config_mod

    if stage != "search":
        return set()
    changed = config_mod.changed_keys(old, new)
    if any(k.startswith("distill.") or k in BASELINE_KEYS for k in changed):
        return set()
    out = {run_dir / BASELINES}
    if any(k.startswith("evaluate.") for k in changed):
        return out
    summary = run_dir / SUMMARY
    students = (
        {s["name"] for s in json.loads(summary.read_text()).get("students", [])}
        if summary.exists()
        else set()
    )
    for p in (run_dir / EVALUATE).glob("*.json"):
        if p.stem not in students and not (run_dir / STUDENTS / p.stem).exists():
            out.add(p)
    return out


# ------------------------------------------------------------------------------------------------ scratch space


@dataclass(frozen=True)
class Scratch:
    """A part of a run dir that only makes a resume or a rerun faster, never a result: what `kdnas clean`
    deletes, and `kdnas run` after its distill stage (unless `distill.keep_teacher_cache`)."""

    path: Path
    what: str
    bytes: int
    kept: str | None = None
    """Why it must stay (an unfinished stage still uses it); None: it may go."""


def size_text(n: int) -> str:
    """Bytes for people: `12.04 GiB`, `1.0 MiB`."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def disk_bytes(path: Path) -> int:
    """Disk space under `path` (allocated blocks: the teacher cache's memory-mapped files may be sparse)."""
    if path.is_symlink() or not path.exists():
        return 0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    total = 0
    for f in files:
        try:
            st = f.stat()
        except OSError:  # removed meanwhile
            continue
        total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


def scratch(run_dir: Path, *, previous: bool = False, force: bool = False) -> list[Scratch]:
    """What `run_dir` holds only to resume or rerun faster:

    - `teacher_cache/`: the teacher's outputs on the corpus (GBs). The search and distill stages read it; once
      the distill stage has finished only a rerun after a config change would (it then runs the teacher
      again). Kept while that stage is unfinished unless `force` (a resume then runs the teacher again too;
      never with a run still working in the dir).
    - the training checkpoints of finished distillations (students/, baselines/): the model dir is final.
      An unfinished one's checkpoints are its progress and always stay.
    - with `previous`: `previous/`, what stages rerun after a config change had written before it (results of
      the earlier config, kept for comparison).
    """
    from kdnas.distill.checkpoint import checkpoint_files

    run_dir = Path(run_dir)
    distilled = marker(run_dir, "distill").exists()
    out: list[Scratch] = []
    cache = run_dir / TEACHER_CACHE
    if cache.is_dir():
        kept = (
            None
            if distilled or force
            else "the distill stage has not finished and reads it (resume the run, or --force: a resume then "
            "runs the teacher again)"
        )
        out.append(
            Scratch(
                cache, "teacher outputs cached for the search and distill stages", disk_bytes(cache), kept
            )
        )
    for group in (STUDENTS, BASELINES):
        for d in sorted(p for p in (run_dir / group).glob("*") if p.is_dir()):
            files = checkpoint_files(d)
            if not files:
                continue
            done = distilled or ((d / "result.json").is_file() and (d / "model" / "config.json").is_file())
            why = None if done else "its distillation has not finished: they are its progress"
            for f in files:
                out.append(Scratch(f, f"training checkpoints of {group}/{d.name}", disk_bytes(f), why))
    if previous and (run_dir / PREVIOUS).is_dir():
        for d in sorted(p for p in (run_dir / PREVIOUS).iterdir() if p.is_dir()):
            out.append(Scratch(d, f"outputs of stages rerun after config {d.name} changed", disk_bytes(d)))
    return out


def free(items: list[Scratch]) -> int:
    """Delete every item that may go (`kept` None); returns the bytes freed."""
    freed = 0
    for item in items:
        if item.kept is not None:
            continue
        if item.path.is_dir() and not item.path.is_symlink():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        freed += item.bytes
    return freed
