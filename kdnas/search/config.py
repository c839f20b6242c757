"""Config section `search`: the search space, strategy, trial budget, reward and multi-fidelity settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

STRATEGIES = ("kdnas", "bo", "tpe", "nsga2", "random")
"""The built-in strategies; `kdnas.search.samplers.register_strategy` adds more."""
OBJECTIVES = ("kd_loss", "latency_ms", "params_m")
STATES_LOSS_SCALE = 4.4
"""Median ratio of the full held-out KD loss to its state terms' part over 25 proxy-distilled archs of
minilm-l6 (docs/benchmarks.md, twenty-second session): `reward_loss_scale`'s default under `proxy_loss: states`."""


@dataclass
class SearchConfig:
    """How student architectures are searched."""

    space: str = "default"
    """`default` (derived from the teacher), `mobilebert`, or a path to a search-space YAML."""
    strategy: str = "kdnas"
    """kdnas (KD-NAS controller), bo (multi-objective Bayesian optimisation), tpe, nsga2 or random."""
    n_trials: int = 16
    """Candidates that get a proxy distillation."""
    episode_size: int = 4
    """Candidates per round (kdnas: per episode, the reward predictor is retrained after each); promotion is per round."""
    pool_factor: int = 8
    """kdnas: the pool sampled each episode is this many times the episode size."""
    epsilon: float = 0.5
    """kdnas: share of each episode filled at random at the start."""
    epsilon_decay: float = 0.7
    """kdnas: epsilon is multiplied by this after each episode."""
    predictor_ensemble: int = 1
    """kdnas: reward predictors per episode. 1: one MLP on every observation (KD-NAS). N > 1: N, the first on
    every observation and the rest on bootstrap resamples, and a pool arch is ranked by their mean minus their
    spread (in log reward), so an arch that only one of them rates high (one far from anything observed) is not
    taken on that extrapolation."""
    reward_alpha: float = -0.5
    """KD-NAS reward exponent on the latency ratio (negative: faster is better)."""
    reward_beta: float = 0.25
    """KD-NAS reward latency target as a fraction of the teacher's latency."""
    reward_loss_scale: float | None = None
    """The KD-NAS reward's quality factor is `exp(-scale x kd_loss)`. None: 4.4 when the search ranks by the
    state terms (`proxy_loss: states`, `quality: kd_loss`), else 1. The state terms' loss is 4.4x smaller than
    the full objective's (median over 25 archs of minilm-l6, 3.5-6.2x), so unscaled it would weigh a quality gap
    4.4x less against the latency factor: in the 7x band the fastest, narrowest archs (L1-H64, L1-H192) got the
    highest rewards. The scale keeps the trade-off the controller had with the full loss."""
    max_params_m: float | None = None
    """Candidates with more parameters (millions) are never distilled."""
    promote_fraction: float = 0.25
    """Multi-fidelity: share of each round promoted to a longer proxy distillation (0 disables)."""
    long_proxy_factor: float = 3.0
    """Multi-fidelity: the long proxy gets this many times the proxy token budget."""
    storage: str | None = None
    """Optuna storage URL (default: SQLite in the run dir, one worker). A database server
    (`postgresql://user:pass@host/db`, `pip install "kdnas[postgres]"`) is shared: any number of workers
    (`kdnas search` / `kdnas run` on other machines) run trials of the one study, with heartbeats telling a dead
    worker's trials from a busy one's (docs/search.md#several-workers-on-one-study)."""
    heartbeat_interval: int = 20
    """Shared storage: seconds between a worker's heartbeats for the trials it is running (0: no heartbeats,
    then only one worker may use the study)."""
    grace_period: int | None = None
    """Shared storage: a running trial whose last heartbeat is older than this many seconds belongs to a dead
    worker; it is completed from its recorded short proxy, or re-queued (None: 3 x heartbeat_interval)."""
    max_retry: int = 3
    """Shared storage: how often a dead worker's trial is re-queued before it is left failed."""
    objectives: list[str] = field(default_factory=lambda: ["kd_loss", "latency_ms"])
    """Objectives of the Optuna study, all minimised: kd_loss, latency_ms, params_m."""
    quality: Literal["kd_loss", "cosine", "recall"] = "kd_loss"
    """What the `kd_loss` objective (and the reward, the promotions, the recommendations) measures of a
    candidate after its proxy distillation: the held-out KD loss, or the gap of its sentence embedding to the
    teacher's on held-out passages, 1 - mean cosine (`cosine`) or 1 - recall@10 (`recall`), computed in the
    same short distillation (the KD loss is then kept in the trial's `heldout_kd_loss`)."""
    proxy_readout: Literal["geomean", "trained", "fitted"] = "geomean"
    """How the held-out KD loss of a proxy distillation reads the student's states into the teacher's space:
    `trained`, through the projections trained with it in the proxy's few steps (kdnas before 2026-12-07);
    `fitted`, through least-squares projections fitted on the held-out split (the best linear read-out);
    `geomean` (default), the geometric mean of the two losses, both kept in the trial (one more held-out pass per
    candidate). Each single read-out is wrong for one kind of width (docs/search.md): `trained` rates students
    of another width than the teacher's too low (after ~20 steps their projections are far from converged),
    `fitted` rates narrow ones too high. On 13 fully distilled models of minilm-l6, Kendall tau against the suite
    0.44 trained / 0.51 fitted / 0.64 geomean (0.61 / 0.52 / 0.73 without BERT-small, wider than the teacher); in
    default runs, for 7x, `trained` picked 1-layer students keeping 92.0-92.3%, `fitted` L1-H320-A5-F960 (91.6%),
    `geomean` L2-H320-A10-F320 (94.8%; 7.3-7.4x in the placement and the export, 6.5x in the final table's
    timing); for 3x `trained` and `geomean` the same L3-H384-A12-F384 (98.1%), `fitted` L5-H256-A8-F512 (95.0%)
    (docs/benchmarks.md, eighteenth session)."""
    proxy_loss: Literal["states", "full"] = "states"
    """Which terms of the held-out KD loss the search ranks by (`quality: kd_loss`): `states` (default), the
    terms on the student's token states (hidden, relation, attention, embedding, logits: those of `distill.losses`
    that pool nothing), or `full`, the whole distillation objective with the sentence-embedding terms (sentence,
    similarity; kdnas before 2026-12-07). Both are kept in the trial. The sentence terms rank students of
    one latency badly: their read-out differs by width (a student narrower than the teacher is read through a
    Dense layer, fitted on the held-out sentences themselves by the `fitted` read-out; one at the teacher's width
    through none), and they weigh 2-4 of a loss of 3-4.5. In the 7x band of minilm-l6 (8 students fully distilled
    and fine-tuned, docs/benchmarks.md, twenty-second session) `full` ranked them against their suite scores with
    Kendall tau -0.07 (its lowest loss, L1-H320-A10-F1280, scored last), `states` with 0.57; over the 19 finals
    inside the search space 0.66 and 0.84. `full` led a default run to a 1-layer 7x student 0.8-1.3 points below
    two 2-layer ones of the band."""
    quality_passages: int = 300
    """Held-out passages the `cosine` / `recall` quality is measured on per candidate."""
    n_startup_trials: int = 6
    """bo, tpe, nsga2: uniform random valid archs evaluated before the strategy's model takes over."""
    latency_margin: float = 0.1
    """A latency-predictor filter rules a candidate out only above the loosest budget times (1 + this)."""
    kd_loss_tolerance: float = 0.0
    """Recommendations: KD losses within this fraction of the best tie, and the fewest parameters wins a tie."""
    baseline_budgets: bool = True
    """With `evaluate.baselines`: add one budget at each hand-made baseline's latency (its speed-up over the
    teacher timed side by side in the latency stage, +-5%), so a searched student is recommended at the same
    latency as each baseline and the comparison is at equal latency."""
    anchors: bool = True
    """Distil first, per latency budget, the deepest student at the teacher's width that fits it (on by default
    since 2026-12-05: in the family headline the every-other-layer shape, L3-H384-A12-F1536, which the 16-trial
    search never tried, had a lower proxy KD loss (2.36 vs 2.82) and full KD loss (1.344 vs 1.604) than the
    L3-H384-A6-F1536 it recommended at that latency, and scored 80.3 against 77.3 on the suite).

    Teacher width, heads and the smallest vocabulary choice, the widest FFN at that depth (by predicted latency):
    such a student inherits the teacher's embeddings and attention unsliced. A random start can miss it: the
    multilingual search (8 trials) tried only narrower students, while L2-H384-F768 (me5-small's width) had a
    lower held-out KD loss (1.200 vs 1.254) than the 3-layer, 256-wide student it recommended."""
    anchor_margin: float = 0.1
    """A plain budget's anchors: the deepest fitting the budget by the latency predictor, and a second one this
    fraction under it (when one fits there), so that the predictor's error (held-out 5-10%, either way) does not
    leave the budget without an anchor inside it. In the base run of 2026-12-06 the 7x anchor L4-H768-A12-F768,
    predicted inside 7x, was timed at 6.5x (most of that miss was a slow reading of the teacher, see
    `target.teacher_readings`); in a family headline the 3x anchor under the margin was timed at 4.0x. 0: one
    anchor, at the edge. Equal-latency bands are anchored inside the band, without a margin."""
    narrow_anchors: bool = True
    """With `anchors`: a plain budget whose only teacher-width anchor has one layer also gets the deepest arch of
    two or more layers at the widest narrower hidden size that fits under its margin (at minilm-l6's 7x:
    L2-H256-A8). At the fast end depth pays more than width: of the 8 archs with a final placed at 6-10.5x on
    minilm-l6 (`benchmarks/data/band_finals-default-21.json`, docs/benchmarks.md, twenty-second session) the
    2-layer ones scored 77.3-79.1 on the suite, the 1-layer ones 75.4-77.4; the search's proxy ranked a 1-layer
    one first, and a 16-trial search's 7x pool may hold no 2-layer student at all (the headline of the
    twenty-third session: its 1-layer pick kept 92.0%). False: teacher-width anchors only."""

    def loss_scale(self) -> float:
        """The reward's scale on the loss (`reward_loss_scale`, its None resolved)."""
        if self.reward_loss_scale is not None:
            return self.reward_loss_scale
        return STATES_LOSS_SCALE if self.proxy_loss == "states" and self.quality == "kd_loss" else 1.0

    def check(self) -> list[str]:
        out = []
        if self.strategy not in STRATEGIES:  # the registry is read only then (it imports optuna)
            from kdnas.search.samplers import known_strategies

            if self.strategy not in known_strategies():
                out.append(f"strategy: {self.strategy!r} is not one of {', '.join(known_strategies())}")
        if self.quality != "kd_loss" and self.quality_passages < 20:
            out.append(f"quality_passages: {self.quality_passages} is too few for a recall@10 (give >= 20)")
        if self.n_trials < 1:
            out.append(f"n_trials: {self.n_trials} must be >= 1")
        if self.heartbeat_interval < 0 or self.max_retry < 0:
            out.append("heartbeat_interval, max_retry: must be >= 0")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            out.append(
                f"grace_period: {self.grace_period} must be longer than heartbeat_interval "
                f"({self.heartbeat_interval}), or null for 3 x heartbeat_interval"
            )
        if self.episode_size < 1 or self.pool_factor < 1:
            out.append("episode_size, pool_factor: must be >= 1")
        if self.predictor_ensemble < 1:
            out.append(f"predictor_ensemble: {self.predictor_ensemble} must be >= 1 (1: one predictor)")
        if not 0 <= self.epsilon <= 1 or not 0 < self.epsilon_decay <= 1:
            out.append("epsilon: must be in [0, 1] and epsilon_decay in (0, 1]")
        if self.reward_alpha >= 0:
            out.append(f"reward_alpha: {self.reward_alpha} must be negative (faster students score higher)")
        if self.reward_loss_scale is not None and self.reward_loss_scale <= 0:
            out.append(f"reward_loss_scale: {self.reward_loss_scale} must be > 0 (or null)")
        if self.reward_beta <= 0:
            out.append(f"reward_beta: {self.reward_beta} must be > 0")
        if self.max_params_m is not None and self.max_params_m <= 0:
            out.append(f"max_params_m: {self.max_params_m} must be > 0")
        if not 0 <= self.promote_fraction < 1:
            out.append(f"promote_fraction: {self.promote_fraction} must be in [0, 1)")
        out += [
            f"objectives: {o!r} is not one of {', '.join(OBJECTIVES)}"
            for o in self.objectives
            if o not in OBJECTIVES
        ]
        if "kd_loss" not in self.objectives or len(set(self.objectives)) != len(self.objectives):
            out.append(
                f"objectives: {self.objectives} must include kd_loss once (e.g. [kd_loss, latency_ms])"
            )
        if self.n_startup_trials < 1:
            out.append(f"n_startup_trials: {self.n_startup_trials} must be >= 1")
        if self.latency_margin < 0:
            out.append(f"latency_margin: {self.latency_margin} must be >= 0")
        if not 0 <= self.anchor_margin < 1:
            out.append(f"anchor_margin: {self.anchor_margin} must be in [0, 1) (a fraction of the budget)")
        if not 0 <= self.kd_loss_tolerance < 1:
            out.append(f"kd_loss_tolerance: {self.kd_loss_tolerance} must be in [0, 1)")
        if self.long_proxy_factor < 1:
            out.append(f"long_proxy_factor: {self.long_proxy_factor} must be >= 1")
        return out
