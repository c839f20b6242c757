"""`kdnas worker`: internal entry of isolated worker processes (started by kdnas itself, not by users).

`kdnas worker latency --job JOB --out OUT` runs one latency job (kdnas/latency/worker.py).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="(internal) run an isolated measuring job", description=__doc__)
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    lat = kinds.add_parser("latency", help="measure latency: read a JSON job, write JSON lines")
    lat.add_argument("--job", required=True, help="the JSON job file")
    lat.add_argument("--out", required=True, help="where to append one JSON line per finished measurement")
    lat.set_defaults(func=_latency)


def _latency(args: argparse.Namespace) -> int:
    from kdnas.latency.worker import run_job

    return run_job(args.job, args.out)
