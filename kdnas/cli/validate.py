"""`kdnas validate CONFIG`: check a config and report every problem at once, each naming its key."""

from __future__ import annotations

import argparse
import dataclasses


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check a config (every problem at once)",
        description="Check a config file or shipped recipe; list every problem, each naming its key. "
        "Overrides (--section.key VALUE) are applied first.",
    )
    p.add_argument("config", nargs="?", help="YAML file or recipe name (default: the embedded default)")
    p.add_argument(
        "--print", action="store_true", dest="print_config", help="print the resolved config as YAML"
    )
    p.add_argument("--explain", action="store_true", help="list every key with its default and meaning")
    p.set_defaults(func=_run, accepts_overrides=True)


def _run(args: argparse.Namespace) -> int:
    from kdnas import config

    if args.explain:
        _explain(config.RunConfig, "")
        return 0
    cfg = config.load(args.config, args.overrides)
    where = args.config or "embedded default"
    if args.print_config:
        print(cfg.to_yaml(), end="")
    print(f"ok: {where} is valid (run dir {cfg.resolved_run_dir}, config hash {cfg.hash()})")
    return 0


def _explain(cls: type, prefix: str) -> None:
    from kdnas.config import field_docs

    docs = field_docs(cls)
    inst = cls()
    for f in dataclasses.fields(inst):  # type: ignore[arg-type]
        v = getattr(inst, f.name)
        if dataclasses.is_dataclass(v):
            print(f"\n[{prefix}{f.name}]  {(type(v).__doc__ or '').strip().splitlines()[0]}")
            _explain(type(v), f"{prefix}{f.name}.")
        else:
            print(f"  {prefix}{f.name} = {v!r}\n      {docs.get(f.name, '')}")
