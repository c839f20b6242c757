"""Recorded search tables: the measured proxy KD loss and latency of a fixed sample of archs, written once with
the real evaluator and replayed to compare strategies cheaply (`benchmarks/search.py`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdnas.errors import SearchError
from kdnas.search.candidate import CandidateEvaluator, CandidateResult, Fidelity
from kdnas.space.arch import Arch
from kdnas.space.space import Dimension, SearchSpace

ARCH_FIELDS = ("num_layers", "hidden_size", "num_heads", "ffn_size", "activation")
COLUMNS = ("arch_id", *ARCH_FIELDS, "kd_loss_short", "kd_loss_long", "latency_ms", "params_m")


@dataclass
class Table:
    """Rows keyed by arch id, and what they were measured with (the `# key=value` header line)."""

    rows: dict[str, dict[str, Any]]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def archs(self) -> list[Arch]:
        return [Arch.from_dict({k: r[k] for k in ARCH_FIELDS}) for r in self.rows.values()]

    @property
    def teacher_latency_ms(self) -> float:
        if "teacher_latency_ms" not in self.meta:
            raise SearchError("the table header has no teacher_latency_ms; re-record it with --make-table")
        return float(self.meta["teacher_latency_ms"])

    @property
    def proxy_loss(self) -> str:
        """Which held-out loss the table's `kd_loss_*` columns hold (`search.proxy_loss`): its header's
        `proxy_loss`, else `full` (tables recorded before the key existed hold the whole loss)."""
        value = self.meta.get("proxy_loss", "full")
        if value not in ("states", "full"):
            raise SearchError(f"the table header's proxy_loss={value!r} is not states or full; re-record it")
        return value

    def space(self) -> SearchSpace:
        """The smallest head_dim/ffn_ratio space that holds every arch of the table, restricted to them."""
        archs = self.archs
        dims = [
            Dimension("num_layers", tuple(sorted({a.num_layers for a in archs}))),
            Dimension("hidden_size", tuple(sorted({a.hidden_size for a in archs}))),
            Dimension("head_dim", tuple(sorted({a.hidden_size // a.num_heads for a in archs}))),
            Dimension("ffn_ratio", tuple(sorted({_num(a.ffn_size / a.hidden_size) for a in archs}))),
            Dimension("activation", tuple(sorted({a.activation for a in archs}))),
        ]
        return SearchSpace(dims, name="table").restricted_to(archs)


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else round(x, 6)


def record_table(
    archs: Sequence[Arch],
    evaluator: CandidateEvaluator,
    *,
    tokens: int,
    long_factor: float = 4.0,
    long_every: int = 4,
    progress: Callable[[int, Arch], None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every arch at the short fidelity and every `long_every`-th also at the long one.

    A failing arch is recorded with empty losses (so the sample stays fixed and the failure visible).
    """
    rows = []
    for i, arch in enumerate(archs):
        if progress:
            progress(i, arch)
        row: dict[str, Any] = {"arch_id": arch.arch_id, **{k: getattr(arch, k) for k in ARCH_FIELDS}}
        short = _try(evaluator, arch, "short", tokens)
        row.update(
            kd_loss_short=short.kd_loss if short else None,
            latency_ms=short.latency_ms if short else None,
            params_m=short.params_m if short else None,
            kd_loss_long=None,
        )
        if short and long_every > 0 and i % long_every == 0:
            long = _try(evaluator, arch, "long", round(tokens * long_factor))
            row["kd_loss_long"] = long.kd_loss if long else None
        rows.append(row)
    return rows


def _try(
    evaluator: CandidateEvaluator, arch: Arch, fidelity: Fidelity, tokens: int
) -> CandidateResult | None:
    try:
        res = evaluator.evaluate(arch, fidelity=fidelity, tokens=tokens)
    except Exception as e:  # a failing arch stays in the table with empty losses
        print(f"  {arch.arch_id} ({fidelity}) failed: {type(e).__name__}: {e}")
        return None
    return res if math.isfinite(res.kd_loss) else None


def write_table(path: str | Path, rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        f.write("# " + " ".join(f"{k}={v}" for k, v in meta.items()) + "\n")
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS})
    return path


def read_table(path: str | Path) -> Table:
    """Read a recorded table (rows without a short loss are dropped: those archs failed when recorded)."""
    path = Path(path)
    if not path.is_file():
        raise SearchError(
            f"{path}: no recorded search table; record one with `python benchmarks/search.py --make-table`"
        )
    lines = path.read_text().splitlines()
    meta: dict[str, str] = {}
    while lines and lines[0].startswith("#"):
        for tok in lines.pop(0)[1:].split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                meta[k] = v
    rows: dict[str, dict[str, Any]] = {}
    for r in csv.DictReader(lines):
        if not r.get("kd_loss_short"):
            continue
        row: dict[str, Any] = {"arch_id": r["arch_id"], "activation": r["activation"]}
        for k in ("num_layers", "hidden_size", "num_heads", "ffn_size"):
            row[k] = int(r[k])
        for k in ("kd_loss_short", "kd_loss_long", "latency_ms", "params_m"):
            row[k] = float(r[k]) if r.get(k) else None
        rows[row["arch_id"]] = row
    if not rows:
        raise SearchError(f"{path}: the table has no usable rows")
    return Table(rows, meta)


class TableEvaluator:
    """A `CandidateEvaluator` that looks results up in a recorded table (for replaying strategies)."""

    def __init__(self, table: Table):
        self.table = table
        self.calls: list[str] = []

    def evaluate(self, arch: Arch, *, fidelity: Fidelity, tokens: int) -> CandidateResult:
        row = self.table.rows.get(arch.arch_id)
        if row is None:
            raise SearchError(
                f"{arch.arch_id} is not in the recorded table (restrict the space to the table)"
            )
        self.calls.append(arch.arch_id)
        loss = row["kd_loss_long"] if fidelity == "long" else row["kd_loss_short"]
        if loss is None:
            raise SearchError(f"{arch.arch_id} has no {fidelity} proxy loss in the table")
        return CandidateResult(kd_loss=loss, latency_ms=row["latency_ms"], params_m=row["params_m"] or 0.0)


def kendall_tau_table(table: Table) -> tuple[float | None, int]:
    """Kendall tau between short and long proxy losses over the table rows that have both."""
    from scipy.stats import kendalltau

    pairs = [
        (r["kd_loss_short"], r["kd_loss_long"]) for r in table.rows.values() if r["kd_loss_long"] is not None
    ]
    if len(pairs) < 3:
        return None, len(pairs)
    return float(kendalltau(*zip(*pairs)).statistic), len(pairs)


def replay(
    table: Table, strategy: str, *, seed: int, n_evals: int, reference: tuple[float, float], **search_kw: Any
) -> np.ndarray:
    """Run `strategy` against the table; hypervolume after each of `n_evals` distilled candidates, shape [n_evals].

    No multi-fidelity promotion (the table's long losses are for the Kendall tau only). If the strategy stops
    early (the table is exhausted), the curve stays flat at its last value.
    """
    import optuna

    from kdnas.search.config import SearchConfig
    from kdnas.search.results import TrialRecord, hypervolume_2d
    from kdnas.search.study import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pts: list[tuple[float, float]] = []
    curve: list[float] = []

    def on_trial(r: TrialRecord) -> None:
        if r.state == "complete" and r.kd_loss_short is not None and r.latency_ms is not None:
            pts.append((r.kd_loss_short, r.latency_ms))
        if r.state in ("complete", "failed"):
            curve.append(hypervolume_2d(np.array(pts), reference) if pts else 0.0)

    # the reward reads the table's losses as the search that recorded them would (its `search.proxy_loss` sets
    # the loss scale of the KD-NAS reward)
    cfg = SearchConfig(
        strategy=strategy,
        n_trials=n_evals,
        promote_fraction=0.0,
        **{"proxy_loss": table.proxy_loss, **search_kw},
    )
    evaluator = TableEvaluator(table)
    run_search(
        table.space(),
        evaluator,
        cfg,
        tokens=1,
        teacher_latency_ms=table.teacher_latency_ms,
        seed=seed,
        callback=on_trial,
    )
    out = np.full(n_evals, curve[-1] if curve else 0.0)
    out[: len(curve)] = curve[:n_evals]
    return out
