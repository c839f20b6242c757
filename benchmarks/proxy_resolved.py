"""Does the proxy rank the finals where the finals themselves can be ranked? Offline, from stored tables.

Kendall tau against a table of finals counts every pair of models, also those whose final suite scores differ by
less than the fine-tuning seeds move them; no proxy can order such a pair except by luck, so a table whose models
sit close together (the fourteenth session's: six of eight within 1.3 points) caps the tau any proxy can reach.
This prints, next to the tau over all pairs, the pairs the finals resolve (their difference larger than `z`
standard errors of the difference, from each row's `se`) and how many of those the proxy orders right, with the
tau over those pairs alone. Rows without an `se` are left out of the resolved pairs (counted in the tau). Reports,
does not assert; the issue's target is the tau over all pairs.

    python benchmarks/proxy_resolved.py [--finals finals-headline-family5.json]
        [--proxy proxy_init-family5.json[,runs/RUN/search.db]] [--init lstsq] [--z 2]
        [--leave-out bert-small-L4-H512] [--fidelity long (with a proxy_fidelity.py table)]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

DATA = Path(__file__).parent / "data"
HIGHER_IS_BETTER = {"recall", "predictor"}


def resolved_pairs(
    rows: list[dict], proxy: dict[str, float], z: float
) -> tuple[list[tuple[str, str, float, float, bool]], int]:
    """(model a, model b, final difference, its standard error, proxy agrees) for every pair whose difference
    exceeds z standard errors, and how many pairs had no standard error."""
    out, unknown = [], 0
    for a, b in itertools.combinations(rows, 2):
        if a.get("se") is None or b.get("se") is None:
            unknown += 1
            continue
        diff = float(a["final"]) - float(b["final"])
        se = math.hypot(float(a["se"]), float(b["se"]))
        if abs(diff) > z * se:  # a lower proxy loss should go with a higher final score
            agree = (diff > 0) == (proxy[a["id"]] < proxy[b["id"]])
            out.append((a["model"], b["model"], diff, se, agree))
    return out, unknown


def main(argv: list[str] | None = None) -> int:
    from scipy.stats import kendalltau

    from kdnas.space.arch import Arch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--finals", default="finals-headline-family5.json", help="a table under benchmarks/data")
    ap.add_argument(
        "--proxy",
        default="proxy_init-family5.json",
        help="comma-separated proxy sources: proxy_init.py tables under benchmarks/data, or a run's search.db "
        "(every trial's short-proxy loss, the run's own start); the first source with an arch wins",
    )
    ap.add_argument("--init", default="lstsq", help="which start's proxy loss (random, lstsq)")
    ap.add_argument(
        "--fidelity",
        default="short",
        help="which column of a proxy_fidelity.py table (short, long, flash, zero, recall, predictor)",
    )
    ap.add_argument("--z", type=float, default=2.0, help="standard errors a resolved pair must differ by")
    ap.add_argument(
        "--leave-out",
        default="",
        help="comma-separated models to leave out (e.g. a baseline wider than the teacher, outside the search space)",
    )
    a = ap.parse_args(argv)

    table = json.loads(_path(a.finals).read_text())
    proxy_all: dict[str, float] = {}
    for src in filter(None, a.proxy.split(",")):
        for arch_id, kd in proxy_losses(_path(src), a.init, a.fidelity).items():
            proxy_all.setdefault(arch_id, kd)
    out = set(filter(None, a.leave_out.split(",")))
    unknown_out = out - {r["model"] for r in table["rows"]}
    if unknown_out:
        raise SystemExit(f"--leave-out: {', '.join(sorted(unknown_out))} not in {a.finals}")
    rows = [{**r, "id": Arch.from_dict(r["arch"]).arch_id} for r in table["rows"] if r["model"] not in out]
    missing = [r["id"] for r in rows if r["id"] not in proxy_all]
    if missing:
        raise SystemExit(f"{a.proxy}: no proxy row for {', '.join(missing)}; score them with proxy_init.py")
    proxy = {r["id"]: proxy_all[r["id"]] for r in rows}

    left = f", left out: {', '.join(sorted(out))}" if out else ""
    print(
        f"finals {a.finals} ({len(rows)} models{left}), proxy {a.proxy} ({a.init} start, fidelity {a.fidelity}), z = {a.z}"
    )
    print(f"{'model':32} {'arch':24} {'final':>7} {'se':>6} {'proxy kd':>9}")
    for r in sorted(rows, key=lambda r: -float(r["final"])):
        se = "-" if r.get("se") is None else f"{r['se']:.2f}"
        print(f"{r['model']:32} {r['id']:24} {r['final']:>7.2f} {se:>6} {proxy[r['id']]:>9.3f}")
    tau = float(kendalltau([-proxy[r["id"]] for r in rows], [float(r["final"]) for r in rows]).statistic)
    pairs, unknown = resolved_pairs(rows, proxy, a.z)
    n_pairs = len(rows) * (len(rows) - 1) // 2
    right = sum(p[4] for p in pairs)
    print(f"\nKendall tau over all {n_pairs} pairs: {tau:.3f}")
    print(f"pairs the finals resolve (|difference| > {a.z:g} se): {len(pairs)} of {n_pairs - unknown} with an se "
          f"({unknown} without)")  # fmt: skip
    if pairs:
        tau_resolved = (2 * right - len(pairs)) / len(pairs)
        print(f"the proxy orders {right} of them right; tau over those pairs {tau_resolved:.3f}")
        for m1, m2, diff, se, agree in pairs:
            if not agree:
                print(f"  wrong: {m1} - {m2} = {diff:+.2f} points (se {se:.2f}), proxy {proxy_of(rows, m1, proxy):.3f} "
                      f"vs {proxy_of(rows, m2, proxy):.3f}")  # fmt: skip
    return 0


def _path(name: str) -> Path:
    """A file under benchmarks/data by name, else the path as given."""
    return DATA / name if (DATA / name).exists() else Path(name)


def proxy_losses(path: Path, init: str, fidelity: str = "short") -> dict[str, float]:
    """arch_id -> short-proxy KD loss from a proxy_init.py table (`scores`, the `init` start) or from a run's
    Optuna study (`search.db`: each trial's `kd_loss_short`, the first trial of an arch); from a
    proxy_fidelity.py table the `fidelity` column (negated where higher is better, so lower is better always)."""
    if path.suffix == ".db":
        import sqlite3

        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            rows = con.execute(
                "SELECT t.number, a.key, a.value_json FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id WHERE a.key IN ('arch_id', 'kd_loss_short') ORDER BY t.number"
            ).fetchall()
        by_trial: dict[int, dict[str, object]] = {}
        for number, key, value in rows:
            by_trial.setdefault(number, {})[key] = json.loads(value)
        out: dict[str, float] = {}
        for t in by_trial.values():
            if isinstance(t.get("arch_id"), str) and isinstance(t.get("kd_loss_short"), (int, float)):
                out.setdefault(str(t["arch_id"]), float(t["kd_loss_short"]))  # type: ignore[arg-type]
        return out
    doc = json.loads(path.read_text())
    if "rows" in doc and "scores" not in doc:  # a proxy_fidelity.py table: one fidelity of each scored model
        from kdnas.space.arch import Arch

        sign = -1.0 if fidelity in HIGHER_IS_BETTER else 1.0  # lower is better here, as for the KD losses
        return {
            Arch.from_dict(r["arch"]).arch_id: sign * float(r["fidelities"][fidelity])
            for r in doc["rows"]
            if fidelity in (r.get("fidelities") or {})
        }
    if "scores" not in doc:
        raise SystemExit(
            f"--proxy {path}: not a proxy_init.py or proxy_fidelity.py table, nor a run's search.db"
        )
    return {k: float(v[init]["kd"]) for k, v in doc["scores"].items() if init in v}


def proxy_of(rows: list[dict], model: str, proxy: dict[str, float]) -> float:
    return next(proxy[r["id"]] for r in rows if r["model"] == model)


if __name__ == "__main__":
    raise SystemExit(main())
