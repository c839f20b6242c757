"""Search spaces: architectures, their dimensions and constraints, and cost helpers (params, FLOPs, memory)."""

from kdnas.space.arch import Arch

__all__ = ["Arch"]
