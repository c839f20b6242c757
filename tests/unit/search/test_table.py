"""Recorded tables: write/read round trip and strategy replay (on a synthetic table made here, never committed)."""

from __future__ import annotations

import numpy as np
import pytest

from kdnas.errors import SearchError
from kdnas.search.table import (
    TableEvaluator,
    kendall_tau_table,
    read_table,
    record_table,
    replay,
    write_table,
)
from kdnas.space.spaces import default_space


@pytest.fixture()
def table(minilm, fake, tmp_path):
    archs = default_space(minilm).sample_many(40, 0)
    rows = record_table(archs, fake, tokens=100, long_every=4)
    path = write_table(
        tmp_path / "t.csv", rows, {"teacher_latency_ms": fake.teacher_latency_ms, "synthetic": 1}
    )
    return read_table(path)


def test_table_round_trip(table, fake):
    assert len(table.rows) == 40
    assert table.teacher_latency_ms == pytest.approx(fake.teacher_latency_ms)
    assert sum(r["kd_loss_long"] is not None for r in table.rows.values()) == 10
    space = table.space()
    assert {a.arch_id for a in space.enumerate()} == set(table.rows)
    tau, n = kendall_tau_table(table)
    assert n == 10 and tau > 0.3  # the synthetic long proxy tracks the short one


def test_table_evaluator_refuses_unknown_archs(table, minilm):
    ev = TableEvaluator(table)
    outside = default_space(minilm).sample_many(1, 0, exclude=set(table.rows))[0]
    with pytest.raises(SearchError, match="not in the recorded table"):
        ev.evaluate(outside, fidelity="short", tokens=1)


@pytest.mark.parametrize("strategy", ["random", "kdnas", "tpe"])
def test_replay_gives_monotone_hypervolume(table, strategy):
    ref = (
        max(r["kd_loss_short"] for r in table.rows.values()),
        max(r["latency_ms"] for r in table.rows.values()),
    )
    curve = replay(table, strategy, seed=0, n_evals=8, reference=ref, episode_size=4, n_startup_trials=4)
    assert curve.shape == (8,)
    assert (np.diff(curve) >= -1e-12).all() and curve[-1] > 0


def test_missing_table_says_how_to_record(tmp_path):
    with pytest.raises(SearchError, match="--make-table"):
        read_table(tmp_path / "none.csv")


def test_table_header_says_which_loss(minilm, fake, tmp_path):
    archs = default_space(minilm).sample_many(40, 0)
    rows = record_table(archs, fake, tokens=100, long_every=4)
    tables = {
        pl: read_table(
            write_table(
                tmp_path / f"{pl}.csv",
                rows,
                {"teacher_latency_ms": fake.teacher_latency_ms, "proxy_loss": pl},
            )
        )
        for pl in ("full", "states")
    }
    legacy = read_table(
        write_table(tmp_path / "old.csv", rows, {"teacher_latency_ms": fake.teacher_latency_ms})
    )
    assert legacy.proxy_loss == "full"  # recorded before the key: the whole loss
    assert tables["states"].proxy_loss == "states"
    ref = (max(r["kd_loss_short"] for r in rows), max(r["latency_ms"] for r in rows))

    def curves(strategy: str) -> dict[str, np.ndarray]:
        return {
            pl: replay(t, strategy, seed=0, n_evals=16, reference=ref, episode_size=4, n_startup_trials=4)
            for pl, t in tables.items()
        }

    # the controller ranks by the KD-NAS reward, whose loss scale follows the header (4.4 for state losses);
    # random search reads no reward
    kdnas = curves("kdnas")
    assert not np.allclose(kdnas["full"], kdnas["states"])
    rand = curves("random")
    assert np.allclose(rand["full"], rand["states"])

    bad = write_table(tmp_path / "bad.csv", rows, {"teacher_latency_ms": 1.0, "proxy_loss": "hidden"})
    with pytest.raises(SearchError, match="proxy_loss='hidden'"):
        _ = read_table(bad).proxy_loss
