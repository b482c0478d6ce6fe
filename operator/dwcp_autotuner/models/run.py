"""OptimizationRun: what to tune, how the agent learns, how each proposal is rolled out; and its status.

The status is the run's memory: everything needed to resume a rollout after the operator is
killed (step, weights, the stable bytes the run started from, the action it was about to take)
lives here and in the ConfigMaps, never only in the operator's process.
"""

from __future__ import annotations

import urllib.parse
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .agent import MAX_EPISODES, MAX_STEPS_PER_EPISODE, AgentSettings
from .analysis import AnalysisSettings, Significance
from .base import CamelModel

Mode = Literal["Apply", "Recommend"]


class Phase(StrEnum):
    """Where a run is (`status.phase`). Every change of phase goes through `controller/transitions.py`."""

    PENDING = "Pending"
    PRETRAINING = "Pretraining"
    PROPOSING = "Proposing"
    ROLLING_OUT = "RollingOut"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    UNCHANGED = "Unchanged"  # finished without rolling anything out (every proposal was NoChange or held)
    ABORTED = "Aborted"  # a person aborted it (`autotune.dwcp.io/abort`); a canary that was out was withdrawn
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.UNCHANGED, Phase.ABORTED, Phase.FAILED})

# Annotations a person (or `kubectl autotune`) sets on a run to act on it. Each is acted on once per distinct value
# (any text: a timestamp does), which status.manual records; the same value applied again by GitOps is a no-op.
ANNOTATION_PREFIX = "autotune.dwcp.io/"
PROMOTE_ANNOTATION = ANNOTATION_PREFIX + "promote"  # promote the canary out now (and approve a waiting one)
ABORT_ANNOTATION = ANNOTATION_PREFIX + "abort"  # withdraw the canary out and end the run (phase Aborted)
RETRY_ANNOTATION = ANNOTATION_PREFIX + "retry"  # start a finished, failed or aborted run again

ConditionType = Literal["Ready", "Progressing", "Succeeded", "RolledBack", "Degraded", "WarmStarted", "ModelCompatible"]


class RunAgentSettings(AgentSettings):
    """Agent settings of a run; pretraining budgets are usually far smaller than a local `tune`."""

    strategy: Literal["LearnedTwin", "DQN"] = Field(
        "LearnedTwin",
        description="LearnedTwin: a learned twin of each profile (its measured twin or a similar stored model as "
        "prior), updated from every canary step, with a DQN planning on it. DQN: the earlier agent (pretrained on "
        "the measured twin, or learning online from verdicts alone).",
    )

    episodes: int = Field(
        200, ge=1, le=MAX_EPISODES, description="Pretraining episodes on the profile's twin (when it has one)."
    )
    steps_per_episode: int = Field(100, ge=1, le=MAX_STEPS_PER_EPISODE, description="Steps per pretraining episode.")
    warm_start: str | None = Field(
        None,
        description="Name of a ConfigMap in the run's namespace holding a stored model to start from "
        "(default: the profile's own stored model, `<profile>-model`, when there is one).",
    )
    persist_model: bool = Field(
        True, description="Store the model in `<profile>-model` ConfigMaps after every learning step."
    )
    fine_tune_interval_seconds: int = Field(
        86400, ge=60, description="Fine-tune the policy on the collected samples this often."
    )
    fine_tune_updates: int = Field(200, ge=1, description="Gradient updates of one fine-tuning.")
    planning_updates: int = Field(
        300,
        ge=0,
        le=100_000,
        description="Gradient updates of the planning DQN on the learned twin after each verdict.",
    )
    planning_seconds: float = Field(
        2.0,
        gt=0,
        le=600,
        description="At most this long per verdict for those updates (the operator's reconcile never waits).",
    )
    fine_tune_min_gain_pct: float = Field(
        1.0,
        ge=0,
        description="A fine-tuned policy replaces the deployed one only when better by more than this (twin score or held-out samples).",
    )


class Budget(CamelModel):
    max_proposals: int = Field(5, ge=1, le=1000, description="Stop after this many proposals (promoted or not).")
    deadline_seconds: int | None = Field(
        None, ge=1, description="Stop proposing this many seconds after the run started."
    )
    target_improvement_pct: float | None = Field(
        None, gt=0, description="Stop once the promoted configurations improved the objective by this much in total."
    )


class RolloutSettings(AnalysisSettings):
    """Canary steps and their analysis (the analysis limits are `AnalysisSettings`' fields)."""

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [5, 25, 50, 100],
        min_length=1,
        description="Canary weights in percent (1-100), increasing, ending at 100.",
    )
    analysis_interval_seconds: float = Field(
        600.0,
        ge=0.1,
        description="Seconds the canary runs at each step before it is analysed. It must hold minSamples samples "
        "at the sample spacing (sampleSeconds): the run fails with InvalidSpec when it cannot.",
    )
    sample_seconds: float | None = Field(
        None,
        ge=1,
        description="Spacing of the metric samples in an analysis, and the range `{{window}}` renders to in the queries. "
        "Keep it at least twice Prometheus's scrape interval, or rate() returns nothing. "
        "Default: analysisIntervalSeconds / (2 × minSamples), but never below the operator's --min-sample-seconds "
        "(chart value minSampleSeconds, default 60: twice a 30 s scrape).",
    )
    max_inconclusive: int = Field(
        3,
        ge=1,
        description="Inconclusive analyses (no data, too few samples, not significant) tolerated before on_inconclusive applies.",
    )
    promising_extra_analyses: int = Field(
        0,
        ge=0,
        le=100,
        description="Further inconclusive analyses a canary gets beyond maxInconclusive while it leans better (the "
        "objective's one-sided p-value that it is better is below promisingSignificance, yet the analysis was "
        "inconclusive). The canary's window keeps growing from the step's start (at 100 % against the stable samples "
        "of the step before), so an improvement that maxInconclusive analyses cannot confirm at p < 0.001 may be "
        "confirmed instead of rolled back. Default 0: a "
        "canary lasts at most maxInconclusive analyses per step, as configured (docs/concepts.md measures 3).",
    )
    promising_significance: Significance = Field(
        0.05,
        description="One-sided p-value below which an inconclusive canary leans better (promisingExtraAnalyses).",
    )
    on_inconclusive: Literal["Rollback", "Hold"] = Field(
        "Rollback",
        description="Rollback: restore the stable config. Hold: keep the canary where it is and wait for a human.",
    )
    require_approval: bool = Field(
        False,
        description="A person approves every promotion (Flagger's confirm-promotion): a canary that passed its last "
        "analysis waits at its weight (Progressing=False, AwaitingApproval) until the run is annotated "
        "autotune.dwcp.io/promote=<a new value> (`kubectl autotune promote RUN`). Set to false while a canary waits, "
        "its next analysis decides as if approval had never been asked for.",
    )

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[int]) -> list[int]:
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError("every step must be in (0, 100]")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError("steps must increase")
        if steps[-1] != 100:
            raise ValueError("the last step must be 100")
        return steps


class ExplorationSettings(CamelModel):
    rejected_cooldown_seconds: int = Field(
        86400, ge=0, description="A rolled-back configuration is not proposed again for this long."
    )
    stagnation_proposals: int = Field(
        3, ge=1, description="After this many proposals in a row without a promotion, exploration is raised."
    )
    boost_seconds: int = Field(21600, ge=1, description="How long raised exploration lasts.")
    boost_epsilon: float = Field(0.5, gt=0, le=1, description="Exploration rate while raised.")
    harm_cost_pct: float | None = Field(
        None,
        ge=0,
        le=1000,
        description="What a canary that turns out worse than the stable configuration costs, in percent of the score: "
        "a candidate is canaried only when the improvement the learned twin expects exceeds this times its "
        "probability of being worse (0: every promising candidate). Higher: fewer harmful canaries, an earlier stop. "
        "Unset: 3 for a profile with a measured twin (`spec.twin`), whose predictions hold, 1 without; "
        "docs/concepts.md measures the trade-off.",
    )
    pessimism: float = Field(
        1.0,
        ge=0,
        le=10,
        description="Standard deviations taken off the learned twin's mean when screening a candidate.",
    )
    safety_margin_pct: float = Field(
        50.0,
        ge=0,
        le=100,
        description="A candidate whose pessimistic score is worse than the stable one by more than this is never "
        "canaried (percent of the stable score, or of its objective terms' size, weight × |metric| / scale summed, "
        "where they cancel near zero). A guard's pessimistic bound must keep within its maxDegradationPct plus this "
        "margin, and where the profile's measured twin predicts the guard's metric, its expected change within "
        "maxDegradationPct itself.",
    )
    min_gain_pct: float = Field(
        2.0,
        ge=0,
        le=100,
        description="Improvements smaller than this (percent of the score) are not worth a canary, whatever the "
        "analysis could detect.",
    )
    trust_region_steps: int = Field(
        1,
        ge=1,
        le=1000,
        description="Grid steps a proposal may move each parameter at first (twice this with a twin prior); doubled "
        "after a promotion, halved after a worse canary. A measured twin's own optimum is a candidate wherever it lies.",
    )
    hold_seconds: int = Field(
        3600, ge=1, description="When nothing is safe and promising, ask the proposer again after this long."
    )
    pause_on_guard_breach: bool = Field(
        True, description="No new proposal while a guard of the stable configuration breaches (continuous runs)."
    )


class ContinuousSettings(CamelModel):
    enabled: bool = Field(False, description="Keep watching after the run finished and re-optimize on a trigger.")
    check_interval_seconds: int = Field(3600, ge=1, description="How often the triggers are evaluated.")
    window_seconds: int = Field(
        3600, ge=1, description="Length of the recent window (and of the reference window after a promotion)."
    )
    degradation_pct: float = Field(
        5.0, gt=0, description="Re-optimize when the stable objective is worse than at promotion by more than this."
    )
    shift_significance: float = Field(
        0.001,
        gt=0,
        lt=0.5,
        description="p-value of the two-sample Kolmogorov-Smirnov test that flags a workload shift.",
    )
    workload_metrics: list[str] = Field(
        default_factory=list,
        description="Metrics tested for a workload shift (default: the profile's metrics outside the objective).",
    )
    schedule_seconds: int | None = Field(
        2592000, ge=60, description="Re-optimize at least this often (default 30 days); null: never on a schedule."
    )
    proposals_per_cycle: int | None = Field(
        None, ge=1, description="Proposals of each re-optimization (default: budget.maxProposals)."
    )


def check_http_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host and a valid port; raises ValueError naming what is wrong."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as error:
        raise ValueError(f"{url!r} is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    del port
    return url


def sample_seconds(rollout: RolloutSettings, min_sample_seconds: float = 1.0) -> float:
    """Sample spacing (and `{{window}}`) of an analysis: the setting, else about two samples per needed sample.

    The default is floored at `min_sample_seconds` (the operator's `--min-sample-seconds`): finer samples
    than Prometheus scrapes are repeats of one scrape, and a `rate()` over less than two scrapes is empty,
    so an unfloored default (6 s for a 60 s interval) would make every analysis inconclusive. An explicit
    `sampleSeconds` is taken as given: the user knows their scrape interval.
    """
    if rollout.sample_seconds is not None:
        return rollout.sample_seconds
    return max(1.0, min_sample_seconds, rollout.analysis_interval_seconds / max(2 * rollout.min_samples, 1))


def samples_per_analysis(rollout: RolloutSettings) -> int:
    """Samples of each variant one analysis interval yields (a range query includes both ends)."""
    return int(rollout.analysis_interval_seconds // sample_seconds(rollout)) + 1


def resolve_sampling(spec: OptimizationRunSpec, min_sample_seconds: float) -> tuple[OptimizationRunSpec, str | None]:
    """The spec with `rollout.sampleSeconds` filled in, and why it cannot work (None when it can).

    A rollout whose analysis interval holds fewer than `minSamples` samples can never promote: every
    analysis would be inconclusive and every canary rolled back. That is a mistake in the spec (or in
    the operator's floor), so it is reported at once, naming the numbers and the ways out.
    """
    rollout = spec.rollout
    spacing = sample_seconds(rollout, min_sample_seconds)
    resolved = spec.model_copy(update={"rollout": rollout.model_copy(update={"sample_seconds": spacing})})
    samples = samples_per_analysis(resolved.rollout)
    if samples >= rollout.min_samples:
        return resolved, None
    source = (
        "spec.rollout.sampleSeconds"
        if rollout.sample_seconds is not None
        else f"the operator's --min-sample-seconds ({min_sample_seconds:g})"
    )
    needed = (rollout.min_samples - 1) * spacing
    return resolved, (
        f"spec.rollout: an analysis interval of {rollout.analysis_interval_seconds:g} s holds only {samples} sample(s) per variant "
        f"at {spacing:g} s spacing (from {source}), but minSamples is {rollout.min_samples}: raise analysisIntervalSeconds to at "
        f"least {needed:g}, lower minSamples, or set sampleSeconds if Prometheus scrapes more often than every {spacing / 2:g} s"
    )


class OptimizationRunSpec(CamelModel):
    profiles: list[str] = Field(
        min_length=1, description="Names of ParameterProfiles (same namespace) to tune, one proposal at a time in turn."
    )
    mode: Mode = Field(
        "Apply", description="Apply: canary-roll proposals out. Recommend: only write recommendations to status."
    )
    agent: RunAgentSettings = Field(default_factory=RunAgentSettings, description="DQN settings.")
    budget: Budget = Field(default_factory=Budget, description="When the run stops.")
    rollout: RolloutSettings = Field(default_factory=RolloutSettings, description="Canary steps and analysis.")
    prometheus_url: str | None = Field(
        None,
        pattern=r"^https?://[^/?#\s]+",
        max_length=2048,
        description="Prometheus base URL (http or https, with a host); overrides the operator's default.",
    )
    freeze_windows: list[Annotated[str, Field(pattern=r"^(\d{2}:\d{2}-\d{2}:\d{2}|\S+/\S+)$")]] = Field(
        default_factory=list,
        description="No new proposal inside these windows: daily `HH:MM-HH:MM` (UTC) or `START/END` (RFC3339).",
    )
    exploration: ExplorationSettings = Field(default_factory=ExplorationSettings, description="Safe exploration.")
    continuous: ContinuousSettings = Field(
        default_factory=ContinuousSettings, description="Continuous re-optimization."
    )
    paused: bool = Field(
        False,
        description="Pause the run: no analysis, no new step and no new proposal; a canary that is out stays at its "
        "weight. Set it back to false to resume (the current step's analysis interval then starts again).",
    )

    @field_validator("prometheus_url")
    @classmethod
    def _usable_url(cls, url: str | None) -> str | None:
        return None if url is None else check_http_url(url)

    @model_validator(mode="after")
    def _unique_profiles(self) -> OptimizationRunSpec:
        if len(set(self.profiles)) != len(self.profiles):
            raise ValueError("profiles: a profile is named twice")
        return self


# --- status --------------------------------------------------------------------------------------
class Condition(CamelModel):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class VariantMeans(CamelModel):
    stable: float | None = None
    canary: float | None = None


class TargetRef(CamelModel):
    """Where a proposal's canary is: the ConfigMap and key it was written to (whatever happens to the profile later)."""

    namespace: str
    name: str
    key: str = "config.json"


class VariantMeasurement(CamelModel):
    """One variant's samples in one analysis: the score's mean, spread and count, and each metric's mean."""

    score: float | None = Field(None, description="Mean score (objective minus soft-constraint penalties).")
    score_std: float | None = Field(None, description="Standard deviation of the score samples (ddof=1).")
    n: int = Field(0, description="Score samples.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Mean of each queried metric.")


class GuardRecord(CamelModel):
    """One guard's result in one analysis."""

    metric: str
    status: str = Field(
        description="Held, Breached or Inconclusive (too few samples, or beyond the tolerance by its mean but not "
        "significantly)."
    )
    degradation_pct: float | None = Field(
        None, description="How much worse the canary's mean was, in % (negative: better)."
    )
    max_degradation_pct: float


def stable_idle(weight: int) -> bool:
    """At this canary weight the stable variant gets no work (100 %): a step's stable samples are then the step
    before's, which the analysis reaches back for and the learned twin has already seen."""
    return weight >= 100


class StepRecord(CamelModel):
    """The last analysis of one canary step: what the decision was made on."""

    index: int = Field(description="0-based step index into rollout.steps.")
    weight: int
    analysed_at: str
    verdict: str = Field(description="Successful, Failed or Inconclusive.")
    reason: str
    p_value: float | None = None
    stable: VariantMeasurement = Field(default_factory=VariantMeasurement)
    canary: VariantMeasurement = Field(default_factory=VariantMeasurement)
    guards: list[GuardRecord] = Field(default_factory=list, description="Each guard's result in this analysis.")

    def evidence(self) -> str:
        """One line of what this analysis saw: the score of each variant, the samples, the p-value."""

        def score(m: VariantMeasurement) -> str:
            return "n/a" if m.score is None else f"{m.score:.4g}"

        p = "" if self.p_value is None else f", p(better)={self.p_value:.2g}"
        return f"score canary {score(self.canary)} vs stable {score(self.stable)}, n={self.canary.n}/{self.stable.n}{p}"


class ProposalStatus(CamelModel):
    """The proposal being rolled out (or just decided)."""

    number: int = Field(description="1-based proposal counter of the run.")
    profile: str
    config: dict[str, int | float | str]
    stable_config: dict[str, int | float | str] = Field(
        description="The stable configuration the canary is compared with."
    )
    revision: str | None = Field(None, description="Immutable revision ConfigMap holding this proposal.")
    target: TargetRef | None = Field(
        None, description="The ConfigMap key the canary is written to (withdrawn from there)."
    )
    step_index: int = 0
    canary_weight: int = 0
    step_started_at: str | None = Field(None, description="When the current step's weight was written.")
    last_analysis_at: str | None = Field(
        None, description="When the current step was last analysed (the next analysis is one interval later)."
    )
    inconclusive: int = Field(0, description="Inconclusive analyses so far in this proposal.")
    means: VariantMeans = Field(default_factory=VariantMeans)
    p_value: float | None = None
    samples: dict[str, int] = Field(default_factory=dict, description="Samples per variant in the last analysis.")
    stable_digest: str | None = Field(
        None, description="sha256 of the stable bytes when the rollout began (drift detection)."
    )
    pending_action: Literal["StartCanary", "SetWeight", "Promote", "Rollback"] | None = Field(
        None, description="Written before the ConfigMap is changed, cleared after: a restart finishes or verifies it."
    )
    pending_reason: str | None = Field(None, description="Why the pending action was decided (e.g. GuardBreached).")
    pending_message: str | None = Field(
        None,
        description="What the pending rollback was decided on, as its record will say (the run's message may change "
        "before a restart or a failed tick finishes it).",
    )
    promote_digest: str | None = Field(None, description="sha256 of the stable key as a pending promotion writes it.")
    awaiting_approval: bool = Field(
        False, description="The canary passed its analysis and waits for a person to approve the promotion."
    )
    canary_digest: str | None = Field(None, description="sha256 of the canary key as the run wrote it.")
    expected_improvement_pct: float | None = None
    steps: list[StepRecord] = Field(default_factory=list, description="The last analysis of each step so far.")


class ProposalRecord(CamelModel):
    number: int
    profile: str
    config: dict[str, int | float | str]
    verdict: Literal["Promoted", "RolledBack", "Recommended", "Held"]
    reason: str
    message: str = ""
    improvement_pct: float | None = None
    p_value: float | None = None
    revision: str | None = None
    stable_config: dict[str, int | float | str] | None = Field(
        None, description="The configuration it was compared with."
    )
    steps: list[StepRecord] = Field(default_factory=list, description="The last analysis of each step.")
    finished_at: str


class Recommendation(CamelModel):
    profile: str
    config: dict[str, int | float | str]
    expected_improvement_pct: float | None = None
    confidence: float | None = None
    reason: str = ""


class TrainingStatus(CamelModel):
    episodes: int = 0
    episodes_total: int = 0
    env_steps: int = 0
    last_return: float | None = None
    epsilon: float | None = None
    wall_seconds: float | None = None
    message: str | None = None
    failed: bool = Field(False, description="Pretraining failed (the message says why); the profile learns online.")

    @property
    def busy(self) -> bool:
        return not self.failed and self.episodes < self.episodes_total


class LearningStatus(CamelModel):
    """What the agent of one profile learned from production."""

    model: str | None = Field(None, description="ConfigMap holding the stored model.")
    warm_start: str | None = Field(None, description="Loaded, None, Incompatible or Unreadable.")
    warm_start_message: str | None = None
    samples: int = Field(0, description="Production verdicts turned into transitions.")
    gradient_updates: int = 0
    model_updates: int = Field(0, description="Fine-tunings run.")
    deployed_updates: int = Field(0, description="Fine-tunings that beat the deployed policy and replaced it.")
    last_fine_tune_at: str | None = None
    last_fine_tune: str | None = Field(None, description="Outcome of the last fine-tuning.")
    saved_at: str | None = None
    save_error: str | None = Field(None, description="Why the last save failed (cleared by the next that works).")
    exploration_boosted_until: str | None = Field(
        None, description="Raised exploration (no improvement for a while) until then."
    )
    prior: str | None = Field(
        None, description="What the learned twin started from: a measured twin, a similar model, or none."
    )
    resembles: str | None = Field(
        None,
        description="With a measured twin: the live condition (workload option) whose twin best explains the "
        "canaries so far, and its posterior weight; the twin is also measured under other conditions of its "
        "workload, and the learned twin is their weighted mixture.",
    )
    twin_conditions: int | None = Field(
        None,
        description="Conditions the measured twin is known under so far, the default ones included (the others are "
        "measured in the background after the first; see docs/concepts.md).",
    )
    twin_condition_failures: list[str] = Field(
        default_factory=list, description="Conditions the twin could not be measured under, and why."
    )
    observations: int = Field(0, description="Measurements (variant × analysed step) the learned twin holds.")
    trust_region_steps: int | None = Field(None, description="Grid steps the next proposal may move each parameter.")
    prediction_checks: int = Field(
        0,
        description="Canaried configurations whose first measurement checked the learned twin's prediction (the "
        "latest 200 are kept).",
    )
    calibration: float | None = Field(
        None,
        description="Root mean square of those checks' errors, in the prediction's own standard deviations: about 1 "
        "when the learned twin's uncertainty is honest, above 1 when it is overconfident.",
    )


class HoldRecord(CamelModel):
    """A profile the proposer had nothing safe and promising for: asked again at `until` (never, when converged)."""

    reason: str = Field(description="NothingSafe (held, asked again later) or Converged (nothing better in sight).")
    message: str
    at: str
    until: str | None = Field(None, description="When the proposer is asked again; empty: not in this cycle.")


class RejectedConfig(CamelModel):
    profile: str
    config: dict[str, int | float | str]
    at: str = Field(description="When it was rolled back.")
    reason: str = ""


class Baseline(CamelModel):
    """The stable configuration of a profile as the continuous watch compares against it."""

    config_digest: str | None = None
    profile_hash: str | None = None
    objective: float | None = Field(None, description="Mean score (objective minus penalties) of the reference window.")
    reference_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Metric means the score's relative constraints were judged against at promotion.",
    )
    window_start: str | None = None
    window_end: str | None = None


class TriggerRecord(CamelModel):
    cycle: int
    profile: str | None = None
    kind: Literal["Degradation", "WorkloadShift", "ProfileChanged", "TargetChanged", "Schedule"]
    evidence: str
    at: str


class RunSummary(CamelModel):
    """What `kubectl get optimizationruns` shows, as short strings (printer columns cannot compute)."""

    profile: str | None = Field(None, description="The profile being canaried now.")
    step: str | None = Field(None, description='The canary\'s step, "2/4".')
    proposals: str = Field("0", description='Proposals made, "n/max" (per cycle in a continuous run).')
    improvement: str | None = Field(None, description='Per profile, "hde +12.3%, pba +0.8%".')
    message: str | None = Field(None, description="The status message, cut to 80 characters.")


class ManualStatus(CamelModel):
    """The values of the action annotations already acted on (each distinct value acts once)."""

    promote: str | None = None
    abort: str | None = None
    retry: str | None = None
    abort_requested: bool = Field(False, description="An abort is under way (the canary is being withdrawn).")
    last: str | None = Field(None, description="What the last action did.")


class RunStatus(CamelModel):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    started_at: str | None = None
    proposals: int = Field(0, description="Proposals made so far.")
    current: ProposalStatus | None = None
    history: list[ProposalRecord] = Field(
        default_factory=list, description="Most recent proposals, newest last (bounded)."
    )
    recommendations: list[Recommendation] = Field(default_factory=list)
    improvement_pct: float | None = Field(
        None,
        description="The profiles' improvements compounded into one number (∏(1 + gain) − 1, in %): it mixes "
        "different objectives, so read `improvements` for each profile.",
    )
    improvements: dict[str, float] = Field(
        default_factory=dict,
        description="Per profile: the improvement of its own objective from its promotions (compounded), in %.",
    )
    training: dict[str, TrainingStatus] = Field(default_factory=dict, description="Pretraining statistics per profile.")
    learning: dict[str, LearningStatus] = Field(
        default_factory=dict, description="Learning from production per profile."
    )
    holds: dict[str, HoldRecord] = Field(
        default_factory=dict, description="Profiles the proposer holds for (nothing safe and promising), with why."
    )
    rejected: list[RejectedConfig] = Field(
        default_factory=list,
        description="Rolled-back configurations (bounded), not proposed again within the cooldown.",
    )
    cycle: int = Field(0, description="Re-optimization cycle (0: the first optimization).")
    cycle_started_at: str | None = None
    cycle_proposals_start: int = Field(0, description="`proposals` when the current cycle began.")
    baselines: dict[str, Baseline] = Field(
        default_factory=dict, description="Per profile: what the continuous watch compares with."
    )
    last_check_at: str | None = None
    triggers: list[TriggerRecord] = Field(
        default_factory=list, description="Re-optimization triggers, newest last (bounded)."
    )
    message: str | None = None
    summary: RunSummary = Field(default_factory=RunSummary, description="Short strings for kubectl's columns.")
    manual: ManualStatus = Field(
        default_factory=ManualStatus, description="Actions taken on a person's request (annotations)."
    )


HISTORY_LIMIT = 20
REJECTED_LIMIT = 100
TRIGGER_LIMIT = 20
