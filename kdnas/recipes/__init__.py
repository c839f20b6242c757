"""The shipped recipes: `kdnas run NAME` reads NAME.yaml from this package."""

from __future__ import annotations

from importlib import resources


def names() -> list[str]:
    """The recipe names, sorted (cheap: the CLI's help lists them without importing the config module)."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))
