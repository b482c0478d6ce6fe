"""Strategy: a learned twin for every profile, with a DQN planning on it; safe, optimistic proposals in a trust region.

For each profile the proposer keeps a learned twin (`surrogate.py`): a Gaussian process of the score over the
parameter grid, with the measured twin (`spec.twin`, and the same twin under its workload's other live conditions,
weighed by the canaries) or a similar stored model as its prior mean, updated from every analysed canary step
(both variants). A proposal is chosen like this:

1. Candidates: the grid points of the trust region, a box of `radius` grid steps around the stable
   configuration in every parameter (several parameters and several steps may move at once). The radius
   starts at `exploration.trustRegionSteps` (twice that with a prior), doubles after a promotion and halves
   after a rollback for a worse canary (as TuRBO does). With a measured twin, the twin's own optimum is a candidate
   wherever it lies, unless the twin's top is a plateau of equal scores (`twin_optimum`).
2. Screening (pessimistic): a candidate whose lower bound (mean − `pessimism` × sd) is worse than the stable
   score by more than `exploration.safetyMarginPct` (of the score's size, or of its objective terms' where they
   cancel near zero), or whose guard metrics' pessimistic bounds degrade by more than their `maxDegradationPct`,
   is never canaried.
3. Choice (optimistic): among the safe candidates that are promising (upper bound, mean + `optimism` × sd,
   above the stable score by at least what a canary can detect), the DQN planner's greedy rollout on the twin
   proposes the best it visits; without the planner (the ablation), the best upper bound.
4. When no candidate is safe and promising the proposer says why (`NoProposal`): `Converged` when no grid
   point's upper bound is better than the stable score by a detectable amount (the run finishes), else
   `NothingSafe` (the run holds and asks again later); it never stops while the twin still sees a better region.

The learned twin and the planner are stored with the model (`keeper`), so a restart or the next run goes on from
them. A new cycle of a continuous run (a trigger fired: the workload shifted, the score degraded, the schedule came)
starts from what the last cycle learned as a prior, not as measurements (`new_cycle`).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from statistics import NormalDist

import numpy as np

from ..canary.protocol import canonical_json
from ..env.twin import Twin
from ..models.profile import ParameterProfileSpec
from ..models.run import (
    ExplorationSettings,
    LearningStatus,
    RunAgentSettings,
    StepRecord,
    TrainingStatus,
    stable_idle,
)
from ..workloads import twin_conditions
from .base import NoProposal, Proposal, ProposalVerdict, Proposer
from .keeper import LearnedKeeper
from .planner import Planner, Surface
from .store import ModelStore
from .surrogate import EnsembleTwin, LearnedTwin, mixture_moments

MAX_CANDIDATES = 20_000
HARM_COST_WITH_TWIN, HARM_COST_WITHOUT_TWIN = 3.0, 1.0  # exploration.harmCostPct when unset (`_harm_cost`)
WORSE = frozenset({"CanaryWorse", "GuardBreached"})
# How the harm cost grows after a canary that was not promoted (`_Profile.caution`, reset by a promotion): a worse
# one taught the learned twin what it is worth, and the twin's posterior already avoids its neighbourhood; an
# inconclusive one that measured better says the neighbourhood is flat. An inconclusive one that measured worse
# taught the twin little (two means within noise) while saying the same as a worse one: nothing near holds an
# improvement a canary can confirm. Its factor was measured (`bench/live_tuning.py`, twin prior, 27 shifts on three
# seed sets, 108 runs): 2 changed nothing; 6 halved the runs with more than one harmful canary (35 -> 17) for 0.002
# of the optimum on average, and without a prior it changed no fraction (docs/tuning-measurements.md).
# With a measured twin a worse canary says more: the twin's predictions hold (calibration 0.2–1.3), so the jump it
# led to is near the optimum, and what it tries next are the small moves around it, each about as likely worse as
# better. Its factor was measured on 38 shift cases (13 shifts on two seed sets, 12 shifts not used before on a
# third; 140 runs): with 2, 44 runs had more than one harmful canary; with 6, 3; with 10, 1. Shifts with at most one
# harmful canary per run on average went from 21 to 37 of 38, for 0.001–0.008 of the optimum on average (one
# shift, hde.link_mbps=50, gave up 0.07: its second small move was the better one). It costs a continuous run's
# next cycle after a shift 0.013 of the optimum on average, with as many harmful canaries (`bench/cycle_shift.py`,
# docs/tuning-measurements.md): there the twin's first small moves fail more often.
# Without a measured twin, an inconclusive canary that measured worse counts as a worse one (2, not 6): there the
# learned twin is overconfident (calibration above 2) and its posterior already counts the canary's measurement, so
# a sixfold cost stopped runs in a steep climb. bench/live_tuning.py, no prior, 2026-12-06 (HDE's twin as measured
# that day: its default at 0.11 of the optimum): seeds 100–131 HDE 0.868 → 0.893 (harmful canaries 3.19 → 3.50), ACP 0.954 →
# 0.956 (4.50 → 4.84); seeds 500–563 HDE 0.876 → 0.900 (3.06 → 3.48), ACP 0.961 → 0.963 (4.16 → 4.48). One run
# had stopped at 0.36 of the optimum after four promotions in a row and one inconclusive canary (−1.7 %, truly
# equal). With 1.5 (as after one that measured better) HDE gains as much and ACP's harm rises to 4.6–5.3; with 3
# HDE's gain is lost on 500–563. PBA, at its optimum, pays for it: 3.0 → 4.7 harmful canaries per run (seeds
# 1200–1247), each truly worse by under 2 %, under a third of GP's and TPE's 19.5–19.7.
CAUTION_AFTER_WORSE, CAUTION_AFTER_FLAT, CAUTION_AFTER_WORSE_WITHIN_NOISE = 2.0, 1.5, 6.0
CAUTION_AFTER_WORSE_WITHIN_NOISE_WITHOUT_TWIN = 2.0
CAUTION_AFTER_WORSE_WITH_TWIN = 10.0
MAX_CAUTION = 64.0
# A measured twin's optimum is a candidate beyond the trust region (`twin_optimum`) unless another grid point
# scores within this fraction of it. The trust region keeps the first jump near the default; where the twin's
# optimum lies further (ACP: quorum 15 from 7), the run reached it only if its first jumps happened to head there.
# bench/live_tuning.py, twin prior (`ours_no_dqn_twin_prior`), 45 shift cases on seeds 51–54/61–64, 71–73, 91–93
# and again on 301–303: ACP's fraction of the live optimum rose in all 15 single shifts on both (acp.loss=0.1
# 0.925 → 1.000) and in two of three pairs (the third 0.977 → 0.961, then 0.945 → 0.961); shifts meeting both
# targets 37 → 38 and 36 → 38; no run with more than one harmful canary (one before); unshifted ACP 0.973 → 0.985
# (seeds 100–115). With ties counted as an optimum, unshifted HDE fell 0.921 → 0.880: its twin's top is a plateau
# (link-limited), and the arbitrary argmax lay at 0.84 of the live optimum.
TWIN_OPTIMUM_TIE = 0.001
# Without a measured twin, the safety margin narrows to at most MARGIN_NEAR_A_TOP_PCT while the last promotion
# gained less than SMALL_PROMOTION (relative score, as the learned twin puts it once the canary is measured): a small
# gain says the run is near a top, where a candidate far below the stable score is not worth its risk; a large one
# says it is still climbing, where the first moves are uncertain by tens of per cent and the wide margin is what lets
# them through. Where nothing is worth a canary within the narrowed margin, the whole one applies: the narrowing
# changes which candidate is canaried, never makes a run hold. bench/live_tuning.py, no prior (`ours_no_dqn`),
# 2026-12-07, against the default 50 %: seeds 1200–1271 ACP 0.958 -> 0.964 (4.6 -> 4.5 harmful canaries per run),
# HDE 0.917 -> 0.920 (3.4 either way), PBA 0.991 (4.6); seeds 2000–2023 ACP 0.959 -> 0.966 (4.3 -> 4.1), HDE 0.909
# -> 0.912 (3.6 -> 3.7), PBA 0.991 (4.5); bench/cycle_shift.py without a twin (seeds 61–63) a continuous run's next
# cycle after a shift 0.857 -> 0.897 of the shifted optimum, a new run 0.904 -> 0.922. Narrowed after the run's
# first rollback instead, or throughout, ACP gained as much and HDE fell to 0.894–0.904: its climb goes on after a
# rollback. With 0.1 or 0.4 as the threshold: ACP 0.965 / 0.964, HDE 0.917 / 0.919. With a measured twin the margin
# is as set (not measured there).
MARGIN_NEAR_A_TOP_PCT, SMALL_PROMOTION = 30.0, 0.2


def transfer_prior(profile: ParameterProfileSpec, meta: Mapping) -> Callable[[np.ndarray], np.ndarray] | None:
    """A similar profile's stored learned twin as a prior mean over this profile's grid (mapped by parameter values)."""
    from ..models.space import MetricSpec, ObjectiveTerm, Parameter, TuningSpace

    try:
        theirs = TuningSpace(
            parameters=[Parameter.model_validate(p) for p in meta["space"]],
            metrics=[MetricSpec(name="score")],
            objective=[ObjectiveTerm(metric="score", goal="maximize")],
        )
    except (KeyError, ValueError):
        return None
    other = LearnedTwin(theirs)
    other.restore(meta.get("twin") or {})
    if not other.observations:
        return None
    mine = profile.tuning_space()
    order = [theirs.parameter(p.name) for p in mine.parameters]
    # A choice the other model never had (a profile that gained a codec: its own earlier model is "similar") has no
    # value there to map to; mapped anyway, every proposal raised ValueError and the run was Degraded for good.
    for p, q in zip(mine.parameters, order):
        if p.type == "choice" and not {str(v) for v in p.grid()} <= {str(v) for v in q.grid()}:
            return None

    # Each of this profile's grid indices mapped to theirs, once: mapped point by point (a nearest-value search over
    # the other grid for every parameter of every candidate), a 3001-value parameter took minutes per proposal.
    lookup = [np.array([q.index_of(value) for value in p.grid()], dtype=int) for p, q in zip(mine.parameters, order)]

    def prior(indices: np.ndarray) -> np.ndarray:
        points = np.asarray(indices, dtype=int).reshape(-1, len(lookup))
        mapped = np.stack([table[points[:, j]] for j, table in enumerate(lookup)], axis=1)
        names = [q.name for q in order]
        rearranged = mapped[:, [names.index(p.name) for p in theirs.parameters]]
        return other.predict(rearranged)[0]

    return prior


def twin_prior(twin: Twin) -> Callable[[np.ndarray], np.ndarray]:
    """A measured twin as a prior mean: its score at grid indices (the twin's grid is the profile's)."""
    grid = twin.score_grid()

    def prior(indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=int)
        return grid[tuple(idx.T)]

    return prior


def twin_optimum(twin: Twin) -> tuple[int, ...] | None:
    """The grid point where a measured twin's score is highest, None where that top is a plateau: a second point
    within `TWIN_OPTIMUM_TIE` of it (a score that saturates, as HDE's effective throughput does at the link's
    speed). There the grid's order, not the measurement, picks the argmax, and the trust region holds other
    points of the plateau already."""
    grid = np.asarray(twin.score_grid(), dtype=float)
    flat = np.where(np.isfinite(grid.ravel()), grid.ravel(), -np.inf)  # a point the twin could not score is no top
    if flat.size == 0 or not np.isfinite(flat.max()):
        return None
    best = int(np.argmax(flat))
    if flat.size > 1:
        runner_up = float(np.partition(flat, -2)[-2])
        if runner_up >= flat[best] - TWIN_OPTIMUM_TIE * abs(flat[best]):
            return None
    return tuple(int(i) for i in np.unravel_index(best, grid.shape))


def metric_prior(twin: Twin, m: int) -> Callable[[np.ndarray], np.ndarray]:
    """One metric of a measured twin at grid indices: the prior of that metric's model (guards are screened on it)."""
    grid = twin.means[..., m]

    def prior(indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=int)
        return grid[tuple(idx.T)]

    return prior


@dataclass
class _Profile:
    twin: LearnedTwin
    radius: int
    planner: Planner | None
    learning: LearningStatus = field(default_factory=LearningStatus)
    # Configurations not to propose again this cycle: the stable ones, those canaried (measured or judged) and those
    # the controller declined (in their rollback cooldown). Not a proposal as such: a tick that is lost before its
    # canary starts (its status write failed) asks again, and gets the same configuration.
    tried: set[str] = field(default_factory=set)
    boost: float = 0.0
    caution: float = 1.0  # multiplies the harm cost, reset by a promotion (CAUTION_AFTER_*)
    # The last promotion's gain (relative score, the learned twin's means once its canary is measured): a small one
    # narrows the safety margin (MARGIN_NEAR_A_TOP_PCT). None before the cycle's first promotion.
    last_gain: float | None = None
    learned: list[str] = field(default_factory=list)
    measured_twin: bool = False  # the prior is the profile's measured twin (`spec.twin`)
    # The measured twin's grid optimum, where it is one point (`twin_optimum`): a candidate wherever it lies, beyond
    # the trust region too (`_candidates`).
    twin_top: tuple[int, ...] | None = None
    # The learned twin another model (a similar profile's) or the last cycle gave as the prior, kept with this
    # profile's own model so that a restart rebuilds the same prior: {"space": [...], "twin": {...}, "name": "..."}
    borrowed: dict | None = None
    canary_gap: list[float] = field(default_factory=list)  # canary - stable score of each step of the current canary
    # The canary step observed last and how many observations it added: a step analysed again (inconclusive, or a
    # tick whose status write was lost) measures from the same start, so its new measurement replaces them.
    last_step: tuple[str, int, bool] | None = None  # (the step, observations added, whether it added a canary gap)
    lock: threading.RLock = field(default_factory=threading.RLock)
    pretraining: threading.Thread | None = None
    progress: TrainingStatus | None = None
    planning: threading.Thread | None = None


class LearnedTwinProposer(Proposer):
    def __init__(
        self,
        settings: RunAgentSettings,
        *,
        exploration: ExplorationSettings | None = None,
        prior_twins: Mapping[str, Twin] | None = None,
        twin_source: Callable[[str, ParameterProfileSpec], Twin | None] | None = None,
        planner: str = "dqn",
        deterministic: bool = False,
        models: ModelStore | None = None,
        surrogate: str = "gp",
        significance: float = 0.001,
        analyses: int = 3,
        twin_conditions: bool = True,
    ) -> None:
        self.settings = settings
        # The one-sided z the canary analysis must beat (rollout.significance), and the analyses the last step may
        # have before an inconclusive canary is rolled back (rollout.maxInconclusive): what a canary can confirm.
        self.z = NormalDist().inv_cdf(1.0 - significance)
        self.analyses = max(int(analyses), 1)
        self.exploration = exploration or ExplorationSettings()
        self.prior_twins = dict(prior_twins or {})
        # Measures a profile's twin (`spec.twin`), under the default conditions or (a third argument) others: called
        # in a pretraining thread. With `twin_conditions`, the twin is also measured under every other condition
        # of its workload (`workloads.twin_conditions`), after the first and while the run goes on.
        self.twin_source = twin_source
        self.twin_conditions = twin_conditions
        self.use_planner = planner == "dqn"
        self.deterministic = deterministic
        self.keeper = LearnedKeeper(models, settings)
        self.twin_class = EnsembleTwin if surrogate == "ensemble" else LearnedTwin
        self._profiles: dict[str, _Profile] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    # --- state ----------------------------------------------------------------------------------------------
    def _state(self, name: str, profile: ParameterProfileSpec) -> _Profile:
        with self._lock:
            state = self._profiles.get(name)
            if state is None or state.twin.space.space_hash() != profile.space_hash():
                state = self._new_state(name, profile)
                self._profiles[name] = state
            return state

    def _new_state(self, name: str, profile: ParameterProfileSpec) -> _Profile:
        """The profile's learned twin: from its stored model, else with the measured twin or a similar model as prior."""
        space = profile.tuning_space()
        base = self.exploration.trust_region_steps
        planner = Planner(len(space.parameters), self.settings) if self.use_planner else None
        state = _Profile(self.twin_class(space), base, planner)
        twin = self.prior_twins.get(name)
        if isinstance(twin, tuple):  # (a prior mean over the grid, what it is): a caller's own prior
            state.twin.prior, state.twin.prior_name = twin
            state.radius = base * 2
        elif isinstance(twin, list):  # [(conditions, twin), ...]: the nominal twin ({}) and the others
            self._use_twin(state, twin[0][1])
            for conditions, other in twin[1:]:
                self._add_condition(state, conditions, other)
        elif twin is not None:
            self._use_twin(state, twin)
        stored = self.keeper.load(name, profile, state.learning)
        if stored is not None:
            meta, checkpoint = stored
            borrowed = meta.get("borrowed")
            if twin is None and profile.twin is None and borrowed:
                self._borrow(state, profile, borrowed)
            state.twin.restore(meta.get("twin") or {})
            state.twin.prior_name = meta.get("twin", {}).get("prior") or state.twin.prior_name
            state.radius = int(meta.get("radius", state.radius))
            state.caution = float(meta.get("caution", 1.0))
            last_gain = meta.get("lastGain")
            state.last_gain = None if last_gain is None else float(last_gain)
            state.canary_gap = [float(g) for g in meta.get("canaryGap") or []]  # a restart mid-canary keeps its steps
            last_step = meta.get("lastStep")
            state.last_step = (str(last_step[0]), int(last_step[1]), bool(last_step[2])) if last_step else None
            state.learned = [str(k) for k in meta.get("learned") or []]
            state.learning.samples = int(meta.get("samples", 0))
            if planner is not None:
                planner.restore(checkpoint)
        elif twin is None and profile.twin is None:
            similar = self.keeper.similar(name, profile)
            if similar is not None:
                meta, description = similar
                self._borrow(state, profile, {"space": meta["space"], "twin": meta.get("twin"), "name": description})
        state.learning.prior = state.twin.prior_name
        return state

    def _borrow(self, state: _Profile, profile: ParameterProfileSpec, borrowed: dict) -> None:
        """Another learned twin (a similar profile's, or this profile's last cycle) as the prior mean."""
        prior = transfer_prior(profile, borrowed)
        if prior is None:
            return
        state.twin.prior, state.twin.prior_name = prior, str(borrowed.get("name") or "a stored learned twin")
        state.twin._model = None
        state.borrowed = {
            "space": borrowed["space"],
            "twin": _observations_only(borrowed.get("twin")),
            "name": state.twin.prior_name,
        }
        state.radius = max(state.radius, self.exploration.trust_region_steps * 2)

    def _use_twin(self, state: _Profile, twin: Twin) -> None:
        state.twin.prior = twin_prior(twin)
        state.twin.metric_priors = {name: metric_prior(twin, m) for m, name in enumerate(twin.metric_names)}
        state.twin.prior_name = f"measured {twin.provenance.get('workload', '')} twin".replace("  ", " ")
        state.measured_twin = True
        state.twin_top = twin_optimum(twin)
        state.twin._model = None
        state.radius = max(state.radius, self.exploration.trust_region_steps * 2)
        state.learning.prior = state.twin.prior_name

    @staticmethod
    def _add_condition(state: _Profile, conditions: Mapping[str, object], twin: Twin) -> None:
        """The twin measured under other live conditions joins the learned twin's family of priors."""
        metrics = {name: metric_prior(twin, m) for m, name in enumerate(twin.metric_names)}
        state.twin.add_condition(_condition_label(conditions), twin_prior(twin), metrics)

    def _save(self, name: str, profile: ParameterProfileSpec, state: _Profile) -> None:
        if state.planner is None:
            return
        meta = {
            "twin": state.twin.state(),
            "radius": state.radius,
            "caution": state.caution,
            "lastGain": state.last_gain,
            "canaryGap": state.canary_gap,
            "lastStep": None if state.last_step is None else list(state.last_step),
            "learned": state.learned,
            "borrowed": state.borrowed,
            "samples": state.learning.samples,
        }
        self.keeper.save(name, profile, meta, state.planner.agent, state.learning)

    def close(self) -> None:
        self._closed.set()

    # --- the Proposer hooks ------------------------------------------------------------------------------------
    def observe(self, profile_name, profile, stable, canary, step: StepRecord) -> None:
        state = self._state(profile_name, profile)
        with state.lock:
            # At 100 % the stable variant gets no work: its measurement is the step before's, already added.
            measured_now = (
                [(canary, step.canary)] if stable_idle(step.weight) else [(stable, step.stable), (canary, step.canary)]
            )
            key = f"{canonical_json(stable)}|{canonical_json(canary)}|{step.index}|{step.weight}"
            if state.last_step is not None and state.last_step[0] == key:  # the same step, analysed again
                _, added, gap = state.last_step
                state.twin.retract(added)
                if gap:
                    state.canary_gap.pop()
            before = len(state.twin.observations)
            for config, measured in measured_now:
                state.twin.add(config, measured.score, measured.score_std, measured.n, measured.metrics)
            state.tried.add(canonical_json(canary))  # measured: tried (a verdict may never come, e.g. an abort)
            gap = step.stable.score is not None and step.canary.score is not None
            if gap:
                state.canary_gap.append(step.canary.score - step.stable.score)
            state.last_step = (key, len(state.twin.observations) - before, gap)
            self._save(profile_name, profile, state)

    def propose(self, profile_name, profile, stable) -> Proposal | NoProposal | None:
        state = self._state(profile_name, profile)
        with state.lock:
            state.tried.add(canonical_json(stable))
            return self._choose(state, profile, dict(stable))

    def decline(self, profile_name, profile, config) -> None:
        state = self._state(profile_name, profile)
        with state.lock:
            state.tried.add(canonical_json(config))

    def learn(self, profile_name, profile, verdict: ProposalVerdict) -> None:
        state = self._state(profile_name, profile)
        with state.lock:
            key = verdict.key or f"#{verdict.number}"
            if key in state.learned:
                return
            state.learned = (state.learned + [key])[-200:]
            state.tried.add(canonical_json(verdict.proposed))
            limit = int(max(state.twin.sizes))
            measured_worse = bool(state.canary_gap) and float(np.mean(state.canary_gap)) < 0.0
            state.canary_gap, state.last_step = [], None
            if verdict.promoted:
                state.radius = min(state.radius * 2, limit)
                state.caution = 1.0
                state.last_gain = self._promotion_gain(state, verdict)
            elif verdict.reason in WORSE:
                state.radius = max(state.radius // 2, 1)
                factor = CAUTION_AFTER_WORSE_WITH_TWIN if state.measured_twin else CAUTION_AFTER_WORSE
                state.caution = min(state.caution * factor, MAX_CAUTION)  # the optimum is near
            elif verdict.reason == "Inconclusive":  # no difference the canary could confirm
                within_noise = (
                    CAUTION_AFTER_WORSE_WITHIN_NOISE
                    if state.measured_twin
                    else CAUTION_AFTER_WORSE_WITHIN_NOISE_WITHOUT_TWIN
                )
                factor = within_noise if measured_worse else CAUTION_AFTER_FLAT
                state.caution = min(state.caution * factor, MAX_CAUTION)
            state.learning.samples += 1
            if state.planner is not None:
                surface = self._surface(state, profile, dict(verdict.proposed if verdict.promoted else verdict.stable))
                if surface is not None:
                    twin = state.twin
                    action = _first_move(twin.index_of(verdict.stable), twin.index_of(verdict.proposed))
                    state.planner.remember(
                        surface, twin.index_of(verdict.stable), action, verdict.reward, twin.index_of(verdict.proposed)
                    )
                    self._plan(profile_name, profile, state, surface)
            self._save(profile_name, profile, state)

    def learning_status(self, profile_name, profile) -> LearningStatus:
        state = self._state(profile_name, profile)
        learning = state.learning.model_copy()
        learning.observations = state.twin.size
        learning.trust_region_steps = state.radius
        learning.prediction_checks = len(state.twin.surprises)
        calibration = state.twin.calibration
        learning.calibration = None if calibration is None else round(calibration, 3)
        learning.gradient_updates = state.planner.gradient_updates if state.planner is not None else 0
        learning.resembles = state.twin.resembles
        learning.twin_conditions = len(state.twin.family) or (1 if state.measured_twin else None)
        learning.twin_condition_failures = list(state.learning.twin_condition_failures)
        return learning

    def pretrain(self, profile_name, profile) -> TrainingStatus | None:
        """Measure the profile's twin (`spec.twin`) in the background, once: it becomes the learned twin's prior.

        Then, in the same thread but without holding the run (the first proposal needs only the twin, and a canary
        takes minutes), the same twin under each other live condition of its workload (`workloads.twin_conditions`):
        each joins the learned twin's family as it is measured, and the learned twin weighs them by how well they
        explain the canaries (`status.learning[p].resembles`, `twinConditions`)."""
        if profile.twin is None or self.twin_source is None or profile_name in self.prior_twins:
            return None
        state = self._state(profile_name, profile)
        if state.pretraining is None:
            state.progress = TrainingStatus(
                episodes=0, episodes_total=1, message=f"measuring the {profile.twin} twin (cached after the first time)"
            )
            variations = twin_conditions(profile.twin) if self.twin_conditions else []

            def measure() -> None:
                try:
                    twin = self.twin_source(profile_name, profile)
                    if twin is not None and not self._closed.is_set():
                        with state.lock:
                            self._use_twin(state, twin)
                    others = f"; measuring it under {len(variations)} other conditions" if twin and variations else ""
                    state.progress = state.progress.model_copy(
                        update={"episodes": 1, "message": f"prior: {state.twin.prior_name}{others}"}
                    )
                except Exception as error:  # the learned twin goes on without a prior, visibly
                    state.progress = state.progress.model_copy(
                        update={
                            "failed": True,
                            "message": f"measuring the twin failed ({type(error).__name__}: {error}); "
                            "learning from canaries alone",
                        }
                    )
                    return
                if twin is not None:
                    self._measure_conditions(profile_name, profile, state, variations)

            state.pretraining = threading.Thread(target=measure, name=f"twin-{profile_name}", daemon=True)
            state.pretraining.start()
        return state.progress.model_copy() if state.progress else None

    def _measure_conditions(self, name: str, profile: ParameterProfileSpec, state: _Profile, variations) -> None:
        """The twin under each other condition, one after the other; one that fails is left out, and said."""
        for conditions in variations:
            if self._closed.is_set():
                return
            try:
                other = self.twin_source(name, profile, conditions)
            except Exception as error:  # one condition fewer to compare with; the rest still count
                failure = f"{_condition_label(conditions)}: {type(error).__name__}: {error}"
                state.learning.twin_condition_failures.append(failure)
                continue
            if other is not None:
                with state.lock:
                    self._add_condition(state, conditions, other)

    def set_exploration(self, profile_name, profile, rate) -> None:
        self._state(profile_name, profile).boost = rate

    def new_cycle(self, profile_name, profile) -> None:
        """A trigger fired (the workload shifted, the score degraded, a schedule): what the learned twin measured
        may no longer hold. The cycle's measurements become the prior of the next (its shape, which the new
        canaries rescale or overrule: `LearnedTwin`'s a·prior + b and the kernel's misfit), and the next starts
        with no measurements and no caution. Kept as measurements, the stable configuration's old samples outweigh
        its new ones, and the cycle held for good on a surface that was not there any more (`bench/cycle_shift.py`:
        no canary in any case before). With a measured twin (`spec.twin`) the twin stays the prior and weighs its
        conditions anew."""
        state = self._state(profile_name, profile)
        with state.lock:
            state.tried.clear()
            state.radius = max(state.radius, self.exploration.trust_region_steps)
            twin = state.twin
            if twin.observations:
                if not state.measured_twin and profile.twin is None:
                    self._borrow(
                        state,
                        profile,
                        {
                            "space": [p.dump() for p in profile.parameters],
                            "twin": twin.state(),
                            "name": f"the learned twin of the last cycle ({twin.size} observations)",
                        },
                    )
                twin.forget_measurements()
            state.caution, state.canary_gap, state.last_step, state.last_gain = 1.0, [], None, None
            state.learning.prior = twin.prior_name
            self._save(profile_name, profile, state)

    # --- choosing ------------------------------------------------------------------------------------------
    def _assess(self, state: _Profile, profile: ParameterProfileSpec, indices: np.ndarray, stable_index, wide=False):
        """At `indices`: the value of canarying each (expected improvement minus the cost of a likely harmful
        canary, in relative score), whether its pessimistic bounds are safe, and the stable score and gain."""
        twin, x = state.twin, self.exploration
        # In the twin's working units (relative score, or its log): the posterior is normal there (a mixture of
        # normals under a twin family: the expectations below are the weighted sums over its members).
        full = twin.mixture(np.vstack([indices, np.array(stable_index)[None, :]]), stable_index)
        stable_w = float(sum(w * m[-1] for w, m, _ in full))
        parts = [(w, m[:-1], np.maximum(s[:-1], 1e-12)) for w, m, s in full]
        mean_w, sd_w = mixture_moments(parts)
        stable_mean = float(twin.from_working(stable_w))
        reference = max(abs(stable_mean), 1e-12)
        gain = self._gain(state, profile, stable_mean)
        # Optimistic: the improvement a canary can confirm, expected under the twin's posterior (relative score).
        per_unit = 1.0 if twin.log else (twin.scale or 1.0) / reference
        threshold = float(twin.to_working(stable_mean + gain))
        improvement, worse = np.zeros(len(mean_w)), np.zeros(len(mean_w))
        for weight, m, s in parts:
            improvement += weight * _expected_improvement(m, s, threshold) * per_unit
            worse += weight * 0.5 * (1.0 + _erf((stable_w - m) / (s * math.sqrt(2.0))))
        value = improvement - self._harm_cost(state) / 100.0 * state.caution * worse
        # Pessimistic: the lower bound within the margin, and every guard's pessimistic bound within its tolerance.
        # The margin is a share of the stable score's size, or of its objective terms' where they cancel near zero
        # (ACP under heavy message loss: a score of 0.004 made of 0.2-sized terms), so it never shrinks to nothing;
        # where the score and its terms are all zero (a success rate of 0), the size of the scores measured elsewhere:
        # a margin of nothing held such a run for good, every candidate's lower bound being below zero.
        size = max(reference, profile.objective_magnitude(twin.metrics_measured(stable_index)))
        if size <= 1e-12:
            size = twin.scale or size
        margin = self._margin(state, wide)
        floor = stable_mean - size * margin / 100.0
        pessimistic_w = mean_w - x.pessimism * sd_w
        safe = (
            pessimistic_w >= float(twin.to_working(floor)) if floor > 0 or not twin.log else np.ones(len(mean_w), bool)
        )
        mean, sd = twin.predict(indices)
        pessimistic = twin.from_working(pessimistic_w)
        for guard in profile.guards:
            change = twin.metric_change(guard.metric, indices, stable_index)
            if change is not None:  # the measured twin knows this metric
                relative, relative_sd = change
                worse_by = -relative if guard.goal == "maximize" else relative
                # Expected to keep within the guard's own tolerance (a breach rolls the canary back for sure),
                # and pessimistically within the tolerance plus the margin (as where only canaries measured it).
                safe &= worse_by * 100.0 <= guard.max_degradation_pct
                safe &= (
                    worse_by + x.pessimism * relative_sd
                ) * 100.0 <= guard.max_degradation_pct + x.safety_margin_pct
                continue
            modelled = twin.metric(guard.metric, np.vstack([indices, np.array(stable_index)[None, :]]))
            if modelled is None:
                continue
            g_mean, g_sd = modelled
            level = float(g_mean[-1])
            bound = (
                g_mean[:-1] - x.pessimism * g_sd[:-1]
                if guard.goal == "maximize"
                else g_mean[:-1] + x.pessimism * g_sd[:-1]
            )
            degradation = (level - bound if guard.goal == "maximize" else bound - level) / max(abs(level), 1e-12)
            # Learned from canaries alone, a guard's model is uncertain wherever nothing was measured: the score's
            # safety margin is added to its tolerance (a breach is caught at the first step anyway).
            safe &= degradation * 100.0 <= guard.max_degradation_pct + x.safety_margin_pct
        return _Assessment(mean, sd, value, worse, pessimistic, safe, stable_mean, gain, floor, margin)

    def _margin(self, state: _Profile, wide: bool = False) -> float:
        """`exploration.safetyMarginPct`, narrowed to at most MARGIN_NEAR_A_TOP_PCT where the last promotion gained
        little and no measured twin is the prior, unless `wide` (nothing is worth a canary within the narrowed one)."""
        near_a_top = not state.measured_twin and state.last_gain is not None and state.last_gain < SMALL_PROMOTION
        full = self.exploration.safety_margin_pct
        return min(full, MARGIN_NEAR_A_TOP_PCT) if near_a_top and not wide else full

    @staticmethod
    def _promotion_gain(state: _Profile, verdict: ProposalVerdict) -> float | None:
        """How much better the promoted configuration is than the one it replaced, relative, as the learned twin
        puts it now that the canary's measurements are in (its samples, not one step's mean)."""
        twin = state.twin
        if not twin.observations:
            return None
        mean, _ = twin.predict(np.array([twin.index_of(verdict.proposed), twin.index_of(verdict.stable)]))
        return (float(mean[0]) - float(mean[1])) / max(abs(float(mean[1])), 1e-12)

    def _harm_cost(self, state: _Profile) -> float:
        """`exploration.harmCostPct`, else 3 with a measured twin and 1 without. With the twin (and the same twin
        under its workload's other conditions) the learned twin's predictions hold (calibration 0.2–1.3 in
        `bench/live_tuning.py`), so a higher cost gives up little of the optimum and halves the harmful canaries
        under most shifts; without one they are overconfident (calibration above 2) and 3 stops the climb early
        (`docs/concepts.md` has the measurements)."""
        if self.exploration.harm_cost_pct is not None:
            return self.exploration.harm_cost_pct
        return HARM_COST_WITH_TWIN if state.measured_twin else HARM_COST_WITHOUT_TWIN

    def _gain(self, state: _Profile, profile: ParameterProfileSpec, stable_mean: float) -> float:
        """The improvement a canary can confirm: z (of the analysis' significance) standard errors of the difference
        of the two means the last step compares, and at least `exploration.minGainPct`. A smaller improvement is
        rolled back as not significant whatever it is, so the twin does not count on it.

        At the last step (100 %) the stable variant gets no work: its mean is the step before's, n samples (one
        analysis interval: the median of the measurements'), while the canary's window grows over up to
        `analyses` analyses (`rollout.maxInconclusive`), k·n samples: the difference's standard error is
        σ·√(1/n + 1/(k·n))."""
        noise = state.twin.noise_std()
        counts = [o.n for o in state.twin.observations]
        n = float(np.median(counts)) if counts else 10.0
        spread = math.sqrt((1.0 + 1.0 / self.analyses) / max(n, 2.0))
        detectable = self.z * noise * spread if noise is not None else 0.01 * abs(stable_mean)
        return max(detectable, self.exploration.min_gain_pct / 100.0 * abs(stable_mean))

    def _candidates(self, state: _Profile, stable_index: tuple[int, ...], radius: int) -> np.ndarray:
        sizes = state.twin.sizes
        ranges = [range(max(0, s - radius), min(n - 1, s + radius) + 1) for s, n in zip(stable_index, sizes)]
        count = math.prod(len(r) for r in ranges)
        if count <= MAX_CANDIDATES:
            grid = np.array(list(itertools.product(*ranges)), dtype=int)
        else:
            rng = np.random.default_rng(len(state.twin.observations))
            grid = np.stack([rng.integers(r.start, r.stop, MAX_CANDIDATES) for r in ranges], axis=1)
            steps = [
                tuple(s + d if k == j else s for k, s in enumerate(stable_index))
                for j in range(len(sizes))
                for d in (-1, 1)
            ]
            grid = np.vstack([grid, np.array([s for s in steps if all(0 <= i < n for i, n in zip(s, sizes))])])
        if state.twin_top is not None:  # the measured twin's own optimum, wherever it lies
            grid = np.vstack([grid, np.array(state.twin_top, dtype=int)[None, :]])
        keep = [tuple(row) != tuple(stable_index) for row in grid]
        return np.unique(grid[keep], axis=0)

    def _surface(self, state: _Profile, profile: ParameterProfileSpec, stable: dict) -> Surface | None:
        if not state.twin.observations:
            return None
        stable_index = state.twin.index_of(stable)

        def evaluate(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            a = self._assess(state, profile, np.asarray(indices, dtype=int), stable_index)
            return a.mean + a.sd, a.safe  # the planner climbs the optimistic surface, refused where unsafe

        surface = Surface(state.twin.sizes, stable_index, state.radius, evaluate, state.twin.scale or 1.0)
        surface.preload(
            np.vstack([self._candidates(state, stable_index, state.radius), np.array(stable_index)[None, :]])
        )
        return surface

    def _plan(self, name: str, profile: ParameterProfileSpec, state: _Profile, surface: Surface) -> None:
        """Dyna updates on the learned twin: at once (deterministic: the bench), else in a background thread with
        a bounded time, so the operator's reconcile never waits; the next proposal uses what it learned."""
        assert state.planner is not None
        updates, seconds = self.settings.planning_updates, self.settings.planning_seconds
        if self.deterministic:
            state.planner.train(surface, updates, None)
            return
        if state.planning is not None and state.planning.is_alive():
            return  # still planning on the previous verdict: the next verdict plans again

        def plan() -> None:
            with state.lock:
                state.planner.train(surface, updates, seconds)
                self._save(name, profile, state)

        state.planning = threading.Thread(target=plan, name=f"plan-{name}", daemon=True)
        state.planning.start()

    def _choose(self, state: _Profile, profile: ParameterProfileSpec, stable: dict) -> Proposal | NoProposal:
        twin = state.twin
        stable_index = twin.index_of(stable)
        if not twin.observations and twin.prior is None:
            return self._first_step(state, profile, stable)
        # Raised exploration (no promotion for a while) looks further afield, never at riskier candidates.
        radius = state.radius * (2 if state.boost > 0 else 1)
        limit = int(max(twin.sizes))
        first, wide = radius, False
        while True:
            candidates = self._candidates(state, stable_index, radius)
            a = self._assess(state, profile, candidates, stable_index, wide)
            fresh = np.array([canonical_json(twin.config_at(i)) not in state.tried for i in candidates])
            eligible = (a.value > 0) & a.safe & fresh
            if not eligible.any() and radius >= limit and not wide and self._margin(state) < self._margin(state, True):
                radius, wide = first, True  # nothing within the narrowed margin: the whole one, rather than a hold
                continue
            if eligible.any() or radius >= limit:
                break
            radius = min(radius * 2, limit)  # nothing worth it nearby: look further out (the region grows)
        if state.planner is not None:
            candidates, a, fresh, eligible, from_planner = self._with_rollout(
                state, profile, stable, radius, candidates, a, fresh, eligible, wide
            )
        if not eligible.any():
            return self._nothing(state, profile, stable, a, candidates, fresh)
        pick = int(np.argmax(np.where(eligible, a.value, -np.inf)))
        how = "the largest expected gain net of harm"
        if state.planner is not None:
            how += (
                f" (found by the DQN's rollout on the learned twin, outside the {len(candidates) - from_planner.sum()}"
                " candidates screened directly)"
                if from_planner[pick]
                else ", among the screened candidates and the DQN's rollout"
            )
        beyond = max(abs(int(c) - int(s)) for c, s in zip(candidates[pick], stable_index)) > radius
        where = f"the measured twin's optimum, beyond ±{radius} step(s)" if beyond else f"within ±{radius} step(s)"
        config = twin.config_at(candidates[pick])
        twin.expect(candidates[pick])
        # A stable score of zero (nothing succeeds yet; up to float noise) has no relative change: the expected score.
        zero = abs(a.stable) <= 1e-9 * max(abs(float(a.mean[pick])), twin.scale or 0.0)
        expected = None if zero else (float(a.mean[pick]) - a.stable) / abs(a.stable) * 100.0
        better = 1.0 - float(a.worse[pick])
        gain = f"{expected:+.2f} %" if expected is not None else f"a score of {float(a.mean[pick]):.4g}"
        return Proposal(
            config=config,
            expected_improvement_pct=None if expected is None else round(expected, 3),
            confidence=round(better, 4),
            reason=(
                f"learned twin ({twin.size} observations, prior: {twin.prior_name}): {how} {where}; "
                f"expected {gain}, better with probability {better:.0%}, pessimistic bound "
                f"{float(a.pessimistic[pick]):.4g} vs stable {a.stable:.4g}"
            ),
        )

    def _with_rollout(self, state, profile, stable, radius, candidates, a, fresh, eligible, wide=False):
        """Add the configurations the DQN's greedy rollout on the learned twin visits to the candidates.

        Where the trust region is small enough to screen every grid point (`MAX_CANDIDATES`), the rollout adds
        nothing the direct argmax does not already see; in a large space (many parameters, a wide region) the
        screened candidates are a sample, and the rollout, which climbs the twin, finds points outside it."""
        twin = state.twin
        surface = self._surface(state, profile, stable)
        if surface is None:
            return candidates, a, fresh, eligible, np.zeros(len(candidates), bool)
        if state.planner.gradient_updates == 0:
            state.planner.train(
                surface, self.settings.planning_updates, None if self.deterministic else self.settings.planning_seconds
            )
        stable_index = twin.index_of(stable)
        path = state.planner.rollout(surface, steps=2 * radius * len(stable_index) + 2)
        known = {tuple(c) for c in candidates}
        extra = np.array(
            [
                p
                for p in dict.fromkeys(path)
                if p not in known
                and tuple(p) != tuple(stable_index)
                and all(abs(i - s) <= radius for i, s in zip(p, stable_index))
            ],
            dtype=int,
        )
        if not len(extra):
            return candidates, a, fresh, eligible, np.zeros(len(candidates), bool)
        b = self._assess(state, profile, extra, stable_index, wide)  # screened as the others were
        fresh_b = np.array([canonical_json(twin.config_at(i)) not in state.tried for i in extra])
        # The per-candidate arrays joined; the rest (the stable score, the floor and the margin) is the same for both.
        # Found by their type rather than listed, so a field added later is joined too (a list lost two, once).
        per_candidate = [f.name for f in fields(a) if isinstance(getattr(a, f.name), np.ndarray)]
        merged = replace(a, **{name: np.concatenate([getattr(a, name), getattr(b, name)]) for name in per_candidate})
        from_planner = np.concatenate([np.zeros(len(candidates), bool), np.ones(len(extra), bool)])
        return (
            np.vstack([candidates, extra]),
            merged,
            np.concatenate([fresh, fresh_b]),
            np.concatenate([eligible, (b.value > 0) & b.safe & fresh_b]),
            from_planner,
        )

    def _first_step(self, state: _Profile, profile: ParameterProfileSpec, stable: dict) -> Proposal | NoProposal:
        """Nothing measured and no prior: the smallest move there is, one step of one parameter, to start learning."""
        # Seeded by the verdicts learned, not by the calls: asked again before its canary (a lost tick), the same move.
        rng = np.random.default_rng(self.settings.seed + 1 + state.learning.samples)
        moves = [(p, d) for p in profile.parameters for d in (1, -1)]
        rng.shuffle(moves)
        for parameter, direction in moves:
            config = dict(stable)
            config[parameter.name] = parameter.move(stable[parameter.name], direction)
            if canonical_json(config) not in state.tried:
                return Proposal(
                    config=config, reason=f"learned twin: nothing measured yet; one step of {parameter.name}"
                )
        return NoProposal("Converged", "every neighbour of the stable configuration was tried", final=True)

    def _nothing(self, state, profile, stable, a: _Assessment, candidates, fresh) -> NoProposal:
        twin = state.twin
        worth = (a.value > 0) & fresh
        if not worth.any():
            return NoProposal("Converged", self._converged(state, a, candidates, fresh), final=True)
        top = int(np.argmax(np.where(worth, a.value, -np.inf)))
        return NoProposal(
            "NothingSafe",
            f"the learned twin sees configurations worth trying (e.g. {canonical_json(twin.config_at(candidates[top]))}: "
            f"{a.mean[top]:.4g} ± {a.sd[top]:.2g} vs stable {a.stable:.4g}), but none whose pessimistic bound stays "
            f"within {_figure(a.margin)} % of the stable score (above {a.floor:.4g}); holding",
        )

    def _converged(self, state: _Profile, a: _Assessment, candidates, fresh) -> str:
        """Why the run stops, in terms a user can act on: the harm cost in effect (the run's, raised by the canaries
        since the last promotion), the least improvement a canary confirms, the best configuration not canaried yet
        and its odds, how many it expects better were canaried already (each is canaried once), and, where any is left
        untried, the knob."""
        twin, cost = state.twin, self._harm_cost(state)
        raised = f" ({_figure(cost)} % raised ×{_figure(state.caution)} by the canaries since the last promotion)"
        message = (
            f"the learned twin ({twin.size} observations) sees no configuration whose expected gain over the stable "
            f"score {a.stable:.4g} is worth the risk of a worse canary at a harm cost of {_figure(cost * state.caution)} % "
            f"of the score{raised if state.caution > 1.0 else ''}"
        )
        if a.stable:
            message += f"; a canary confirms +{_figure(a.gain / abs(a.stable) * 100.0)} % or more"
        if fresh.any():
            best = int(np.argmax(np.where(fresh, a.mean, -np.inf)))
            message += (
                f"; the best untried, {canonical_json(twin.config_at(candidates[best]))}: {a.mean[best]:.4g} ± "
                f"{a.sd[best]:.2g}, better with probability {1.0 - float(a.worse[best]):.0%}"
            )
        canaried = int(np.sum(~fresh & (a.mean > a.stable)))
        if canaried:
            message += f"; {canaried} configuration(s) it expects better were canaried already (each is canaried once)"
        if fresh.any():  # the one knob that trades the optimum found for harmful canaries (docs/concepts.md)
            message += (
                f"; a lower spec.exploration.harmCostPct ({_figure(cost)} % here) lets a run canary riskier "
                "configurations"
            )
        return message


@dataclass
class _Assessment:
    mean: np.ndarray
    sd: np.ndarray
    value: np.ndarray  # expected relative gain minus harm cost × P(worse)
    worse: np.ndarray  # P(worse than the stable score)
    pessimistic: np.ndarray
    safe: np.ndarray
    stable: float
    gain: float
    floor: float  # the lowest pessimistic score canaried (`margin` % below the stable score)
    margin: float  # the safety margin in effect, in percent (`exploration.safetyMarginPct`, or narrowed: `_margin`)


_erf = np.vectorize(math.erf)


def _expected_improvement(mean: np.ndarray, sd: np.ndarray, threshold: float) -> np.ndarray:
    """E[max(f − threshold, 0)] under the learned twin's normal posterior."""
    sd = np.maximum(sd, 1e-12)
    z = (mean - threshold) / sd
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    return (mean - threshold) * cdf + sd * pdf


def _observations_only(twin: Mapping | None) -> dict:
    """A learned twin's state as a prior needs it: its measurements, not its checks of earlier predictions."""
    twin = twin or {}
    return {"scale": twin.get("scale"), "observations": list(twin.get("observations") or [])}


def _figure(value: float) -> str:
    """Three significant figures without an exponent below a million: 30, 1500, 0.45."""
    return f"{float(f'{value:.3g}'):g}"


def _condition_label(conditions: Mapping[str, object]) -> str:
    """Workload options as they read in the status: `dirty_fraction=0.18`."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in conditions.items())


def _first_move(stable: tuple[int, ...], proposed: tuple[int, ...]) -> int | None:
    """The action (1 + 2j, + 1 for down) of the largest step from `stable` towards `proposed`."""
    deltas = [p - s for s, p in zip(stable, proposed)]
    if not any(deltas):
        return None
    j = int(np.argmax(np.abs(deltas)))
    return 1 + 2 * j + (1 if deltas[j] < 0 else 0)
