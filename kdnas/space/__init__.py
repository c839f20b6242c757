"""Search spaces: architectures, their dimensions and constraints, and cost helpers (params, FLOPs, memory)."""

from kdnas.space.arch import Arch
from kdnas.space.space import Constraints, Dimension, SearchSpace
from kdnas.space.spaces import default_space, load_space, mobilebert_space

__all__ = [
    "Arch",
    "Constraints",
    "Dimension",
    "SearchSpace",
    "default_space",
    "load_space",
    "mobilebert_space",
]
