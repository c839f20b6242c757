"""A search space: finite dimensions over `Arch` fields plus constraints, with sampling, encoding and an Optuna bridge.

Builders (`default_space`, `mobilebert_space`) and the YAML schema live in `kdnas.space.spaces`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas.errors import SearchError
from kdnas.space.arch import Arch

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from transformers import PretrainedConfig

# Dimension names a space may use. Exactly one of num_heads/head_dim and one of ffn_size/ffn_ratio.
DIMENSIONS = (
    "num_layers",
    "hidden_size",
    "num_heads",
    "head_dim",
    "ffn_size",
    "ffn_ratio",
    "activation",
    "bottleneck_size",
    "num_ffn_stacked",
    "vocab",
)
MOBILEBERT_ONLY = ("bottleneck_size", "num_ffn_stacked")
# Raw products above this are not enumerated; sampling falls back to rejection sampling.
ENUMERATE_LIMIT = 200_000
LatencyFn = Callable[[Arch], float]


@dataclass(frozen=True)
class Dimension:
    """One searchable field: a finite tuple of values (a YAML range is expanded into its values)."""

    name: str
    """One of DIMENSIONS."""
    values: tuple[Any, ...]
    """Allowed values; numbers sorted ascending, categorical values in the order given."""

    @property
    def categorical(self) -> bool:
        # vocab choices (full, corpus, N) are labels: their order is the user's, never a numeric scale
        return self.name == "vocab" or any(isinstance(v, str) for v in self.values)

    @property
    def fixed(self) -> bool:
        return len(self.values) == 1

    @property
    def width(self) -> int:
        """Columns this dimension takes in `SearchSpace.encode` (0 when fixed)."""
        if self.fixed:
            return 0
        return len(self.values) if self.categorical else 1

    def step(self) -> float | None:
        """The common step when the numeric values are evenly spaced, else None."""
        if self.categorical or len(self.values) < 2:
            return None
        diffs = [b - a for a, b in itertools.pairwise(self.values)]
        return diffs[0] if all(math.isclose(d, diffs[0], rel_tol=1e-9) for d in diffs) else None

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution: ints/floats on a grid keep their order (GP, TPE use it), else categorical."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        step = self.step()
        if step is not None and all(isinstance(v, int) for v in self.values):
            return IntDistribution(int(self.values[0]), int(self.values[-1]), step=int(step))
        if step is not None:
            return FloatDistribution(float(self.values[0]), float(self.values[-1]), step=float(step))
        return CategoricalDistribution(list(self.values))

    def snap(self, value: Any) -> Any:
        """The allowed value nearest to `value` (Optuna float grids can drift by an ulp)."""
        if self.categorical or value in self.values:
            return value
        return min(self.values, key=lambda v: abs(float(v) - float(value)))

    def encode(self, value: Any) -> list[float]:
        if self.fixed:
            return []
        if self.categorical:
            return [1.0 if v == value else 0.0 for v in self.values]
        lo, hi = float(self.values[0]), float(self.values[-1])
        return [min(1.0, max(0.0, (float(value) - lo) / (hi - lo)))]

    def to_yaml(self) -> Any:
        step = self.step()
        if step is not None and len(self.values) > 4:
            return {"min": self.values[0], "max": self.values[-1], "step": step}
        return {"choices": list(self.values)}


@dataclass(frozen=True)
class Constraints:
    """Rules every candidate must meet before it is distilled. None disables a rule."""

    head_dim_min: int | None = None
    """Smallest attention head width (hidden_size / num_heads; bottleneck_size / num_heads for mobilebert)."""
    head_dim_max: int | None = None
    """Largest attention head width."""
    max_params_m: float | None = None
    """Most parameters (millions, embeddings included) per `kdnas.space.cost.param_count`."""
    max_latency_ms: float | None = None
    """Most predicted latency (ms); needs a latency predictor hook at run time."""

    def active(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


class SearchSpace:
    """The archs a search may propose: the product of `dimensions`, minus those that break a constraint.

    `family` is `teacher` (students in the teacher's HF family) or `mobilebert`. `teacher_config` is needed
    for the params constraint; `latency_fn` (arch -> predicted ms) for the latency constraint; `allowed`
    restricts the space to a set of arch ids (e.g. the archs of a recorded benchmark table). `vocab_sizes`
    resolves the `vocab` dimension's choices into `Arch.vocab_size` (`full` -> None, an int N -> N; `corpus`
    needs the size `kdnas.space.vocab.VocabTable.sizes` found on the run's corpus).
    """

    def __init__(
        self,
        dimensions: Sequence[Dimension],
        *,
        family: str = "teacher",
        constraints: Constraints | None = None,
        teacher_config: PretrainedConfig | None = None,
        latency_fn: LatencyFn | None = None,
        allowed: frozenset[str] | None = None,
        name: str = "custom",
        vocab_sizes: dict[str, int | None] | None = None,
    ):
        self.dimensions: tuple[Dimension, ...] = tuple(dimensions)
        self.family = family
        self.constraints = constraints or Constraints()
        self.teacher_config = teacher_config
        self.latency_fn = latency_fn
        self.allowed = allowed
        self.name = name
        self.vocab_sizes = dict(vocab_sizes) if vocab_sizes else None
        self._dims = {d.name: d for d in self.dimensions}
        self._valid: list[Arch] | None = None
        self._check_shape()

    # ---------------------------------------------------------------------------------------------- structure
    def _check_shape(self) -> None:
        names = [d.name for d in self.dimensions]
        problems = []
        for need in (("num_layers",), ("hidden_size",), ("num_heads", "head_dim"), ("ffn_size", "ffn_ratio")):
            n = sum(x in names for x in need)
            if n != 1:
                problems.append(f"dimensions: need exactly one of {' / '.join(need)} (got {n})")
        for extra in MOBILEBERT_ONLY:
            if (extra in names) != (self.family == "mobilebert"):
                problems.append(
                    f"dimensions.{extra}: {'required' if self.family == 'mobilebert' else 'only'} for family mobilebert"
                )
        if any(not d.values for d in self.dimensions):
            problems.append("dimensions: every dimension needs at least one value")
        if self.constraints.max_params_m is not None and self.teacher_config is None:
            problems.append(
                "constraints.max_params_m: needs the teacher config to count embedding parameters"
            )
        if problems:
            raise SearchError(f"search space {self.name!r} is malformed: " + "; ".join(problems))

    def __getitem__(self, name: str) -> Dimension:
        return self._dims[name]

    def __repr__(self) -> str:
        dims = ", ".join(f"{d.name}={list(d.values)}" for d in self.dimensions)
        return f"SearchSpace({self.name!r}, family={self.family!r}, {dims}, constraints={self.constraints})"

    def replace(self, **changes: Any) -> SearchSpace:
        """A copy with some of dimensions/family/constraints/teacher_config/latency_fn/allowed/name changed."""
        kw: dict[str, Any] = dict(
            dimensions=self.dimensions,
            family=self.family,
            constraints=self.constraints,
            teacher_config=self.teacher_config,
            latency_fn=self.latency_fn,
            allowed=self.allowed,
            name=self.name,
            vocab_sizes=self.vocab_sizes,
        )
        kw.update(changes)
        dims = kw.pop("dimensions")
        return SearchSpace(dims, **kw)

    def with_constraints(self, **changes: Any) -> SearchSpace:
        """A copy with some constraints changed (e.g. `max_params_m=20`)."""
        return self.replace(constraints=dataclasses.replace(self.constraints, **changes))

    def with_vocab(self, sizes: dict[str, int | None]) -> SearchSpace:
        """A copy whose `vocab` choices resolve to these sizes (`VocabTable.sizes` of the run's corpus)."""
        return self.replace(vocab_sizes=sizes)

    @property
    def vocab_choices(self) -> tuple[Any, ...]:
        """The `vocab` dimension's choices (`("full",)` when the space has no such dimension)."""
        return self._dims["vocab"].values if "vocab" in self._dims else ("full",)

    def vocab_size_of(self, choice: Any) -> int | None:
        """Arch.vocab_size for a `vocab` choice; SearchError for `corpus` before it was resolved."""
        key = str(choice)
        if self.vocab_sizes is not None and key in self.vocab_sizes:
            return self.vocab_sizes[key]
        if choice == "full":
            return None
        if isinstance(choice, int) and not isinstance(choice, bool):
            return choice
        raise SearchError(
            f"search space {self.name!r}: the vocab choice {choice!r} is resolved on the run's training corpus; "
            "build the space through the pipeline (`kdnas run`), or call space.with_vocab(VocabTable.sizes)"
        )

    def _vocab_choice(self, arch: Arch) -> Any:
        """The `vocab` choice that gives `arch.vocab_size` (the size itself when none does)."""
        for c in self._dims["vocab"].values:
            try:
                if self.vocab_size_of(c) == arch.vocab_size:
                    return c
            except SearchError:
                continue
        return "full" if arch.vocab_size is None else arch.vocab_size

    def restricted_to(self, archs: Sequence[Arch] | Sequence[str]) -> SearchSpace:
        """A copy that only allows the given archs (or arch ids)."""
        ids = frozenset(a.arch_id if isinstance(a, Arch) else str(a) for a in archs)
        return self.replace(allowed=ids)

    # ---------------------------------------------------------------------------------------------- params <-> arch
    def arch(self, params: dict[str, Any]) -> Arch:
        """The arch for a full assignment of dimension values (fixed dimensions may be left out)."""
        v = {d.name: d.snap(params[d.name]) if d.name in params else d.values[0] for d in self.dimensions}
        hidden = int(v["hidden_size"])
        width = int(v["bottleneck_size"]) if self.family == "mobilebert" else hidden
        heads = int(v["num_heads"]) if "num_heads" in v else max(1, width // int(v["head_dim"]))
        ffn = int(v["ffn_size"]) if "ffn_size" in v else max(1, round(float(v["ffn_ratio"]) * width))
        return Arch(
            num_layers=int(v["num_layers"]),
            hidden_size=hidden,
            num_heads=heads,
            ffn_size=ffn,
            activation=str(v.get("activation", "gelu")),
            vocab_size=self.vocab_size_of(v["vocab"]) if "vocab" in v else None,
            family=self.family,
            bottleneck_size=int(v["bottleneck_size"]) if self.family == "mobilebert" else None,
            num_ffn_stacked=int(v["num_ffn_stacked"]) if self.family == "mobilebert" else None,
        )

    def values_of(self, arch: Arch) -> dict[str, Any]:
        """Dimension name -> the value `arch` has for it (head_dim and ffn_ratio derived)."""
        width = (
            arch.bottleneck_size if self.family == "mobilebert" and arch.bottleneck_size else arch.hidden_size
        )
        out: dict[str, Any] = {}
        for d in self.dimensions:
            if d.name == "head_dim":
                out[d.name] = width / arch.num_heads
            elif d.name == "ffn_ratio":
                out[d.name] = arch.ffn_size / width
            elif d.name == "vocab":
                out[d.name] = self._vocab_choice(arch)
                continue
            else:
                out[d.name] = getattr(arch, d.name)
            if (
                not d.categorical
                and float(out[d.name]).is_integer()
                and all(isinstance(x, int) for x in d.values)
            ):
                out[d.name] = int(out[d.name])
        return out

    def params_of(self, arch: Arch) -> dict[str, Any]:
        """The Optuna params (non-fixed dimensions only) that `suggest` turns into `arch`."""
        vals = self.values_of(arch)
        return {d.name: d.snap(vals[d.name]) for d in self.dimensions if not d.fixed}

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions of the non-fixed dimensions (the relative search space of the samplers)."""
        return {d.name: d.distribution() for d in self.dimensions if not d.fixed}

    def suggest(self, trial: optuna.Trial) -> Arch:
        """The arch an Optuna trial proposes (constraints are not checked here: see `violations`)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        params: dict[str, Any] = {}
        for name, dist in self.distributions().items():
            if isinstance(dist, IntDistribution):
                params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step)
            elif isinstance(dist, FloatDistribution):
                params[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step)
            else:
                assert isinstance(dist, CategoricalDistribution)
                params[name] = trial.suggest_categorical(name, dist.choices)  # type: ignore[arg-type]
        return self.arch(params)

    # ---------------------------------------------------------------------------------------------- membership
    def violations(self, arch: Arch) -> list[str]:
        """Every rule `arch` breaks, as `constraint: reason` (cheap rules first; empty when it is in the space)."""
        out: list[str] = []
        if arch.family != self.family:
            return [f"family: {arch.family} arch in a {self.family} space"]
        out += [f"arch: {p}" for p in arch.problems()]
        if out:
            return out
        if "vocab" not in self._dims and arch.vocab_size is not None:
            return [
                f"dimensions.vocab: V{arch.vocab_size} is a trimmed vocabulary; this space keeps the full one"
            ]
        vals = self.values_of(arch)
        for d in self.dimensions:
            v = vals[d.name]
            ok = v in d.values if d.categorical else any(math.isclose(float(v), float(x)) for x in d.values)
            if not ok:
                out.append(
                    f"dimensions.{d.name}: {v:g} is not one of {list(d.values)}"
                    if not d.categorical
                    else f"dimensions.{d.name}: {v!r} is not one of {list(d.values)}"
                )
        if self.family == "mobilebert" and arch.bottleneck_size and arch.bottleneck_size > arch.hidden_size:
            out.append(f"bottleneck: bottleneck_size {arch.bottleneck_size} > hidden_size {arch.hidden_size}")
        c = self.constraints
        if c.head_dim_min is not None and arch.head_dim < c.head_dim_min:
            out.append(f"head_dim_min: head dim {arch.head_dim} < {c.head_dim_min}")
        if c.head_dim_max is not None and arch.head_dim > c.head_dim_max:
            out.append(f"head_dim_max: head dim {arch.head_dim} > {c.head_dim_max}")
        if self.allowed is not None and arch.arch_id not in self.allowed:
            out.append(f"allowed: {arch.arch_id} is not in the allowed set ({len(self.allowed)} archs)")
        if out:
            return out
        if c.max_params_m is not None:
            p = self.params_m(arch)
            if p > c.max_params_m:
                out.append(f"max_params_m: {p:.2f}M parameters > {c.max_params_m:g}M")
        if c.max_latency_ms is not None and self.latency_fn is not None:
            lat = float(self.latency_fn(arch))
            if lat > c.max_latency_ms:
                out.append(f"max_latency_ms: predicted {lat:.3g} ms > {c.max_latency_ms:.3g} ms")
        return out

    def contains(self, arch: Arch) -> bool:
        return not self.violations(arch)

    def __contains__(self, arch: object) -> bool:
        return isinstance(arch, Arch) and self.contains(arch)

    def params_m(self, arch: Arch) -> float:
        """Parameters of `arch` in millions (embeddings included), via the cost model."""
        from kdnas.space.cost import param_count

        if self.teacher_config is None:
            raise SearchError(
                "counting parameters needs the teacher config; build the space with teacher_config="
            )
        return param_count(arch, self.teacher_config).total / 1e6

    # ---------------------------------------------------------------------------------------------- enumeration
    def raw_size(self) -> int:
        """Size of the product of the dimensions, before constraints."""
        return math.prod(len(d.values) for d in self.dimensions)

    def _product(self) -> Iterator[Arch]:
        names = [d.name for d in self.dimensions]
        seen: set[str] = set()
        for combo in itertools.product(*(d.values for d in self.dimensions)):
            arch = self.arch(dict(zip(names, combo)))
            if arch.arch_id not in seen:  # head_dim/ratio rounding can map two combos onto one arch
                seen.add(arch.arch_id)
                yield arch

    def enumerable(self) -> bool:
        return self.raw_size() <= ENUMERATE_LIMIT

    def enumerate(self) -> list[Arch]:
        """Every arch in the space, in a stable order (raises SearchError if the product is too large)."""
        if self._valid is None:
            if not self.enumerable():
                raise SearchError(
                    f"search space {self.name!r} has {self.raw_size():,} raw combinations, more than "
                    f"{ENUMERATE_LIMIT:,}: it can be sampled but not enumerated; narrow the dimensions"
                )
            self._valid = [a for a in self._product() if not self.violations(a)]
        return list(self._valid)

    def size(self) -> int:
        """Number of archs that meet every constraint (enumerates the space)."""
        return len(self.enumerate())

    def sample(self, rng: np.random.Generator | int | None = None) -> Arch:
        """One arch drawn uniformly from the space."""
        return self.sample_many(1, rng)[0]

    def sample_many(
        self,
        n: int,
        rng: np.random.Generator | int | None = None,
        *,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> list[Arch]:
        """Up to `n` distinct archs drawn uniformly, skipping arch ids in `exclude` (fewer if the space runs out)."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        if self.enumerable():
            pool = [a for a in self.enumerate() if a.arch_id not in exclude]
            if not pool and not exclude:
                self.check_nonempty()
            idx = rng.permutation(len(pool))[:n]
            return [pool[i] for i in idx]
        out: dict[str, Arch] = {}
        for _ in range(max(10_000, 200 * n)):
            arch = self.arch({d.name: d.values[rng.integers(len(d.values))] for d in self.dimensions})
            if arch.arch_id not in exclude and arch.arch_id not in out and not self.violations(arch):
                out[arch.arch_id] = arch
                if len(out) == n:
                    break
        if not out and not exclude:
            raise SearchError(
                f"search space {self.name!r}: no valid arch found in {max(10_000, 200 * n)} random draws; "
                "the constraints leave (almost) nothing, relax them or narrow the dimensions"
            )
        return list(out.values())

    def check_nonempty(self) -> None:
        """Raise SearchError naming the constraint(s) that leave the space empty (found by relaxing each in turn)."""
        if self.enumerable():
            if self.enumerate():
                return
        else:
            try:
                self.sample_many(1, 0)
                return
            except SearchError:
                pass
        culprits = []
        for name in [*self.constraints.active(), "allowed"]:
            if name == "allowed":
                if self.allowed is None:
                    continue
                relaxed = self.replace(allowed=None)
            else:
                relaxed = self.with_constraints(**{name: None})
            try:
                nonempty = (
                    bool(relaxed.enumerate()) if relaxed.enumerable() else bool(relaxed.sample_many(1, 0))
                )
            except SearchError:
                nonempty = False
            if nonempty:
                value = (
                    "the allowed set" if name == "allowed" else f"{name}={getattr(self.constraints, name)}"
                )
                culprits.append(value)
        counts: Counter[str] = Counter()
        for arch in itertools.islice(self._product(), 20_000):
            v = self.violations(arch)
            if v:
                counts[v[0].split(":")[0]] += 1
        why = ", ".join(f"{k} ({n})" for k, n in counts.most_common(3))
        if culprits:
            raise SearchError(
                f"search space {self.name!r} is empty: constraint {' or '.join(culprits)} rules out every arch; "
                f"relax it (first rule broken, by count: {why})"
            )
        raise SearchError(
            f"search space {self.name!r} is empty and relaxing any single constraint does not help; "
            f"first rule broken, by count: {why}. Check the dimensions (e.g. hidden sizes divisible by the heads)"
        )

    # ---------------------------------------------------------------------------------------------- encoding
    @property
    def encoding_dim(self) -> int:
        return sum(d.width for d in self.dimensions)

    def encode(self, arch: Arch) -> np.ndarray:
        """`arch` as a vector in [0, 1]^d: numeric dimensions min-max scaled, categorical one-hot, fixed ones dropped."""
        vals = self.values_of(arch)
        out: list[float] = []
        for d in self.dimensions:
            out += d.encode(vals[d.name])
        return np.asarray(out, dtype=np.float64)

    def encode_many(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.stack([self.encode(a) for a in archs]) if archs else np.zeros((0, self.encoding_dim))

    def to_dict(self) -> dict[str, Any]:
        """The space in the YAML schema (round-trips through `kdnas.space.spaces.parse_space`)."""
        cons = {k: v for k, v in dataclasses.asdict(self.constraints).items() if v is not None}
        out: dict[str, Any] = {
            "name": self.name,
            "family": self.family,
            "dimensions": {d.name: d.to_yaml() for d in self.dimensions},
        }
        if cons:
            out["constraints"] = cons
        return out
