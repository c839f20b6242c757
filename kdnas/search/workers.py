"""Several search workers on one study: the shared storage, heartbeats, dead workers' trials, the hardware check.

Any number of processes (on one machine or many) may run `run_search` on one study in a database server's
Optuna RDB storage (PostgreSQL, MySQL; an SQLite study keeps one worker at a time). What keeps them apart, as Optuna's own
`study.optimize` does with `heartbeat_interval`:

- every worker records a heartbeat for each trial it holds RUNNING (a round's trials stay RUNNING until the
  round's long proxies are done), from a background thread (`Heartbeat`);
- before each proposal a worker fails the trials whose heartbeat is older than the grace period
  (`optuna.storages.fail_stale_trials`); the storage's stale-trial callback (`StaleTrialCallback`) completes a
  dead worker's trial from its recorded short proxy, or re-queues it (WAITING, taken by the next `ask`) at most
  `max_retry` times, so no trial is lost and none is distilled twice;
- the study records the target's hardware fingerprint; a worker on other hardware refuses (latencies measured
  on different machines must never be compared).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from kdnas import run_dir as rd
from kdnas.errors import SearchError

if TYPE_CHECKING:
    from kdnas.search.config import SearchConfig

log = logging.getLogger(__name__)
HARDWARE_ATTR = "hardware_fingerprint"
LEADER_ATTR = "kdnas_leader"
"""`kdnas run` on a shared study: the run (host and run dir) that runs the stages after the search."""
SHORT_KEYS = ("kd_loss_short", "latency_ms", "params_m")


def redact(url: str | None) -> str:
    """`url` with its password replaced by *** (for messages, logs and search.json)."""
    if url is None:
        return "memory"
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna warns that heartbeats are meant for Study.optimize and that they are experimental; kdnas records
    them itself around ask/tell, on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed", category=UserWarning)
        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        yield


def is_shared_url(url: str) -> bool:
    """A server database several workers can share (PostgreSQL, MySQL, ...); SQLite files are one worker's."""
    return "://" in url and not url.startswith("sqlite")


def _with_driver(url: str) -> str:
    """`postgresql://` names no driver: SQLAlchemy 2.1 picks psycopg 3 (what the `[postgres]` extra installs),
    2.0 psycopg2. Name the one that is installed, so either works."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + url[len("postgresql://") :]
    return url


def _driver_hint(url: str, err: BaseException) -> str:
    if url.startswith("postgresql") and isinstance(err, ModuleNotFoundError | ImportError):
        return ' (the PostgreSQL driver is missing: pip install "kdnas[postgres]", which installs psycopg 3)'
    return ""


def open_shared_storage(
    url: str, *, heartbeat_interval: int, grace_period: int | None, max_retry: int, objectives: list[str]
) -> optuna.storages.BaseStorage:
    """An RDBStorage for `url` with heartbeats, retried while other workers create the schema at the same time.

    Workers started together on a fresh database race to create Optuna's tables and enum types (PostgreSQL:
    `CREATE TYPE studydirection ... already exists`); the loser retries and finds the schema in place.
    """
    url = _with_driver(url)
    kw: dict[str, Any] = {}
    if heartbeat_interval > 0:
        kw = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period or 3 * heartbeat_interval,
            "heartbeat_stale_trial_callback": StaleTrialCallback(max_retry, objectives),
        }
    last: BaseException | None = None
    for attempt in range(6):
        try:
            with quiet_optuna():
                return optuna.storages.RDBStorage(url, **kw)
        except Exception as e:  # sqlalchemy / driver errors differ by backend
            last = e
            text = str(e).lower()
            if not any(s in text for s in ("already exists", "duplicate key", "unique constraint")):
                break
            time.sleep(0.2 * (attempt + 1))  # another worker is creating the schema
    assert last is not None
    raise SearchError(
        f"cannot open the search storage {redact(url)}: {type(last).__name__}: {redact(str(last))}"
        f"{_driver_hint(url, last)}. Use an Optuna storage URL such as postgresql://user:pass@host/db "
        "(the database must exist) or sqlite:///runs/NAME/search.db"
    ) from None


class StaleTrialCallback:
    """A dead worker's trial (heartbeat stale, already set to FAIL by Optuna): completed from its recorded
    short proxy when it has one, else re-queued with its params and attributes, at most `max_retry` times."""

    def __init__(self, max_retry: int, objectives: list[str]):
        self.max_retry, self.objectives = max_retry, list(objectives)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from kdnas.search.objectives import objective_values

        sys_attrs = dict(trial.system_attrs)
        history = [*sys_attrs.get("retry_history", []), trial.number]
        sys_attrs.update(failed_trial=history[0], retry_history=history)
        user = {k: v for k, v in trial.user_attrs.items() if k != "worker"}
        a = trial.user_attrs
        if trial.params and all(k in a for k in SHORT_KEYS):
            values = objective_values(
                self.objectives,
                kd_loss=a["kd_loss_short"],
                latency_ms=a["latency_ms"],
                params_m=a["params_m"],
            )
            study.add_trial(
                optuna.create_trial(
                    state=TrialState.COMPLETE,
                    values=values,
                    params=trial.params,
                    distributions=trial.distributions,
                    user_attrs={**user, "resumed": True},
                    system_attrs=sys_attrs,
                )
            )
            log.warning("trial %d (%s) of a dead worker completed from its short proxy", trial.number,
                        a.get("arch_id"))  # fmt: skip
            return
        if not trial.params or len(history) > self.max_retry:
            log.warning("trial %d (%s) of a dead worker left failed (retried %d times)", trial.number,
                        a.get("arch_id"), len(history) - 1)  # fmt: skip
            return
        user = {k: v for k, v in user.items() if k not in ("evaluated", "claimed")}
        study.add_trial(
            optuna.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={**user, "requeued_from": trial.number},
                system_attrs=sys_attrs,
            )
        )
        log.warning("trial %d (%s) of a dead worker re-queued", trial.number, a.get("arch_id"))


def heartbeat_enabled(storage: optuna.storages.BaseStorage) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return bool(is_heartbeat_enabled(storage))


class Heartbeat:
    """Records a heartbeat for every trial this worker holds RUNNING, every `interval` seconds, from a daemon
    thread (nothing when the storage has no heartbeats). `hold(trial_id)` / `release(trial_id)`."""

    def __init__(self, storage: optuna.storages.BaseStorage):
        self.storage = storage
        self.enabled = heartbeat_enabled(storage)
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.enabled:
            self.interval = float(storage.get_heartbeat_interval())  # type: ignore[attr-defined]
            self._thread = threading.Thread(target=self._loop, name="kdnas-heartbeat", daemon=True)
            self._thread.start()

    def hold(self, trial_id: int) -> None:
        if self.enabled:
            with self._lock:
                self._held.add(trial_id)
            self.storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]

    def release(self, trial_id: int) -> None:
        with self._lock:
            self._held.discard(trial_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                held = list(self._held)
            for tid in held:
                try:
                    self.storage.record_heartbeat(tid)  # type: ignore[attr-defined]
                except Exception as e:  # a transient database error must not kill the worker
                    log.warning("heartbeat for trial id %d not recorded: %s", tid, e)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def fail_stale(study: optuna.Study) -> None:
    """Fail (and complete or re-queue, through the storage's callback) the trials of dead workers."""
    if heartbeat_enabled(study._storage):
        with quiet_optuna():
            optuna.storages.fail_stale_trials(study)


def check_hardware(study: optuna.Study, fingerprint: str | None, where: str) -> None:
    """Record the target's hardware fingerprint on a new study; refuse a worker on other hardware."""
    if fingerprint is None:
        return
    have = study.user_attrs.get(HARDWARE_ATTR)
    if have is None:
        study.set_user_attr(HARDWARE_ATTR, fingerprint)
    elif have != fingerprint:
        raise SearchError(
            f"study {study.study_name!r} in {where} was measured on hardware {have}; this worker's target is "
            f"{fingerprint}. Latencies from different machines must not mix: run this worker on the same kind of "
            "machine, or give it its own study (--study-name)"
        )


def run_identity(run_dir: Any) -> str:
    """host:run-dir of a `kdnas run`: the same run resumed after a crash (another pid) is the same leader."""
    import socket
    from pathlib import Path

    return f"{socket.gethostname()}:{Path(run_dir).resolve()}"


def check_role(study: optuna.Study, role: str | None, identity: str, where: str) -> str | None:
    """`kdnas run` on a shared study: `lead` records this run as the one that runs the stages after the
    search (refused when another run leads it), `take-over` records it whatever was there, `join` only helps
    with the search. Returns the leader's identity (None when none has registered yet)."""
    have = study.user_attrs.get(LEADER_ATTR)
    if role in ("lead", "take-over"):
        if have not in (None, identity) and role == "lead":
            raise SearchError(
                f"study {study.study_name!r} in {where} belongs to the run {have}, which runs the stages after "
                "the search. To help with its search from here, start this one with `kdnas run ... --join`; to "
                "make this run the one that distils and evaluates (that machine is gone), pass `--take-over`"
            )
        study.set_user_attr(LEADER_ATTR, identity)
        return identity
    return have if isinstance(have, str) else None


def target_fingerprint(target: Any) -> str:
    """What a shared study is pinned to: this machine's latency fingerprint for the target's threads and
    device (CPU model, cores, ISA flags, library versions), and the latency backend."""
    from kdnas.latency.fingerprint import fingerprint

    return f"{fingerprint(target.threads, target.device).id}/{target.backend}"


def storage_url(cfg: SearchConfig, storage: str | None, run_dir: str | Path | None) -> str | None:
    """The storage to use: the explicit one, then `search.storage`, then SQLite in the run dir (None: in memory)."""
    if storage or cfg.storage:
        return storage or cfg.storage
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(Path(run_dir) / rd.STUDY).resolve()}"
    return None


def open_storage(url: str | None) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` (in memory for None); SearchError if it cannot be opened."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    try:
        return optuna.storages.get_storage(url)
    except Exception as e:  # sqlalchemy/driver errors vary by backend; all mean the same to the user
        raise SearchError(
            f"cannot open the search storage {redact(url)}: {type(e).__name__}: {redact(str(e))}. Use an Optuna "
            "storage URL such as "
            "sqlite:///runs/NAME/search.db (the directory must exist) or postgresql://user:pass@host/db"
        ) from None
