"""The OptimizationRun state machine: propose → canary steps → verdict → learn → next proposal.

One call of `reconcile` advances a run by at most one transition and returns the new status. It
is safe to call at any time, any number of times, after a crash at any point:

- Everything the next call needs is in the status and the ConfigMaps, never only in memory.
- Before the controller changes a ConfigMap it records what it is about to do
  (`current.pendingAction`) and persists the status; after a restart the action is finished or
  verified against the ConfigMap (which describes itself: canary keys + revision name), so a
  promotion happens once and a canary is never left orphaned.
- Every ConfigMap write is one patch guarded by the resourceVersion of the read that justified it.
- If someone else edits the target ConfigMap during a rollout (drift), the run pauses with
  Degraded=True and never overwrites the human edit; it resumes when the ConfigMap is back to what
  the run expects, or the run can be deleted (its canary keys are then removed, stable untouched).

Transitions, with the reason each one records (Flagger style: one reason per transition):
Pending → Pretraining (Pretraining) → Proposing (Pretrained) → RollingOut (CanaryStarted) →
RollingOut (StepAdvanced) → Proposing (Promoted | RolledBack) … → Succeeded (BudgetExhausted |
TargetReached) or RolledBack (NothingPromoted); Failed (InvalidSpec, ProfileNotFound, …) on errors
that need a human.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..models.profile import ParameterProfileSpec
from ..models.run import (
    HISTORY_LIMIT,
    OptimizationRunSpec,
    ProposalRecord,
    ProposalStatus,
    Recommendation,
    RunStatus,
    TrainingStatus,
    VariantMeans,
)
from ..ports.base import (
    CANARY_KEY,
    CANARY_KEYS,
    CANARY_REVISION_KEY,
    CANARY_WEIGHT_KEY,
    ConfigRef,
    ConfigSnapshot,
    ConfigStore,
    Conflict,
    EventSink,
    MetricsSource,
    NotFound,
    OwnerRef,
    Unavailable,
    digest,
)
from . import continuous
from .analysis import analyse_step, mean
from .conditions import now_iso, set_condition

TERMINAL_PHASES = ("Succeeded", "RolledBack", "Failed")


# --- what the controller needs besides the ports -------------------------------------------------
@dataclass
class Proposal:
    config: dict[str, int | float | str]
    expected_improvement_pct: float | None = None
    confidence: float | None = None
    reason: str = ""


class Proposer(Protocol):
    """The agent side: pretraining, proposals and learning from verdicts (see controller/agents.py)."""

    def pretrain(self, profile_name: str, profile: ParameterProfileSpec) -> TrainingStatus | None:
        """Start or poll pretraining; None when there is nothing (left) to pretrain."""

    def propose(self, profile_name: str, profile: ParameterProfileSpec, stable: Mapping[str, object]) -> Proposal | None:
        """A configuration different from `stable`, or None when the agent has nothing to propose."""

    def learn(self, profile_name: str, profile: ParameterProfileSpec, stable: Mapping[str, object], proposed: Mapping[str, object], reward: float) -> None:
        """The verdict of a proposal as a reward."""


@dataclass
class RunContext:
    """Everything one reconcile call sees of the run."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    spec: OptimizationRunSpec
    status: RunStatus
    profiles: dict[str, ParameterProfileSpec | str]  # name -> spec, or an error message why it is unusable
    now: dt.datetime
    owner: OwnerRef | None = None


@dataclass
class Ports:
    configs: ConfigStore
    metrics: MetricsSource
    events: EventSink
    proposer: Proposer
    persist: Callable[[RunStatus], None] = field(default=lambda status: None)  # write the status now (write-ahead)
    # The wall clock, read when a ConfigMap write happens: a call may spend seconds in the proposer
    # (building or querying the agent), and a step's start must be when its weight was written, not
    # when the call began. None: use the call's `ctx.now` (simulated clocks in tests).
    clock: Callable[[], dt.datetime] | None = None


def _write_time(ctx: RunContext, ports: Ports) -> str:
    return now_iso(ports.clock() if ports.clock is not None else ctx.now)


def canonical_json(config: Mapping[str, object]) -> str:
    """The bytes written to a ConfigMap: stable key order, so equal configs give equal digests."""
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"))


# --- entry point -------------------------------------------------------------------------------------
def reconcile(ctx: RunContext, ports: Ports) -> RunStatus:
    """Advance the run by at most one transition and return its new status."""
    status = ctx.status.model_copy(deep=True)
    status.observed_generation = ctx.generation
    if status.phase in TERMINAL_PHASES:
        if ctx.spec.continuous.enabled and status.phase != "Failed":
            return continuous.watch(ctx, ports, status)  # may start a new cycle (controller/continuous.py)
        return status
    if status.started_at is None:
        status.started_at = now_iso(ctx.now)

    if status.phase == "Proposing" and status.current is None:
        stop = _budget_left(ctx, status)
        if stop:  # a run whose budget is spent finishes even if a profile became unusable meanwhile
            return _finish(ctx, status, stop, ports)

    problems = {name: p for name, p in ctx.profiles.items() if isinstance(p, str)}
    if problems and status.current is None:
        # Not terminal: with GitOps the profile may simply be applied after the run. Wait for it.
        name, problem = next(iter(problems.items()))
        return _not_ready(ctx, status, "ProfileNotReady", f"profile {name}: {problem}")

    if status.phase == "Pending":
        status = _conditions(ctx, status, progressing=("True", "Started", "Run started."))
        status.phase = "Pretraining"
        status.message = "Pretraining the agent."
        return status

    if status.phase == "Pretraining":
        return _pretrain(ctx, ports, status)

    if status.phase == "Proposing":
        return _propose(ctx, ports, status)

    if status.phase == "RollingOut":
        return _roll_out(ctx, ports, status)
    return status


# --- phases ----------------------------------------------------------------------------------------
def _pretrain(ctx: RunContext, ports: Ports, status: RunStatus) -> RunStatus:
    busy = False
    for name in ctx.spec.profiles:
        profile = ctx.profiles[name]
        assert not isinstance(profile, str)
        progress = ports.proposer.pretrain(name, profile)
        if progress is not None:
            status.training[name] = progress
            if progress.episodes < progress.episodes_total:
                busy = True
    if busy:
        done = sum(t.episodes for t in status.training.values())
        total = sum(t.episodes_total for t in status.training.values())
        status.message = f"Pretraining on twins: {done}/{total} episodes."
        return _conditions(ctx, status, progressing=("True", "Pretraining", status.message))
    status.phase = "Proposing"
    status.message = "Pretrained." if status.training else "No twin to pretrain on; learning online."
    for name in ctx.spec.profiles:
        continuous.sync_learning(ports, status, name, ctx.profiles[name])
    status.conditions = continuous.warm_start_condition(ctx, status)
    return _conditions(ctx, status, progressing=("True", "Pretrained", status.message))


def _budget_left(ctx: RunContext, status: RunStatus) -> str | None:
    """None while the run may propose again; otherwise why it stops."""
    budget = ctx.spec.budget
    limit = (ctx.spec.continuous.proposals_per_cycle if status.cycle else None) or budget.max_proposals
    if status.proposals - status.cycle_proposals_start >= limit:  # per cycle (continuous runs re-optimize in cycles)
        return "BudgetExhausted"
    if budget.deadline_seconds is not None and (status.cycle_started_at or status.started_at):
        started = dt.datetime.fromisoformat((status.cycle_started_at or status.started_at).replace("Z", "+00:00"))
        if (ctx.now - started).total_seconds() >= budget.deadline_seconds:
            return "DeadlineReached"
    if budget.target_improvement_pct is not None and (status.improvement_pct or 0.0) >= budget.target_improvement_pct:
        return "TargetReached"
    return None


def _finish(ctx: RunContext, status: RunStatus, reason: str, ports: Ports | None = None) -> RunStatus:
    if ports is not None:
        continuous.on_finish(ctx, ports, status)
    promoted = sum(1 for h in status.history if h.verdict == "Promoted")
    recommended = sum(1 for h in status.history if h.verdict == "Recommended")
    if ctx.spec.mode == "Recommend" or promoted:
        status.phase = "Succeeded"
        what = f"{recommended} recommendation(s)" if ctx.spec.mode == "Recommend" else f"{promoted} of {status.proposals} proposal(s) promoted"
        imp = "" if status.improvement_pct is None else f", objective {status.improvement_pct:+.1f} %"
        status.message = f"Finished ({reason}): {what}{imp}."
        status = _conditions(ctx, status, progressing=("False", reason, status.message), succeeded=("True", reason, status.message))
    else:
        status.phase = "RolledBack"
        status.message = f"Finished ({reason}): no proposal was better than the stable configuration; every canary was rolled back."
        status = _conditions(
            ctx, status,
            progressing=("False", reason, status.message),
            succeeded=("False", "NothingPromoted", status.message),
            rolled_back=("True", "NothingPromoted", status.message),
        )
    return status


def _propose(ctx: RunContext, ports: Ports, status: RunStatus) -> RunStatus:
    stop = _budget_left(ctx, status)
    if stop:
        return _finish(ctx, status, stop, ports)
    name = ctx.spec.profiles[status.proposals % len(ctx.spec.profiles)]
    profile = ctx.profiles[name]
    assert not isinstance(profile, str)
    ref = _ref(ctx, profile)
    snapshot = _read_target(ctx, ports, status, ref, "not found; waiting for it.")
    if isinstance(snapshot, RunStatus):
        return snapshot
    if snapshot.canary is not None:
        return _degraded(
            ctx, status, "ForeignCanary",
            f"ConfigMap {ref.namespace}/{ref.name} already has a canary ({snapshot.canary_revision or 'unknown revision'}); "
            "another run or a person is rolling out. Waiting.",
        )
    stable = _parse_stable(profile, snapshot)
    if isinstance(stable, str):
        return _degraded(ctx, status, "InvalidStableConfig", stable)

    hold = continuous.before_proposal(ctx, ports, status, name, profile)  # freeze windows, fine-tuning, exploration
    if hold is not None:
        status.message = hold[1]
        return _conditions(ctx, status, progressing=("True", hold[0], hold[1]))
    proposal = continuous.propose(ctx, ports, status, name, profile, stable)  # skips configurations in their rollback cooldown
    number = status.proposals + 1
    if proposal is None or canonical_json(proposal.config) == canonical_json(stable):
        status.proposals = number
        _record(status, ProposalRecord(
            number=number, profile=name, config=stable, verdict="Held", reason="NoChange",
            message="The agent proposed the stable configuration; nothing to roll out.", finished_at=now_iso(ctx.now),
        ))
        return _conditions(ctx, status, progressing=("True", "NoChange", "The agent proposed no change."))

    if ctx.spec.mode == "Recommend":
        status.proposals = number
        status.recommendations = [r for r in status.recommendations if r.profile != name] + [
            Recommendation(
                profile=name, config=proposal.config, expected_improvement_pct=proposal.expected_improvement_pct,
                confidence=proposal.confidence, reason=proposal.reason,
            )
        ]
        _record(status, ProposalRecord(
            number=number, profile=name, config=proposal.config, verdict="Recommended", reason="RecommendMode",
            message=proposal.reason, improvement_pct=proposal.expected_improvement_pct, finished_at=now_iso(ctx.now),
        ))
        status.message = f"Recommended a configuration for {name}; the ConfigMap is not touched in Recommend mode."
        return _conditions(ctx, status, progressing=("True", "Recommended", status.message))

    revision = f"{ctx.name}-{name}-{number}"[:253]
    status.current = ProposalStatus(
        number=number, profile=name, config=proposal.config, stable_config=stable, revision=revision,
        step_index=0, canary_weight=0, stable_digest=snapshot.stable_digest(), pending_action="StartCanary",
        expected_improvement_pct=proposal.expected_improvement_pct,
    )
    status.proposals = number
    status.phase = "RollingOut"
    status.message = f"Proposal {number} for {name}: starting the canary."
    ports.persist(status)  # write-ahead: a restart now finishes (or verifies) the start
    return _start_canary(ctx, ports, status, profile, snapshot)


def _start_canary(ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot) -> RunStatus:
    current = status.current
    assert current is not None and current.revision is not None
    ports.configs.create_revision(
        snapshot.ref.namespace,
        current.revision,
        {
            "config.json": canonical_json(current.config),
            "stable.json": canonical_json(current.stable_config),
            "profile": current.profile,
            "run": ctx.name,
        },
        # Kubernetes ignores (and garbage-collects for) an owner in another namespace, so a revision
        # of a ConfigMap outside the run's namespace is left unowned rather than silently deleted.
        owner=ctx.owner if snapshot.ref.namespace == ctx.namespace else None,
        labels={"autotune.dwcp.io/run": ctx.name, "autotune.dwcp.io/profile": current.profile},
    )
    weight = ctx.spec.rollout.steps[0]
    try:
        ports.configs.write(
            snapshot.ref,
            expected_resource_version=snapshot.resource_version,
            set_keys={CANARY_KEY: canonical_json(current.config), CANARY_WEIGHT_KEY: str(weight), CANARY_REVISION_KEY: current.revision},
        )
    except Conflict:
        return status  # the ConfigMap moved since the read: the next call re-reads, checks drift and finishes the start
    current.pending_action = None
    current.canary_weight = weight
    current.step_index = 0
    current.step_started_at = _write_time(ctx, ports)
    current.last_analysis_at = None
    status.message = f"Proposal {current.number} for {current.profile}: canary at {weight} %."
    ports.events.emit("Normal", "CanaryStarted", f"{current.profile}: canary {current.revision} at {weight} %: {canonical_json(current.config)}")
    return _conditions(ctx, status, progressing=("True", "CanaryStarted", status.message), degraded=("False", "AsExpected", ""))


def _roll_out(ctx: RunContext, ports: Ports, status: RunStatus) -> RunStatus:
    current = status.current
    assert current is not None
    profile = ctx.profiles[current.profile]
    if isinstance(profile, str):
        return _rollback(ctx, ports, status, None, "ProfileNotReady", f"profile {current.profile}: {profile}")
    ref = _ref(ctx, profile)
    snapshot = _read_target(ctx, ports, status, ref, "disappeared during the rollout.")
    if isinstance(snapshot, RunStatus):
        return snapshot

    candidate = canonical_json(current.config)
    ours = snapshot.canary_revision == current.revision and snapshot.canary == candidate

    # 1. Finish an action a previous process recorded but may not have completed.
    if current.pending_action == "StartCanary":
        if snapshot.stable_digest() != current.stable_digest:
            return _drift(ctx, status, ref, "the stable configuration changed before the canary started")
        if ours:  # the write happened; only the status was lost (and maybe the event: events are at least once)
            current.pending_action = None
            current.canary_weight = snapshot.canary_weight or ctx.spec.rollout.steps[0]
            current.step_started_at = current.step_started_at or _write_time(ctx, ports)
            current.last_analysis_at = None
            status.message = f"Proposal {current.number} for {current.profile}: canary at {current.canary_weight} % (resumed)."
            ports.events.emit("Normal", "CanaryStarted", f"{current.profile}: canary {current.revision} at {current.canary_weight} %: {candidate}")
            return _conditions(ctx, status, progressing=("True", "CanaryStarted", status.message), degraded=("False", "AsExpected", ""))
        if snapshot.canary is not None:
            return _drift(ctx, status, ref, "another canary appeared")
        return _start_canary(ctx, ports, status, profile, snapshot)
    if current.pending_action == "Promote":
        if snapshot.canary is None and snapshot.stable_digest() == digest(candidate):
            return _after_promotion(ctx, ports, status, profile, already_done=True)
        if ours and snapshot.stable_digest() == current.stable_digest:
            return _promote(ctx, ports, status, profile, snapshot)
        return _drift(ctx, status, ref, "the ConfigMap changed while a promotion was pending")
    if current.pending_action == "Rollback":
        if snapshot.canary is None or not ours:
            return _after_rollback(ctx, ports, status, profile, current.pending_reason or "RolledBack", status.message or "")
        return _rollback(ctx, ports, status, snapshot, current.pending_reason or "RolledBack", status.message or "")

    # 2. Drift: the run only proceeds while the ConfigMap is exactly what it wrote.
    if snapshot.stable_digest() != current.stable_digest:
        return _drift(ctx, status, ref, "the stable configuration was edited")
    if not ours:
        return _drift(ctx, status, ref, "the canary keys were edited or removed")
    expected_weight = ctx.spec.rollout.steps[current.step_index]
    if current.pending_action == "SetWeight":
        if snapshot.canary_weight == expected_weight:
            # The weight was written but the status after it was lost. When is unknown, so the step
            # starts now: it gets a full analysis interval, and its window never reaches back into
            # the previous step (whose start is still in the status).
            return _weight_written(ctx, ports, status, expected_weight, resumed=True)
        return _set_weight(ctx, ports, status, snapshot, expected_weight)
    if snapshot.canary_weight != current.canary_weight:
        return _drift(ctx, status, ref, f"the canary weight was changed to {snapshot.canary_weight}")
    # 3. Hold: keep the canary where it is until a human decides (on_inconclusive: Hold).
    if current.inconclusive >= ctx.spec.rollout.max_inconclusive and ctx.spec.rollout.on_inconclusive == "Hold":
        return status
    status = _conditions(ctx, status, degraded=("False", "AsExpected", ""))

    # 4. Analyse once the step has run for an analysis interval, and again one interval after an
    #    inconclusive analysis (so `maxInconclusive` counts analysis intervals, not operator ticks).
    #    The window always starts at the step's start: a repeated analysis sees more samples.
    started = _parse_time(current.step_started_at) or ctx.now
    since = max(started, _parse_time(current.last_analysis_at) or started)
    if (ctx.now - since).total_seconds() < ctx.spec.rollout.analysis_interval_seconds:
        return status
    # At 100 % the stable variant gets no work: its samples come from the interval before this step.
    baseline_start = started - dt.timedelta(seconds=ctx.spec.rollout.analysis_interval_seconds) if current.canary_weight >= 100 else started
    result = analyse_step(profile, ports.metrics, ctx.spec.rollout, started, ctx.now, baseline_start=baseline_start)
    current.last_analysis_at = now_iso(ctx.now)
    verdict = result.verdict
    current.means = VariantMeans(stable=mean(result.objective.baseline), canary=mean(result.objective.candidate))
    current.p_value = verdict.p_value
    current.samples = {"stable": len(result.objective.baseline), "canary": len(result.objective.candidate)}
    last_step = current.step_index == len(ctx.spec.rollout.steps) - 1

    if result.guards_verdict is not None and result.guards_verdict.failed:
        return _rollback(ctx, ports, status, snapshot, "GuardBreached", result.guards_verdict.message)
    if verdict.failed:
        return _rollback(ctx, ports, status, snapshot, verdict.reason, verdict.message)
    guards_held = result.guards_verdict is None and result.unavailable is None and verdict.objective is not None and verdict.objective.enough_data
    if not last_step and guards_held:
        current.inconclusive = 0
        current.step_index += 1
        current.pending_action = "SetWeight"
        ports.persist(status)
        return _set_weight(ctx, ports, status, snapshot, ctx.spec.rollout.steps[current.step_index])
    if last_step and verdict.successful:
        current.pending_action = "Promote"
        ports.persist(status)
        return _promote(ctx, ports, status, profile, snapshot)

    # Inconclusive: no data, too few samples, or (at the last step) not significant yet.
    current.inconclusive += 1
    reason = "MetricsUnavailable" if result.unavailable else verdict.reason
    message = verdict.message
    if current.inconclusive >= ctx.spec.rollout.max_inconclusive:
        if ctx.spec.rollout.on_inconclusive == "Rollback":
            return _rollback(ctx, ports, status, snapshot, "Inconclusive", f"{current.inconclusive} inconclusive analyses: {message}")
        status.message = f"Holding the canary at {current.canary_weight} % after {current.inconclusive} inconclusive analyses: {message}"
        ports.events.emit("Warning", "CanaryHeld", status.message)
        return _conditions(ctx, status, progressing=("False", "Held", status.message), degraded=("True", "Inconclusive", status.message))
    status.message = f"Analysis {current.inconclusive}/{ctx.spec.rollout.max_inconclusive} inconclusive ({reason}): {message}"
    return _conditions(ctx, status, progressing=("True", reason, status.message))


# --- actions -----------------------------------------------------------------------------------------
def _set_weight(ctx: RunContext, ports: Ports, status: RunStatus, snapshot: ConfigSnapshot, weight: int) -> RunStatus:
    current = status.current
    assert current is not None
    try:
        ports.configs.write(snapshot.ref, expected_resource_version=snapshot.resource_version, set_keys={CANARY_WEIGHT_KEY: str(weight)})
    except Conflict:
        return status  # re-read and re-check drift on the next call; the pending action stays
    return _weight_written(ctx, ports, status, weight)


def _weight_written(ctx: RunContext, ports: Ports, status: RunStatus, weight: int, *, resumed: bool = False) -> RunStatus:
    """The canary weight is in the ConfigMap: the step starts now and gets a full analysis interval."""
    current = status.current
    assert current is not None
    current.pending_action = None
    current.canary_weight = weight
    current.step_started_at = _write_time(ctx, ports)
    current.last_analysis_at = None
    step = f"step {current.step_index + 1}/{len(ctx.spec.rollout.steps)}" + ("; resumed" if resumed else "")
    status.message = f"Proposal {current.number} for {current.profile}: canary at {weight} % ({step})."
    ports.events.emit("Normal", "StepAdvanced", f"{current.profile}: canary {current.revision} at {weight} %")
    return _conditions(ctx, status, progressing=("True", "StepAdvanced", status.message))


def _promote(ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot) -> RunStatus:
    current = status.current
    assert current is not None
    try:
        ports.configs.write(
            snapshot.ref,
            expected_resource_version=snapshot.resource_version,
            set_keys={snapshot.ref.key: canonical_json(current.config)},
            remove_keys=tuple(k for k in CANARY_KEYS if k in snapshot.data),
        )
    except Conflict:
        return status  # the ConfigMap moved: the next call re-reads, checks drift and finishes the pending promotion
    return _after_promotion(ctx, ports, status, profile, already_done=False)


def _after_promotion(ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, *, already_done: bool) -> RunStatus:
    current = status.current
    assert current is not None
    improvement = None
    if current.means.stable is not None and current.means.canary is not None and current.means.stable != 0:
        improvement = (current.means.canary - current.means.stable) / abs(current.means.stable) * 100.0
    total = (1.0 + (status.improvement_pct or 0.0) / 100.0) * (1.0 + (improvement or 0.0) / 100.0)
    status.improvement_pct = round((total - 1.0) * 100.0, 4)
    message = (
        f"Promoted proposal {current.number} for {current.profile}: objective "
        f"{'n/a' if improvement is None else f'{improvement:+.2f} %'} (p={_fmt_p(current.p_value)})."
    )
    _record(status, ProposalRecord(
        number=current.number, profile=current.profile, config=current.config, verdict="Promoted", reason="CanaryBetter",
        message=message, improvement_pct=improvement, p_value=current.p_value, revision=current.revision, finished_at=now_iso(ctx.now),
    ))
    ports.events.emit("Normal", "Promoted", message)
    ports.proposer.learn(current.profile, profile, current.stable_config, current.config, (improvement or 0.0) / 100.0)
    continuous.on_promotion(ctx, status, current, profile)
    continuous.sync_learning(ports, status, current.profile, profile)
    status.current = None
    status.phase = "Proposing"
    status.message = message
    return _conditions(ctx, status, progressing=("True", "Promoted", message))


def _rollback(ctx: RunContext, ports: Ports, status: RunStatus, snapshot: ConfigSnapshot | None, reason: str, message: str) -> RunStatus:
    current = status.current
    assert current is not None
    current.pending_action = "Rollback"
    current.pending_reason = reason
    status.message = message
    ports.persist(status)
    if snapshot is not None and snapshot.canary is not None:
        try:
            # Only the canary keys go; the stable bytes are never rewritten by a rollback.
            ports.configs.write(
                snapshot.ref,
                expected_resource_version=snapshot.resource_version,
                remove_keys=tuple(k for k in CANARY_KEYS if k in snapshot.data),
            )
        except Conflict:
            return status  # re-read next time; the pending rollback is finished then
    profile = ctx.profiles.get(current.profile)
    return _after_rollback(ctx, ports, status, profile if not isinstance(profile, str) else None, reason, message)


def _after_rollback(ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec | None, reason: str = "RolledBack", message: str = "") -> RunStatus:
    current = status.current
    assert current is not None
    text = f"Rolled back proposal {current.number} for {current.profile} ({reason}): {message}".rstrip(": ")
    _record(status, ProposalRecord(
        number=current.number, profile=current.profile, config=current.config, verdict="RolledBack", reason=reason,
        message=text, p_value=current.p_value, revision=current.revision, finished_at=now_iso(ctx.now),
    ))
    ports.events.emit("Warning", "RolledBack", text)
    continuous.on_rollback(ctx, status, current, reason)
    if profile is not None:
        ports.proposer.learn(current.profile, profile, current.stable_config, current.config, -0.05)
        continuous.sync_learning(ports, status, current.profile, profile)
    status.current = None
    status.phase = "Proposing"
    status.message = text
    return _conditions(ctx, status, progressing=("True", "RolledBack", text), rolled_back=("True", reason, text))


# --- helpers -----------------------------------------------------------------------------------------
def _ref(ctx: RunContext, profile: ParameterProfileSpec) -> ConfigRef:
    assert profile.target is not None
    return ConfigRef(namespace=profile.target.namespace or ctx.namespace, name=profile.target.name, key=profile.target.key)


def _read_target(ctx: RunContext, ports: Ports, status: RunStatus, ref: ConfigRef, missing: str) -> ConfigSnapshot | RunStatus:
    """The target ConfigMap, or the Degraded status that says why it cannot be read now."""
    try:
        return ports.configs.read(ref)
    except NotFound:
        return _degraded(ctx, status, "TargetNotFound", f"ConfigMap {ref.namespace}/{ref.name} {missing}")
    except Unavailable as error:
        return _degraded(ctx, status, "KubernetesUnavailable", str(error))


def _parse_stable(profile: ParameterProfileSpec, snapshot: ConfigSnapshot) -> dict | str:
    raw = snapshot.stable
    if raw is None:
        return f"ConfigMap {snapshot.ref.namespace}/{snapshot.ref.name} has no key {snapshot.ref.key!r}"
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        return f"key {snapshot.ref.key!r} is not valid JSON ({error.msg} at line {error.lineno})"
    if not isinstance(data, dict):
        return f"key {snapshot.ref.key!r} must hold a JSON object"
    # Keys the profile does not tune are kept by the component but are not ours to change.
    tuned = {k: v for k, v in data.items() if k in profile.parameter_names}
    try:
        return profile.coerce_config(tuned)
    except ValueError as error:
        return f"stable configuration: {error}"


def _record(status: RunStatus, record: ProposalRecord) -> None:
    status.history = (status.history + [record])[-HISTORY_LIMIT:]


def _parse_time(text: str | None) -> dt.datetime | None:
    return None if not text else dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _fmt_p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def _conditions(
    ctx: RunContext,
    status: RunStatus,
    *,
    progressing: tuple[str, str, str] | None = None,
    succeeded: tuple[str, str, str] | None = None,
    rolled_back: tuple[str, str, str] | None = None,
    degraded: tuple[str, str, str] | None = None,
) -> RunStatus:
    conditions = status.conditions
    for type_, value in (("Progressing", progressing), ("Succeeded", succeeded), ("RolledBack", rolled_back), ("Degraded", degraded)):
        if value is not None:
            conditions = set_condition(conditions, type_, value[0], value[1], value[2], now=ctx.now, generation=ctx.generation)
    conditions = set_condition(conditions, "Ready", "True", "SpecValid", "The run's spec and profiles are valid.", now=ctx.now, generation=ctx.generation)
    status.conditions = conditions
    return status


def _degraded(ctx: RunContext, status: RunStatus, reason: str, message: str) -> RunStatus:
    status.message = message
    return _conditions(ctx, status, degraded=("True", reason, message))


def _drift(ctx: RunContext, status: RunStatus, ref: ConfigRef, what: str) -> RunStatus:
    message = (
        f"ConfigMap {ref.namespace}/{ref.name} was changed by someone else ({what}); the run is paused and will not "
        "overwrite it. Restore the ConfigMap to resume, or delete the run to abandon the rollout."
    )
    status.message = message
    return _conditions(ctx, status, degraded=("True", "ConfigMapDrift", message))


def _not_ready(ctx: RunContext, status: RunStatus, reason: str, message: str) -> RunStatus:
    status.message = message
    status.conditions = set_condition(status.conditions, "Ready", "False", reason, message, now=ctx.now, generation=ctx.generation)
    return status


def fail(ctx: RunContext, status: RunStatus, reason: str, message: str, *, canary_withdrawn: bool = False) -> RunStatus:
    """Terminal failure, for what needs a human (an invalid spec).

    When the proposal in flight had its canary out and the caller (which holds the ConfigMap access)
    withdrew it, the proposal ends here and the history records it as rolled back; otherwise
    `status.current` is kept as it was, for a human to see.
    """
    current = status.current
    if current is not None and canary_withdrawn:
        _record(status, ProposalRecord(
            number=current.number, profile=current.profile, config=current.config, verdict="RolledBack", reason=reason,
            message=message, revision=current.revision, finished_at=now_iso(ctx.now),
        ))
        status.current = None
    status.phase = "Failed"
    status.message = message
    status.conditions = set_condition(status.conditions, "Ready", "False", reason, message, now=ctx.now, generation=ctx.generation)
    status.conditions = set_condition(status.conditions, "Progressing", "False", reason, message, now=ctx.now, generation=ctx.generation)
    return status
