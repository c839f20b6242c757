"""Several `kdnas search --fake` workers on one PostgreSQL study, as real processes: started together on a fresh
database, one SIGKILLed mid-trial, a worker on other hardware refused.

Needs a PostgreSQL server: `KDNAS_TEST_POSTGRES=postgresql://user@127.0.0.1:PORT/postgres` (`.ci/run` installs
PostgreSQL from apt and starts one on loopback). Each test creates its own database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SERVER = os.environ.get("KDNAS_TEST_POSTGRES")
N_TRIALS = 12


@pytest.fixture
def pg_url() -> str:
    if not SERVER:
        pytest.skip("KDNAS_TEST_POSTGRES is not set (.ci/run starts PostgreSQL and sets it)")
    psycopg = pytest.importorskip("psycopg")
    name = f"kdnas_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base = SERVER.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _worker(url: str, run_dir: Path, *extra: str, seconds: float = 0.6) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "kdnas", "search", "smoke", "--fake", "--fake-seconds", str(seconds),
           "--storage", url, "--study-name", "shared", "--run-dir", str(run_dir), "--quiet",
           "--search.n_trials", str(N_TRIALS), "--search.heartbeat_interval", "1", "--search.grace_period", "3",
           *extra]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _trials(url: str):
    import optuna

    return optuna.load_study(
        study_name="shared", storage=url.replace("postgresql://", "postgresql+psycopg://")
    ).trials


def _distilled(trials) -> list:
    """The trials that cost a distillation, a dead worker's trial counted once (by its copy)."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    out = []
    for t in trials:
        complete = t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs
        failed = t.state.name == "FAIL" and t.user_attrs.get("evaluated")
        if t.number not in retried and (complete or failed):
            out.append(t)
    return out


def test_three_workers_one_killed_mid_trial(pg_url: str, tmp_path: Path) -> None:
    workers = [_worker(pg_url, tmp_path / f"w{i}") for i in range(3)]  # together: the schema-creation race
    deadline = time.monotonic() + 60
    victim = workers[0]
    while time.monotonic() < deadline:  # kill worker 0 while it holds a claimed, unfinished trial
        running = [t for t in _safe_trials(pg_url) if t.state.name == "RUNNING" and t.user_attrs.get("claimed")
                   and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]  # fmt: skip
        if running:
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.1)
    else:
        pytest.fail("worker 0 never held a trial")
    victim.wait(10)
    for w in workers[1:]:
        out, _ = w.communicate(timeout=240)
        assert w.returncode == 0, out
    trials = _trials(pg_url)
    distilled = _distilled(trials)
    assert len(distilled) == N_TRIALS, [(t.number, t.state.name, dict(t.user_attrs)) for t in trials]
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    arch_ids = Counter(t.user_attrs["arch_id"] for t in distilled)
    assert max(arch_ids.values()) == 1, arch_ids  # no arch distilled twice
    # the killed worker's trial was completed from its short proxy or re-queued and run by another worker
    recovered = [t for t in trials if t.system_attrs.get("retry_history")]
    assert recovered, "the dead worker's trial was neither completed nor re-queued"
    workers_seen = {t.user_attrs.get("worker", "").rsplit(":", 1)[-1] for t in distilled}
    assert len(workers_seen - {""}) >= 2


def _safe_trials(url: str) -> list:
    try:
        return _trials(url)
    except Exception:  # the study does not exist yet
        return []


def test_a_worker_on_other_hardware_is_refused(pg_url: str, tmp_path: Path) -> None:
    import optuna

    w = _worker(pg_url, tmp_path / "w", seconds=0.0)
    out, _ = w.communicate(timeout=120)
    assert w.returncode == 0, out
    study = optuna.load_study(
        study_name="shared", storage=pg_url.replace("postgresql://", "postgresql+psycopg://")
    )
    mine = study.user_attrs["hardware_fingerprint"]
    study.set_user_attr("hardware_fingerprint", "fake:0123456789ab/torch")
    w = _worker(pg_url, tmp_path / "w2", seconds=0.0)
    out, _ = w.communicate(timeout=120)
    assert w.returncode != 0
    assert "0123456789ab" in out and mine.split(":", 1)[1] in out, out
    assert "different machines must not mix" in out


def test_storage_errors_hide_the_password(tmp_path: Path) -> None:
    w = _worker("postgresql://kdnas:s3cret-pw@127.0.0.1:1/nothing", tmp_path / "w", seconds=0.0)
    out, _ = w.communicate(timeout=120)
    assert w.returncode != 0
    assert "s3cret-pw" not in out and "kdnas:***@127.0.0.1" in out, out


def test_kdnas_run_on_a_shared_study_distils_once(pg_url: str, tmp_path: Path) -> None:
    """`kdnas run` on two machines (here two processes): the one that started the study runs every stage, the
    `--join`ed one helps with the search, says who runs the rest and stops; the study has the requested count."""
    import json

    common = ["--search.storage", pg_url, "--search.n_trials", "6", "--search.heartbeat_interval", "1",
              "--search.grace_period", "5", "--evaluate.baselines", "false", "--export.onnx", "false",
              "--export.int8", "false", "--target.max_time_s", "0.5",
              # two runs share 2 cores here: timings are noisy, and this test is about roles, not budgets
              "--target.speedups", "[1.5]"]  # fmt: skip
    lead = subprocess.Popen([sys.executable, "-m", "kdnas", "run", "smoke", "--run-dir", str(tmp_path / "lead"),
                             *common], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    helper = subprocess.run([sys.executable, "-m", "kdnas", "run", "smoke", "--run-dir", str(tmp_path / "help"),
                             "--join", *common], capture_output=True, text=True, timeout=900)  # fmt: skip
    out, _ = lead.communicate(timeout=900)
    assert lead.returncode == 0, out[-3000:]
    assert helper.returncode == 0, helper.stderr[-3000:] + helper.stdout[-3000:]
    leader = f"{tmp_path / 'lead'}"
    assert (
        "search complete" in helper.stdout
        and leader in helper.stdout
        and "This worker stops here" in helper.stdout
    )
    assert (tmp_path / "lead" / "stages" / "report.json").exists()
    assert (tmp_path / "help" / "stages" / "search.json").exists()
    assert (
        not (tmp_path / "help" / "stages" / "distill.json").exists()
        and not (tmp_path / "help" / "students").exists()
    )
    # neither keeps its teacher cache: the worker stops after its search, the leader is past its distill stage
    assert not (tmp_path / "help" / "teacher_cache").exists() and "freed" in helper.stdout
    assert not (tmp_path / "lead" / "teacher_cache").exists()
    assert len(_distilled(_trials_of(pg_url, "search-kdnas"))) == 6
    summary = json.loads((tmp_path / "lead" / "summary.json").read_text())
    assert summary["students"]
    # a second leader is refused and told how to join
    other = subprocess.run([sys.executable, "-m", "kdnas", "run", "smoke", "--run-dir", str(tmp_path / "other"),
                            *common], capture_output=True, text=True, timeout=900)  # fmt: skip
    assert other.returncode != 0 and "--join" in other.stderr + other.stdout


def _trials_of(url: str, study: str):  # type: ignore[no-untyped-def]
    import optuna

    return optuna.load_study(
        study_name=study, storage=url.replace("postgresql://", "postgresql+psycopg://")
    ).trials
