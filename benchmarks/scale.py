"""Scaling out: search workers on one PostgreSQL study, and distillation over processes with torchrun.

1. Trials per hour with 1, 2 and 3 `kdnas search smoke --fake` workers on one study of a PostgreSQL server
   (`--pg URL`, e.g. the one `.ci/run` starts), each trial a fake candidate of `--trial-seconds` (sleep: the
   workers' coordination is what is measured, not this machine's two cores), and the storage overhead per
   trial: (workers x span - trials x trial seconds) / trials, the span from the first trial's start to the last
   one's end (process start-up, printed apart, excluded).
2. Distillation tokens/s of one `kdnas distill` run (minilm-l6 teacher, wiki-vital-en) with 1 process x 2
   threads, 1 process x 1 thread and `torchrun` 2 processes x 1 thread, same student, data and global batch,
   plus the held-out KD loss of each (equal up to float noise).

Reports, does not assert.

    python benchmarks/scale.py --pg postgresql://postgres@127.0.0.1:55432/postgres
    python benchmarks/scale.py --only ddp
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def _database(server: str) -> str:
    import psycopg

    name = f"kdnas_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server.rsplit('/', 1)[0]}/{name}"


def _drop(url: str, server: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def workers(server: str, n_trials: int, trial_s: float, counts: list[int]) -> list[dict[str, float]]:
    rows = []
    for k in counts:
        url = _database(server)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "kdnas", "search", "smoke", "--fake", "--fake-seconds", str(trial_s),
                       "--storage", url, "--study-name", "scale", "--quiet", "--search.n_trials", str(n_trials)]  # fmt: skip
                t0 = time.perf_counter()
                opts = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
                procs = [subprocess.Popen([*cmd, "--run-dir", f"{tmp}/w{i}"], **opts) for i in range(k)]  # type: ignore[call-overload]
                for p in procs:
                    _, err = p.communicate(timeout=3600)
                    if p.returncode != 0:
                        raise SystemExit(f"a worker failed ({p.returncode}): {err[-2000:]}")
                wall = time.perf_counter() - t0
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            trials = optuna.load_study(
                study_name="scale", storage=url.replace("postgresql://", "postgresql+psycopg://")
            ).trials
            complete = [
                t for t in trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs
            ]
            done = len(complete)
            # steady state: from the first trial's start to the last one's end (process start-up excluded)
            span = (
                max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete)
            ).total_seconds()
        finally:
            _drop(url, server)
        overhead_ms = (k * span - done * trial_s) / max(1, done) * 1e3
        rows.append({"workers": k, "wall_s": wall, "span_s": span, "trials": done,
                     "trials_per_hour": done / span * 3600, "overhead_ms_per_trial": overhead_ms,
                     "startup_s": wall - span})  # fmt: skip
        print(f"  {k} worker(s): {done} trials in {span:.1f} s from the first start to the last end "
              f"({wall:.1f} s wall with start-up) = {done / span * 3600:.0f} trials/h; storage and coordination "
              f"{overhead_ms:.0f} ms per trial", flush=True)  # fmt: skip
    base = rows[0]["trials_per_hour"]
    for r in rows:
        print(f"  scaling {r['workers']}: x{r['trials_per_hour'] / base:.2f} (ideal x{r['workers']})")
    return rows


def ddp(tokens: int, arch: str) -> list[dict[str, float]]:
    args = ["distill", "--teacher", "minilm-l6", "--arch", arch, "--corpus", "wiki-vital-en", "--max-documents",
            "2000", "--seq-len", "128", "--batch-size", "16", "--grad-accum", "2", "--tokens", str(tokens),
            "--no-progress"]  # fmt: skip
    launch = {
        "1 process x 2 threads": (
            [sys.executable, "-m", "kdnas"],
            {"OMP_NUM_THREADS": "2"},
            ["--threads", "2"],
        ),
        "1 process x 1 thread": (
            [sys.executable, "-m", "kdnas"],
            {"OMP_NUM_THREADS": "1"},
            ["--threads", "1"],
        ),
        "torchrun 2 processes x 1 thread": (
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node=2",
                "-m",
                "kdnas",
            ],
            {"OMP_NUM_THREADS": "1"},
            ["--threads", "1"],
        ),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cmd, env, extra) in launch.items():
            out = Path(tmp) / name.replace(" ", "_")
            t0 = time.perf_counter()
            p = subprocess.run([*cmd, *args, *extra, "--out", str(out)], env={**os.environ, **env},
                               capture_output=True, text=True)  # fmt: skip
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                raise SystemExit(f"{name} failed: {p.stderr[-2000:]}")
            r = json.loads((out / "result.json").read_text())
            rows.append({"launch": name, "tokens_per_s": r["tokens_per_s"], "wall_s": wall,
                         "setup_s": r.get("setup_seconds"), "heldout_kd_loss": r["heldout_kd_loss"],
                         "tokens": r["tokens"]})  # fmt: skip
            print(f"  {name}: {r['tokens_per_s']:.0f} tokens/s (loop), {wall:.0f} s wall incl. teacher cache "
                  f"{r.get('setup_seconds', 0):.0f} s, held-out KD loss {r['heldout_kd_loss']:.5f}", flush=True)  # fmt: skip
    ref = rows[0]
    for r in rows[1:]:
        print(
            f"  {r['launch']} / {ref['launch']}: x{r['tokens_per_s'] / ref['tokens_per_s']:.2f} tokens/s, "
            f"held-out KD loss {r['heldout_kd_loss'] - ref['heldout_kd_loss']:+.2e}"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default=os.environ.get("KDNAS_TEST_POSTGRES"), help="PostgreSQL server URL")
    ap.add_argument("--only", choices=("workers", "ddp"))
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--trial-seconds", type=float, default=2.0)
    ap.add_argument("--tokens", type=int, default=150_000)
    ap.add_argument("--arch", default="L=4,H=256,A=4,F=1024")
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    res: dict[str, object] = {}
    if a.only in (None, "workers"):
        if not a.pg:
            raise SystemExit("--pg URL (or KDNAS_TEST_POSTGRES): a PostgreSQL server to create databases on")
        print(f"search workers on one PostgreSQL study ({a.trials} trials of {a.trial_seconds} s):")
        res["workers"] = workers(a.pg, a.trials, a.trial_seconds, [1, 2, 3])
    if a.only in (None, "ddp"):
        print(f"distillation of {a.arch} on {a.tokens:,} tokens:")
        res["ddp"] = ddp(a.tokens, a.arch)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
