"""A proposal's rollout: the canary's steps, each analysed and decided, and the ConfigMap writes they need.

`advance` is called on every tick while a proposal is out (`status.current`). Its order:

1. A pending action (`current.pendingAction`, written before every ConfigMap write) is finished or
   verified first, through `RESUME`: a restart between "decided" and "written" never repeats or loses a
   write, because the ConfigMap describes itself (canary keys + revision name).
2. Drift: the rollout only proceeds while the ConfigMap is exactly what the run wrote.
3. Once the step has run for an analysis interval, the step is analysed (`controller/analysis.py`), the
   measurements go to the proposer, and `rollout/decision.py` says what to do: advance, promote, roll
   back, wait or hold.

Every write is one patch guarded by the resourceVersion of the read that justified it; a Conflict
means the ConfigMap moved, and the next tick re-reads and re-checks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from ..canary.protocol import (
    CANARY_KEY,
    CANARY_REVISION_KEY,
    CANARY_WEIGHT_KEY,
    ConfigSnapshot,
    canonical_json,
    digest,
    merge_stable,
    target_ref,
)
from ..models.profile import ParameterProfileSpec
from ..models.run import ProposalRecord, RunStatus, StepRecord, VariantMeans
from ..ports.base import Conflict
from ..proposers.base import ProposalVerdict
from ..rollout.decision import Advance, Hold, Limits, Promote, Rollback, Step, Wait, decide
from . import continuous
from .analysis import analyse_step
from .conditions import get_condition, now_iso
from .context import Ports, RunContext, parse_time
from .history import record
from .target import config_ref, read_target
from .transitions import Transition

ROLLBACK_REWARD = -0.05  # what a rolled-back proposal teaches the proposer


def advance(ctx: RunContext, ports: Ports, status: RunStatus) -> Transition | None:
    current = status.current
    assert current is not None
    profile = ctx.profiles.get(current.profile)
    ref = (
        config_ref(current.target)
        if current.target is not None
        else (target_ref(profile.target, ctx.namespace) if isinstance(profile, ParameterProfileSpec) else None)
    )
    if not isinstance(profile, ParameterProfileSpec):
        why = profile or "it is no longer in spec.profiles"
        snapshot = read_target(ports, ref, "is gone.") if ref is not None else None
        return rollback(
            ctx,
            ports,
            status,
            snapshot if isinstance(snapshot, ConfigSnapshot) else None,
            "ProfileNotReady",
            f"profile {current.profile}: {why}",
        )
    snapshot = read_target(ports, ref, "disappeared during the rollout.")
    if isinstance(snapshot, Transition):
        return snapshot
    resume = RESUME.get(current.pending_action or "")
    if resume is not None:
        return resume(ctx, ports, status, profile, snapshot)
    return _step(ctx, ports, status, profile, snapshot)


# --- resuming a recorded action ----------------------------------------------------------------------
def _ours(status: RunStatus, snapshot: ConfigSnapshot) -> bool:
    current = status.current
    assert current is not None
    return snapshot.canary_revision == current.revision and snapshot.canary == canonical_json(current.config)


def _resume_start(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot
) -> Transition | None:
    current = status.current
    assert current is not None
    if _ours(status, snapshot):  # the write happened; only the status was lost (and maybe the event)
        current.pending_action = None
        current.canary_weight = snapshot.canary_weight or ctx.spec.rollout.steps[0]
        current.step_started_at = current.step_started_at or ports.write_time(ctx)
        current.last_analysis_at = None
        return _canary_started(current, resumed=True)
    if snapshot.stable_digest() != current.stable_digest:
        return _superseded(ctx, status, "the stable configuration changed before the canary started")
    if snapshot.canary is not None:
        return _superseded(
            ctx,
            status,
            f"another canary ({snapshot.canary_revision or 'unknown revision'}) appeared before this one started",
        )
    return start_canary(ctx, ports, status, snapshot)


def _resume_set_weight(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot
) -> Transition | None:
    current = status.current
    assert current is not None
    drift = _drift(ctx, status, snapshot)
    if drift is not None:
        return drift
    expected = _steps(ctx)[current.step_index]
    if snapshot.canary_weight == expected:
        # The weight was written but the status after it was lost. When is unknown, so the step starts
        # now: it gets a full analysis interval, and its window never reaches back into the previous step.
        return _weight_written(ctx, ports, status, expected, resumed=True)
    return _set_weight(ctx, ports, status, snapshot, expected)


def _resume_promote(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot
) -> Transition | None:
    current = status.current
    assert current is not None
    promoted = current.promote_digest or digest(canonical_json(current.config))  # older statuses wrote the config whole
    if snapshot.canary is None and snapshot.stable_digest() == promoted:
        return _after_promotion(ctx, ports, status, profile)
    if _ours(status, snapshot) and snapshot.stable_digest() == current.stable_digest:
        return _promote(ctx, ports, status, profile, snapshot)
    return _drift_transition(status, snapshot, "the ConfigMap changed while a promotion was pending")


def _resume_rollback(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot
) -> Transition | None:
    current = status.current
    assert current is not None
    reason, message = current.pending_reason or "RolledBack", status.message or ""
    if snapshot.canary is None or not _ours(status, snapshot):
        return _after_rollback(ctx, ports, status, profile, reason, message)
    return rollback(ctx, ports, status, snapshot, reason, message)


Resume = Callable[[RunContext, Ports, RunStatus, ParameterProfileSpec, ConfigSnapshot], Transition | None]
#: pendingAction → how a tick finishes or verifies it. The action is written before the ConfigMap is changed.
RESUME: dict[str, Resume] = {
    "StartCanary": _resume_start,
    "SetWeight": _resume_set_weight,
    "Promote": _resume_promote,
    "Rollback": _resume_rollback,
}


# --- one step: drift, timing, analysis, decision -------------------------------------------------------
def _step(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot
) -> Transition | None:
    current = status.current
    assert current is not None
    drift = _drift(ctx, status, snapshot)
    if drift is not None:
        return drift
    if snapshot.canary_weight != current.canary_weight:
        return _drift_transition(status, snapshot, f"the canary weight was changed to {snapshot.canary_weight}")
    rollout = ctx.spec.rollout
    if current.inconclusive >= rollout.max_inconclusive and rollout.on_inconclusive == "Hold":
        return None  # held for a human
    degraded = get_condition(status.conditions, "Degraded")
    if degraded is not None and degraded.status == "True":
        return Transition(
            "AsExpected",
            f"Proposal {current.number} for {current.profile}: the ConfigMap is as the run "
            f"left it; the canary at {current.canary_weight} % goes on.",
        )

    # Analyse once the step has run for an analysis interval, and again one interval after an inconclusive
    # analysis (so `maxInconclusive` counts analysis intervals, not operator ticks). The window always
    # starts at the step's start: a repeated analysis sees more samples.
    started = parse_time(current.step_started_at) or ctx.now
    since = max(started, parse_time(current.last_analysis_at) or started)
    if (ctx.now - since).total_seconds() < rollout.analysis_interval_seconds:
        return None
    steps = _steps(ctx)
    index = min(current.step_index, len(steps) - 1)
    # At 100 % the stable variant gets no work: its samples come from the interval before this step.
    baseline_start = (
        started - dt.timedelta(seconds=rollout.analysis_interval_seconds) if current.canary_weight >= 100 else started
    )
    step = Step(index, steps)
    result = analyse_step(
        profile, ports.metrics, rollout, started, ctx.now, last_step=step.last, baseline_start=baseline_start
    )
    verdict = result.verdict
    current.last_analysis_at = now_iso(ctx.now)
    current.means = VariantMeans(stable=result.stable.score, canary=result.canary.score)
    current.p_value = verdict.p_value
    current.samples = {"stable": result.stable.n, "canary": result.canary.n}
    entry = StepRecord(
        index=index,
        weight=current.canary_weight,
        analysed_at=current.last_analysis_at,
        verdict=verdict.phase,
        reason=verdict.reason,
        p_value=None if verdict.p_value is None else float(f"{verdict.p_value:.4g}"),
        stable=result.stable,
        canary=result.canary,
    )
    current.steps = [s for s in current.steps if s.index != index] + [entry]
    if result.stable.n or result.canary.n:
        ports.proposer.observe(current.profile, profile, current.stable_config, current.config, entry)

    decision = decide(verdict, step, Limits(rollout.max_inconclusive, rollout.on_inconclusive), current.inconclusive)
    if isinstance(decision, Advance):
        current.inconclusive = 0
        current.step_index = decision.step_index
        current.pending_action = "SetWeight"
        ports.persist(status)
        return _set_weight(ctx, ports, status, snapshot, decision.weight)
    if isinstance(decision, Promote):
        current.pending_action = "Promote"
        current.promote_digest = digest(_promoted_bytes(snapshot, current.config))
        ports.persist(status)
        return _promote(ctx, ports, status, profile, snapshot)
    if isinstance(decision, Rollback):
        return rollback(ctx, ports, status, snapshot, decision.reason, decision.message)
    current.inconclusive = decision.inconclusive
    if isinstance(decision, Hold):
        return Transition(
            "Held",
            f"Holding the canary at {current.canary_weight} % after {current.inconclusive} "
            f"inconclusive analyses: {decision.message}",
        )
    assert isinstance(decision, Wait)
    return Transition(
        decision.reason,
        f"Analysis {decision.inconclusive}/{rollout.max_inconclusive} inconclusive "
        f"({decision.reason}): {decision.message}",
    )


def _steps(ctx: RunContext) -> tuple[int, ...]:
    return tuple(ctx.spec.rollout.steps)


def _drift(ctx: RunContext, status: RunStatus, snapshot: ConfigSnapshot) -> Transition | None:
    current = status.current
    assert current is not None
    if snapshot.stable_digest() != current.stable_digest:
        return _drift_transition(status, snapshot, "the stable configuration was edited")
    if not _ours(status, snapshot):
        return _drift_transition(status, snapshot, "the canary keys were edited or removed")
    return None


def _drift_transition(status: RunStatus, snapshot: ConfigSnapshot, what: str) -> Transition:
    ref = snapshot.ref
    return Transition(
        "ConfigMapDrift",
        (
            f"ConfigMap {ref.namespace}/{ref.name} was changed by someone else ({what}); the run is paused and will not "
            "overwrite it. Restore the ConfigMap to resume, or delete the run to abandon the rollout."
        ),
    )


# --- actions -----------------------------------------------------------------------------------------
def start_canary(ctx: RunContext, ports: Ports, status: RunStatus, snapshot: ConfigSnapshot) -> Transition | None:
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
            set_keys={
                CANARY_KEY: canonical_json(current.config),
                CANARY_WEIGHT_KEY: str(weight),
                CANARY_REVISION_KEY: current.revision,
            },
        )
    except Conflict:
        return None  # the ConfigMap moved since the read: the next tick re-reads, checks and finishes the start
    current.pending_action = None
    current.canary_weight = weight
    current.step_index = 0
    current.step_started_at = ports.write_time(ctx)
    current.last_analysis_at = None
    return _canary_started(current, resumed=False)


def _canary_started(current, *, resumed: bool) -> Transition:
    return Transition(
        "CanaryStarted",
        f"Proposal {current.number} for {current.profile}: canary at {current.canary_weight} %{' (resumed)' if resumed else ''}.",
        event_message=f"{current.profile}: canary {current.revision} at {current.canary_weight} %: {canonical_json(current.config)}",
        event_key=f"{current.number}/CanaryStarted",
    )


def _superseded(ctx: RunContext, status: RunStatus, why: str) -> Transition:
    """A proposal whose canary was never written cannot go on: drop it, record why, propose again from the new state."""
    current = status.current
    assert current is not None
    message = f"Proposal {current.number} for {current.profile} dropped: {why}; nothing of it was written."
    record(
        status,
        ProposalRecord(
            number=current.number,
            profile=current.profile,
            config=current.config,
            verdict="Held",
            reason="Superseded",
            message=message,
            revision=current.revision,
            stable_config=current.stable_config,
            finished_at=now_iso(ctx.now),
        ),
    )
    status.current = None
    return Transition("Superseded", message)


def _set_weight(
    ctx: RunContext, ports: Ports, status: RunStatus, snapshot: ConfigSnapshot, weight: int
) -> Transition | None:
    try:
        ports.configs.write(
            snapshot.ref, expected_resource_version=snapshot.resource_version, set_keys={CANARY_WEIGHT_KEY: str(weight)}
        )
    except Conflict:
        return None  # re-read and re-check drift on the next tick; the pending action stays
    return _weight_written(ctx, ports, status, weight)


def _weight_written(
    ctx: RunContext, ports: Ports, status: RunStatus, weight: int, *, resumed: bool = False
) -> Transition:
    """The canary weight is in the ConfigMap: the step starts now and gets a full analysis interval."""
    current = status.current
    assert current is not None
    current.pending_action = None
    current.canary_weight = weight
    current.step_started_at = ports.write_time(ctx)
    current.last_analysis_at = None
    step = f"step {current.step_index + 1}/{len(ctx.spec.rollout.steps)}" + ("; resumed" if resumed else "")
    return Transition(
        "StepAdvanced",
        f"Proposal {current.number} for {current.profile}: canary at {weight} % ({step}).",
        event_message=f"{current.profile}: canary {current.revision} at {weight} %",
        event_key=f"{current.number}/step{current.step_index}",
    )


def _promoted_bytes(snapshot: ConfigSnapshot, config: dict) -> str:
    """The stable key after a promotion: the tuned values replaced, every other key's bytes kept."""
    return merge_stable(snapshot.stable or "{}", config)


def _promote(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot
) -> Transition | None:
    current = status.current
    assert current is not None
    try:
        ports.configs.write(
            snapshot.ref,
            expected_resource_version=snapshot.resource_version,
            set_keys={snapshot.ref.key: _promoted_bytes(snapshot, current.config)},
            remove_keys=snapshot.canary_keys,
        )
    except Conflict:
        return None  # the ConfigMap moved: the next tick re-reads, checks drift and finishes the pending promotion
    return _after_promotion(ctx, ports, status, profile)


def _after_promotion(ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec) -> Transition:
    current = status.current
    assert current is not None
    improvement = None
    if current.means.stable is not None and current.means.canary is not None and current.means.stable != 0:
        improvement = (current.means.canary - current.means.stable) / abs(current.means.stable) * 100.0
    total = (1.0 + (status.improvement_pct or 0.0) / 100.0) * (1.0 + (improvement or 0.0) / 100.0)
    status.improvement_pct = round((total - 1.0) * 100.0, 4)
    p = "n/a" if current.p_value is None else f"{current.p_value:.2g}"
    message = (
        f"Promoted proposal {current.number} for {current.profile}: objective "
        f"{'n/a' if improvement is None else f'{improvement:+.2f} %'} (p={p})."
    )
    record(
        status,
        ProposalRecord(
            number=current.number,
            profile=current.profile,
            config=current.config,
            verdict="Promoted",
            reason="CanaryBetter",
            message=message,
            improvement_pct=None if improvement is None else round(improvement, 4),
            p_value=current.p_value,
            revision=current.revision,
            stable_config=current.stable_config,
            steps=current.steps,
            finished_at=now_iso(ctx.now),
        ),
    )
    ports.proposer.learn(
        current.profile,
        profile,
        ProposalVerdict(
            number=current.number,
            stable=dict(current.stable_config),
            proposed=dict(current.config),
            promoted=True,
            reason="CanaryBetter",
            reward=(improvement or 0.0) / 100.0,
        ),
    )
    continuous.on_promotion(
        ctx, status, current, profile, current.promote_digest or digest(canonical_json(current.config))
    )
    continuous.sync_learning(ports, status, current.profile, profile)
    status.current = None
    return Transition("Promoted", message, event_key=f"{current.number}/Promoted")


def rollback(
    ctx: RunContext, ports: Ports, status: RunStatus, snapshot: ConfigSnapshot | None, reason: str, message: str
) -> Transition | None:
    current = status.current
    assert current is not None
    current.pending_action = "Rollback"
    current.pending_reason = reason
    status.message = message
    ports.persist(status)
    if snapshot is not None and snapshot.canary is not None and snapshot.canary_revision == current.revision:
        try:
            # Only the canary keys go; the stable bytes are never rewritten by a rollback.
            ports.configs.write(
                snapshot.ref, expected_resource_version=snapshot.resource_version, remove_keys=snapshot.canary_keys
            )
        except Conflict:
            return None  # re-read next time; the pending rollback is finished then
    profile = ctx.profiles.get(current.profile)
    return _after_rollback(
        ctx, ports, status, profile if isinstance(profile, ParameterProfileSpec) else None, reason, message
    )


def _after_rollback(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec | None, reason: str, message: str
) -> Transition:
    current = status.current
    assert current is not None
    text = f"Rolled back proposal {current.number} for {current.profile} ({reason}): {message}".rstrip(": ")
    record(
        status,
        ProposalRecord(
            number=current.number,
            profile=current.profile,
            config=current.config,
            verdict="RolledBack",
            reason=reason,
            message=text,
            p_value=current.p_value,
            revision=current.revision,
            stable_config=current.stable_config,
            steps=current.steps,
            finished_at=now_iso(ctx.now),
        ),
    )
    continuous.on_rollback(ctx, status, current, reason)
    if profile is not None:
        ports.proposer.learn(
            current.profile,
            profile,
            ProposalVerdict(
                number=current.number,
                stable=dict(current.stable_config),
                proposed=dict(current.config),
                promoted=False,
                reason=reason,
                reward=ROLLBACK_REWARD,
            ),
        )
        continuous.sync_learning(ports, status, current.profile, profile)
    status.current = None
    return Transition("RolledBack", text, cause=reason, event_key=f"{current.number}/RolledBack")
