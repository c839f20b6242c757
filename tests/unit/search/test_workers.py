"""kdnas.search.workers on an SQLite RDB storage with heartbeats: stale trials completed or re-queued once, busy
ones left alone, the hardware pin, password redaction, the driver of a postgresql:// URL."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from kdnas.errors import SearchError
from kdnas.search.study import progress
from kdnas.search.workers import (
    Heartbeat,
    check_hardware,
    check_role,
    fail_stale,
    is_shared_url,
    open_shared_storage,
    redact,
    run_identity,
)

OBJ = ["kd_loss", "latency_ms"]


def _study(tmp_path: Path, max_retry: int = 1) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    store = open_shared_storage(
        f"sqlite:///{tmp_path / 's.db'}",
        heartbeat_interval=1,
        grace_period=2,
        max_retry=max_retry,
        objectives=OBJ,
    )
    return optuna.create_study(storage=store, study_name="s", directions=["minimize"] * 2), store


def _held(study: optuna.Study, beat: Heartbeat, layers: int, *, short: bool) -> optuna.Trial:
    t = study.ask()
    beat.hold(t._trial_id)
    t.suggest_int("num_layers", 1, 6)
    t.set_user_attr("arch_id", f"L{layers}")
    t.set_user_attr("claimed", True)
    if short:
        t.set_user_attr("evaluated", True)
        for k, v in (("kd_loss_short", 1.5), ("latency_ms", 3.0), ("params_m", 9.0)):
            t.set_user_attr(k, v)
    return t


def test_a_dead_workers_trials_are_completed_or_requeued_and_a_busy_ones_kept(tmp_path: Path) -> None:
    study, store = _study(tmp_path)
    dead = Heartbeat(store)
    study.enqueue_trial({"num_layers": 2})
    study.enqueue_trial({"num_layers": 3})
    _held(study, dead, 2, short=True)  # its short proxy finished before the worker died
    _held(study, dead, 3, short=False)  # died mid-distillation
    dead.close()  # the worker is gone: no more heartbeats
    live = Heartbeat(store)
    study.enqueue_trial({"num_layers": 4})
    busy = _held(study, live, 4, short=False)
    assert progress(study.get_trials()) == (0, 3)
    time.sleep(3.2)  # past the grace period for the dead worker; the live one keeps beating
    fail_stale(study)
    by_state: dict[TrialState, list[optuna.trial.FrozenTrial]] = {}
    for t in study.get_trials():
        by_state.setdefault(t.state, []).append(t)
    assert [t.number for t in by_state[TrialState.FAIL]] == [0, 1]
    (done,) = by_state[TrialState.COMPLETE]
    assert done.user_attrs["resumed"] and done.values == [1.5, 3.0] and done.params == {"num_layers": 2}
    (again,) = by_state[TrialState.WAITING]
    assert again.params == {"num_layers": 3} and again.user_attrs["requeued_from"] == 1
    assert "claimed" not in again.user_attrs
    assert [t.number for t in by_state[TrialState.RUNNING]] == [busy.number]
    assert progress(study.get_trials()) == (1, 1)  # the dead trial 0 counts once, by its copy
    # the re-queued trial dies again: max_retry 1 leaves it failed
    t = study.ask()
    assert t.params == {"num_layers": 3}
    t.set_user_attr("claimed", True)
    live.close()  # now the live worker dies too, holding `busy`
    store.record_heartbeat(t._trial_id)  # type: ignore[attr-defined]
    time.sleep(3.2)
    fail_stale(study)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [w.params for w in waiting] == [
        {"num_layers": 4}
    ]  # busy's first retry; trial 3's second is refused


def test_hardware_fingerprint_is_pinned(tmp_path: Path) -> None:
    study, _ = _study(tmp_path)
    check_hardware(study, "abc/torch", "db")
    check_hardware(study, "abc/torch", "db")
    with pytest.raises(SearchError, match=r"abc/torch.*xyz/torch"):
        check_hardware(study, "xyz/torch", "db")


def test_one_run_leads_a_shared_study(tmp_path: Path) -> None:
    study, _ = _study(tmp_path)
    a, b = run_identity(tmp_path / "a"), run_identity(tmp_path / "b")
    assert a.endswith(str((tmp_path / "a").resolve())) and ":" in a
    assert check_role(study, "join", b, "db") is None  # a helper may start before the leader
    assert check_role(study, "lead", a, "db") == a
    assert check_role(study, "lead", a, "db") == a  # the same run resumed (another pid) leads again
    assert check_role(study, "join", b, "db") == a
    with pytest.raises(SearchError, match=r"belongs to the run .*/a.*--join.*--take-over"):
        check_role(study, "lead", b, "db")
    assert check_role(study, "take-over", b, "db") == b
    assert check_role(study, "join", a, "db") == b


def test_redaction_and_sharing() -> None:
    assert redact("postgresql://u:p4ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://h/db") == "postgresql://h/db"
    assert redact(None) == "memory"
    assert is_shared_url("postgresql://u@h/db") and not is_shared_url("sqlite:///x.db")


def test_unreachable_server_names_the_url_without_its_password() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(SearchError) as e:
        open_shared_storage(
            "postgresql://u:s3cret@127.0.0.1:1/db",
            heartbeat_interval=1,
            grace_period=None,
            max_retry=1,
            objectives=OBJ,
        )
    assert "s3cret" not in str(e.value) and "u:***@127.0.0.1:1/db" in str(e.value)


def test_distribution_of_requeued_trials_is_kept(tmp_path: Path) -> None:
    study, store = _study(tmp_path, max_retry=3)
    beat = Heartbeat(store)
    t = study.ask()
    beat.hold(t._trial_id)
    t.suggest_int("num_layers", 1, 6)
    beat.close()
    time.sleep(3.2)
    fail_stale(study)
    (w,) = study.get_trials(states=(TrialState.WAITING,))
    assert w.distributions == {"num_layers": IntDistribution(1, 6)}
