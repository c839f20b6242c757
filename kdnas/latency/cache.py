"""On-disk latency cache (SQLite) keyed by (fingerprint, backend, model key, batch, seq_len).

SQLite in WAL mode with a busy timeout: several processes (parallel searches) can read and write it safely.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from kdnas.latency.result import LatencyResult


def default_dir() -> Path:
    """$KDNAS_LATENCY_CACHE when set, else `<kdnas cache>/latency`: kdnas.zoo.cache_dir() when the zoo is there,
    else $KDNAS_CACHE or ~/.cache/kdnas. The test suite points it at a temp dir of its own: tests cache whatever
    a loaded machine measures, and such readings must not reach the user's cache."""
    env_latency = os.environ.get("KDNAS_LATENCY_CACHE")
    if env_latency:
        return Path(env_latency).expanduser()
    try:
        from kdnas.cache import cache_dir

        root = cache_dir()
    except ImportError:
        env = os.environ.get("KDNAS_CACHE")
        root = Path(env).expanduser() if env else Path.home() / ".cache" / "kdnas"
    return root / "latency"


def backend_key(backend: str, attn: str | None = None) -> str:
    """The backend part of a cache key; torch backends include the attention setting asked for."""
    return f"{backend}[{attn}]" if attn and backend.startswith("torch") else backend


class LatencyCache:
    """Latency results on disk. `get` returns None on a miss; `put` replaces an older entry."""

    def __init__(self, path: str | Path | None = None):
        """`path`: a dir (the db is `latency.sqlite` in it) or a `.sqlite` file; default `default_dir()`."""
        p = Path(path).expanduser() if path is not None else default_dir()
        self.path = p if p.suffix in (".sqlite", ".db") else p / "latency.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS results (fingerprint TEXT, backend TEXT, model TEXT, batch INTEGER, "
                "seq INTEGER, result TEXT, created REAL, PRIMARY KEY (fingerprint, backend, model, batch, seq))"
            )

    @property
    def dir(self) -> Path:
        return self.path.parent

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, fingerprint: str, backend: str, model: str, batch: int, seq: int) -> LatencyResult | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT result FROM results WHERE fingerprint=? AND backend=? AND model=? AND batch=? AND seq=?",
                (fingerprint, backend, model, batch, seq),
            ).fetchone()
        if row is None:
            return None
        r = LatencyResult.from_dict(json.loads(row[0]))
        r.cached = True
        return r

    def put(self, fingerprint: str, backend: str, model: str, result: LatencyResult) -> None:
        d = result.to_dict()
        d["cached"] = False
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                (fingerprint, backend, model, result.batch_size, result.seq_len, json.dumps(d), time.time()),
            )

    def __len__(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def drop(self, *, before: float | None = None, dry_run: bool = False) -> int:
        """Delete the entries cached before the Unix time `before` (every entry when None); returns how many
        there were. `dry_run`: count only. Readings a loaded machine or an old kdnas cached stay valid to the
        cache until dropped (it only guards new ones)."""
        where, params = ("WHERE created < ?", (before,)) if before is not None else ("", ())
        with closing(self._connect()) as db, db:
            n = int(db.execute(f"SELECT COUNT(*) FROM results {where}", params).fetchone()[0])
            if not dry_run and n:
                db.execute(f"DELETE FROM results {where}", params)
        return n

    def clear(self) -> None:
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM results")
