"""A proposal's rollout: the canary's steps, each analysed and decided, and the ConfigMap writes they need.

`advance` is called on every tick while a proposal is out (`status.current`). Its order:

1. Whether the proposal may go on at all: its profile still exists, still targets the ConfigMap the
   canary is in, and the run is still in Apply mode. If not, the canary is withdrawn from where it was
   written (`current.target`, whatever happened to the profile) and the proposal is recorded.
2. A pending action (`current.pendingAction`, written before every ConfigMap write) is finished or
   verified through `RESUME`: a restart between "decided" and "written" never repeats or loses a write,
   because the ConfigMap describes itself (canary keys + revision name).
3. What else may have happened to the ConfigMap (`_integrity`). Every case has a way forward: a canary
   that someone removed or replaced is recorded as abandoned; an edit of the stable key withdraws the
   canary (the edit is kept); an edit of the canary's own keys pauses the run and the message says how
   to go on. While the canary keys name this proposal but hold someone else's edit, the proposal is never
   recorded as ended (nothing would withdraw that canary): a rollback due then, or a stable edit after it,
   keeps the run paused until the keys are restored or removed.
4. Once the step has run for an analysis interval, the step is analysed (`controller/analysis.py`), the
   measurements go to the proposer, and `rollout/decision.py` says what to do.

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
    stable_object,
    target_ref,
)
from ..models.names import label_value, object_name
from ..models.profile import ParameterProfileSpec
from ..models.run import (
    GuardRecord,
    ProposalRecord,
    ProposalStatus,
    RolloutSettings,
    RunStatus,
    StepRecord,
    VariantMeans,
    stable_idle,
)
from ..ports.base import Conflict, EventSink
from ..proposers.base import ProposalVerdict
from ..rollout.decision import Advance, Hold, Limits, Promote, Rollback, Step, Wait, decide
from ..rollout.statistics import Verdict
from . import continuous
from .analysis import analyse_step
from .conditions import get_condition, now_iso
from .context import Ports, ProfileUnreadable, RunContext, parse_time
from .history import record
from .target import config_ref, read_target
from .transitions import Transition

ROLLBACK_REWARD = -0.05  # what a rolled-back proposal teaches the proposer
#: Rollbacks that are a verdict on the configuration: the proposer learns from them and the configuration
#: waits out the rejection cooldown. The others (a profile edited away, a mode switch, a canary removed by
#: a person) say nothing about the configuration.
VERDICT_REASONS = frozenset({"CanaryWorse", "GuardBreached", "Inconclusive"})
REVISION_ATTEMPTS = 5  # names tried when a revision's name is taken by an object that is not this proposal's


def _read_canary_target(ctx: RunContext, ports: Ports, current, profile):
    """The ConfigMap the canary was written to (recorded in `current.target`; before that was recorded, the
    profile's target): its snapshot, a Transition when the read failed, or None when there is nothing to read."""
    ref = (
        config_ref(current.target)
        if current.target is not None
        else (target_ref(profile.target, ctx.namespace) if isinstance(profile, ParameterProfileSpec) else None)
    )
    if ref is None:
        return None
    snapshot = read_target(ports, ref, "disappeared during the rollout.")
    if isinstance(snapshot, ConfigSnapshot) and not _as_recorded(current, snapshot):
        # Every way forward from here acts on what someone else changed, and some record the proposal as ended
        # without a write. The read may be the cache's (`--configmap-cache-seconds`), which lags every writer but
        # this process: during a fail-over another operator process may have written this run's canary since.
        # Acted on unconfirmed, a stale "no canary" ended a proposal whose canary that process had just written.
        snapshot = read_target(ports, ref, "disappeared during the rollout.", fresh=True)
    return snapshot


def _as_recorded(current: ProposalStatus, snapshot: ConfigSnapshot) -> bool:
    """The ConfigMap is exactly as the status says the run left it: its canary, its weight, the same stable bytes."""
    return (
        _ours(current, snapshot)
        and snapshot.stable_digest() == current.stable_digest
        and snapshot.canary_weight == current.canary_weight
    )


def advance(ctx: RunContext, ports: Ports, status: RunStatus) -> Transition | None:
    current = status.current
    assert current is not None
    profile = ctx.profiles.get(current.profile)
    if isinstance(profile, ProfileUnreadable):  # the API failed this once: the canary stays as it is until it answers
        return Transition("KubernetesUnavailable", f"profile {current.profile}: {profile}")
    snapshot = _read_canary_target(ctx, ports, current, profile)
    gone = _cannot_go_on(ctx, current, profile)
    if gone is not None:
        if isinstance(snapshot, Transition) and snapshot.reason != "TargetNotFound":
            return snapshot  # the ConfigMap cannot be read now: withdraw the canary next tick, never record it undone
        reason, message = gone
        if (
            current.pending_action == "Promote"
            and isinstance(snapshot, ConfigSnapshot)
            and _promoted(current, snapshot, ports.events)
        ):
            # The promotion was written before the profile went: only its record is left to do.
            return _after_promotion(ctx, ports, status, profile if isinstance(profile, ParameterProfileSpec) else None)
        return rollback(ctx, ports, status, snapshot if isinstance(snapshot, ConfigSnapshot) else None, reason, message)
    assert isinstance(profile, ParameterProfileSpec)
    if isinstance(snapshot, Transition) or snapshot is None:
        return snapshot
    resume = RESUME.get(current.pending_action or "")
    if resume is not None:
        return resume(ctx, ports, status, profile, snapshot)
    return _step(ctx, ports, status, profile, snapshot)


def _cannot_go_on(ctx: RunContext, current: ProposalStatus, profile) -> tuple[str, str] | None:
    """(reason, message) when the proposal must end now, whatever its analysis would say."""
    if not isinstance(profile, ParameterProfileSpec):
        why = profile or "it is no longer in spec.profiles"
        return "ProfileNotReady", f"profile {current.profile}: {why}"
    if current.target is not None and profile.target is not None:
        now = target_ref(profile.target, ctx.namespace)
        if (now.namespace, now.name, now.key) != (current.target.namespace, current.target.name, current.target.key):
            return "ProfileRetargeted", (
                f"profile {current.profile} now targets ConfigMap {now.namespace}/{now.name} key {now.key}; the canary "
                f"was in {current.target.namespace}/{current.target.name} key {current.target.key}"
            )
    if ctx.spec.mode == "Recommend":
        return "RecommendMode", "the run was switched to mode Recommend, which never changes a ConfigMap"
    return None


# --- resuming a recorded action ----------------------------------------------------------------------
def _ours(current: ProposalStatus, snapshot: ConfigSnapshot) -> bool:
    """The canary out is this proposal's, byte for byte."""
    if snapshot.canary_revision != current.revision or snapshot.canary is None:
        return False
    if current.canary_digest is not None:
        return digest(snapshot.canary) == current.canary_digest
    return snapshot.canary == canonical_json(current.config)  # written by an operator that did not record the digest


def _edited(current: ProposalStatus, snapshot: ConfigSnapshot) -> bool:
    """The canary keys still name this proposal, but hold what someone else wrote: the run may neither withdraw
    them (a person's edit is never overwritten) nor record the proposal as ended (nothing else would withdraw them)."""
    return snapshot.canary_revision == current.revision and not _ours(current, snapshot)


def _rollback_waits(current: ProposalStatus, reason: str) -> str:
    return f"the canary configuration was edited; proposal {current.number} is to be rolled back ({reason})"


def _promoted(current: ProposalStatus, snapshot: ConfigSnapshot, events: EventSink) -> bool:
    """The promotion was written: this proposal's canary is gone and the stable bytes are the promoted ones, or hold
    the promoted values where a person edited another key since, or the promotion's Event was recorded (it follows
    the write) where a person or another run wrote over the promoted values since. (Another run's canary may be out
    already: the promotion freed the ConfigMap before its record was written.)"""
    expected = current.promote_digest or digest(canonical_json(current.config))  # older statuses wrote the config whole
    ours_out = snapshot.canary is not None and snapshot.canary_revision == current.revision
    if ours_out:
        return False
    if snapshot.stable_digest() == expected:
        return True
    # A proposal changes at least one tuned value, so the stable configuration holds all of them only once promoted.
    try:
        stable = stable_object(snapshot.stable)
    except ValueError:
        stable = None
    if stable is not None and all(key in stable and stable[key] == value for key, value in current.config.items()):
        return True
    return events.reported(f"{current.number}/Promoted")  # asked last: an API read where the ConfigMap cannot tell


def _resume_start(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot
) -> Transition | None:
    current = status.current
    assert current is not None
    # The write happened (the canary keys name this proposal); only the status was lost (and maybe the event).
    # Someone may have edited the canary since: it is still this proposal's to withdraw, never another's (recorded
    # as superseded, its canary would stay out with nothing to withdraw it); the next tick pauses on the edit.
    if _ours(current, snapshot) or _edited(current, snapshot):
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
    problem = _integrity(ctx, ports, status, snapshot, check_weight=False)
    if problem is not None:
        return problem
    steps = _steps(ctx)
    current.step_index = min(current.step_index, len(steps) - 1)  # the steps may have been shortened since
    expected = steps[current.step_index]
    if snapshot.canary_weight == expected:
        # The weight was written but the status after it was lost. When is unknown, so the step starts
        # now: it gets a full analysis interval, and its window never reaches back into the previous step.
        return _weight_written(ctx, ports, status, expected, resumed=True)
    if snapshot.canary_weight != current.canary_weight:
        # Neither what the run was writing nor what it wrote before: someone set the weight meanwhile (the write
        # failed on their change). Theirs stays; the run pauses as for any edit of the canary's keys.
        return _paused(
            snapshot,
            f"the canary weight was changed to {snapshot.canary_weight} while the run was setting {expected} (it "
            f"had written {current.canary_weight})",
        )
    return _set_weight(ctx, ports, status, snapshot, expected)


def _resume_promote(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot
) -> Transition | None:
    current = status.current
    assert current is not None
    if _promoted(current, snapshot, ports.events):
        return _after_promotion(ctx, ports, status, profile)
    ours = _ours(current, snapshot)
    if ours and snapshot.stable_digest() == current.stable_digest:
        return _promote(ctx, ports, status, profile, snapshot)
    if not ours:
        try:
            stable_object(snapshot.stable)
        except ValueError as error:
            # The canary is gone, so the promotion may have been written (its Event, if any, was not found), and only
            # the stable key can tell: nothing is recorded (neither way) until it parses again.
            return Transition(
                "InvalidStableConfig",
                f"Proposal {current.number} for {current.profile}: its promotion is pending and its canary is out of "
                f"{snapshot.ref.describe()}, but the stable configuration is {error}; the promotion is verified once "
                "it parses again.",
            )
    return _integrity(ctx, ports, status, snapshot, check_weight=False) or _paused(
        snapshot, "the ConfigMap changed while a promotion was pending"
    )


def _resume_rollback(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot
) -> Transition | None:
    current = status.current
    assert current is not None
    reason = current.pending_reason or "RolledBack"
    # (an operator before `pendingMessage` left the decision in the run's message alone)
    message = current.pending_message if current.pending_message is not None else status.message or ""
    if _edited(current, snapshot):
        return _paused(snapshot, _rollback_waits(current, reason))
    if not _ours(current, snapshot):
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


# --- what may have happened to the ConfigMap -------------------------------------------------------------
def _integrity(
    ctx: RunContext, ports: Ports, status: RunStatus, snapshot: ConfigSnapshot, *, check_weight: bool = True
) -> Transition | None:
    """None while the ConfigMap is exactly what the run wrote; otherwise the way forward."""
    current = status.current
    assert current is not None
    if snapshot.canary_revision is None and snapshot.canary is None:
        return abandon(ctx, ports, status, "CanaryRemoved", "the canary keys were removed from the ConfigMap")
    if snapshot.canary_revision != current.revision:
        theirs = snapshot.canary_revision or "no revision"
        return abandon(ctx, ports, status, "CanaryReplaced", f"another canary ({theirs}) replaced this one")
    if snapshot.stable_digest() != current.stable_digest:
        if _ours(current, snapshot):  # the edit stays; the canary, compared with a stable that moved, goes
            return rollback(
                ctx,
                ports,
                status,
                snapshot,
                "StableEdited",
                "the stable configuration was edited during the rollout; the edit is kept and the canary withdrawn",
            )
        # The canary keys still name this proposal: ended here, its canary would stay out with nothing to withdraw
        # it (the run finished, or waited on it for good). A person's canary edit pauses the run; so does this.
        return _paused(snapshot, "the stable configuration and the canary were both edited")
    if not _ours(current, snapshot):
        return _paused(snapshot, "the canary configuration was edited")
    if check_weight and snapshot.canary_weight != current.canary_weight:
        return _paused(
            snapshot,
            f"the canary weight was changed to {snapshot.canary_weight} (the run wrote {current.canary_weight})",
        )
    return None


def _paused(snapshot: ConfigSnapshot, what: str) -> Transition:
    ref = snapshot.ref
    return Transition(
        "ConfigMapDrift",
        f"ConfigMap {ref.namespace}/{ref.name} was changed by someone else ({what}); the run is paused and will not "
        f"overwrite it. To go on, restore what the run wrote; to end this proposal, remove the canary keys "
        f"({CANARY_KEY}*) from the ConfigMap; or delete the run (its canary keys are then removed, stable untouched).",
    )


# --- one step: timing, analysis, decision ------------------------------------------------------------
def _step(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec, snapshot: ConfigSnapshot
) -> Transition | None:
    current = status.current
    assert current is not None
    problem = _integrity(ctx, ports, status, snapshot)
    if problem is not None:
        return problem
    rollout = ctx.spec.rollout
    limits = _limits(rollout)
    if current.awaiting_approval and not rollout.require_approval:
        # A person turned approval off while the canary waited: its next analysis decides (on the samples since
        # the step started, so on fresh ones too), as if approval had never been asked for.
        current.awaiting_approval = False
    # Held for a human (the last analysis's p-value says how many were allowed, as `decide` did), or passed its
    # analysis and waiting for a person's approval (controller/manual.py).
    held = rollout.on_inconclusive == "Hold" and current.inconclusive >= limits.allowed(current.p_value)
    waiting = current.awaiting_approval or held
    recovered = _recovered(ctx, status, held)  # checked before waiting: a waiting run shows an outage over too
    if recovered is not None:
        return recovered
    if waiting:
        return None
    # Analyse once the step has run for an analysis interval, and again one interval after an inconclusive
    # analysis (so `maxInconclusive` counts analysis intervals, not operator ticks). The window always
    # starts at the step's start: a repeated analysis sees more samples.
    started = parse_time(current.step_started_at) or ctx.now
    since = max(started, parse_time(current.last_analysis_at) or started)
    if (ctx.now - since).total_seconds() < rollout.analysis_interval_seconds:
        return None
    steps = _steps(ctx)
    current.step_index = min(current.step_index, len(steps) - 1)  # the steps may have been shortened since
    step = Step(current.step_index, steps)
    verdict = _analyse(ctx, ports, current, profile, step, started)
    decision = decide(verdict, step, limits, current.inconclusive)
    if isinstance(decision, Advance):
        current.inconclusive = 0
        current.step_index = decision.step_index
        current.pending_action = "SetWeight"
        ports.persist(status)
        return _set_weight(ctx, ports, status, snapshot, decision.weight)
    if isinstance(decision, Promote) and rollout.require_approval:
        current.awaiting_approval = True
        last = next((s for s in current.steps if s.index == current.step_index), None)
        evidence = "" if last is None else f" ({last.evidence()})"
        return Transition(
            "AwaitingApproval",
            f"Proposal {current.number} for {current.profile} passed its last analysis{evidence} and waits at "
            f"{current.canary_weight} % for approval: kubectl autotune promote {ctx.name} -n {ctx.namespace} "
            f"(or annotate the run autotune.dwcp.io/promote=<a new value>); abort with kubectl autotune abort.",
        )
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
    return _waiting(decision, verdict, rollout)


def _recovered(ctx: RunContext, status: RunStatus, held: bool) -> Transition | None:
    """The ConfigMap is as the run left it: a Degraded condition from an outage (or an edit) that is over is cleared,
    the message saying what the canary does now. A held canary is Degraded for its own reason, Inconclusive, which
    stays; after an outage it gets that reason back."""
    current = status.current
    assert current is not None
    degraded = get_condition(status.conditions, "Degraded")
    if degraded is None or degraded.status != "True" or (held and degraded.reason == "Inconclusive"):
        return None
    if held:
        return Transition(
            "Held",
            f"Holding the canary at {current.canary_weight} % after {current.inconclusive} inconclusive analyses "
            "(the ConfigMap is as the run left it).",
        )
    what = (
        f"waits at {current.canary_weight} % for approval: kubectl autotune promote {ctx.name} -n {ctx.namespace}"
        if current.awaiting_approval
        else f"at {current.canary_weight} % goes on"
    )
    return Transition(
        "AsExpected",
        f"Proposal {current.number} for {current.profile}: the ConfigMap is as the run left it; the canary {what}.",
    )


def _limits(rollout: RolloutSettings) -> Limits:
    return Limits(
        rollout.max_inconclusive,
        rollout.on_inconclusive,
        rollout.promising_extra_analyses,
        rollout.promising_significance,
    )


def _waiting(decision: Wait, verdict: Verdict, rollout: RolloutSettings) -> Transition:
    """An inconclusive analysis with analyses left: how many, and why more than `maxInconclusive` when it leans better."""
    extended = (
        f"; it leans better (p {verdict.p_value:.2g} < {rollout.promising_significance:g}): "
        f"{rollout.promising_extra_analyses} more analyses than maxInconclusive"
        if decision.limit > rollout.max_inconclusive and verdict.p_value is not None
        else ""
    )
    return Transition(
        decision.reason,
        f"Analysis {decision.inconclusive}/{decision.limit} inconclusive ({decision.reason}{extended}): "
        f"{decision.message}",
    )


def _analyse(
    ctx: RunContext,
    ports: Ports,
    current: ProposalStatus,
    profile: ParameterProfileSpec,
    step: Step,
    started: dt.datetime,
):
    """Analyse the step, keep what it was decided on (`current.steps`), and hand the measurements to the proposer."""
    rollout = ctx.spec.rollout
    # At 100 % the stable variant gets no work: its samples come from the interval before this step, and only from
    # it (after the switch its series holds a few straggling units, not the stable configuration's measure).
    baseline_start, baseline_end = (
        (started - dt.timedelta(seconds=rollout.analysis_interval_seconds), started)
        if stable_idle(current.canary_weight)
        else (started, None)
    )
    result = analyse_step(
        profile,
        ports.metrics,
        rollout,
        started,
        ctx.now,
        last_step=step.last,
        baseline_start=baseline_start,
        baseline_end=baseline_end,
    )
    verdict = result.verdict
    current.last_analysis_at = now_iso(ctx.now)
    current.means = VariantMeans(stable=result.stable.score, canary=result.canary.score)
    current.p_value = verdict.p_value
    current.samples = {"stable": result.stable.n, "canary": result.canary.n}
    entry = StepRecord(
        index=step.index,
        weight=current.canary_weight,
        analysed_at=current.last_analysis_at,
        verdict=verdict.phase,
        reason=verdict.reason,
        p_value=None if verdict.p_value is None else float(f"{verdict.p_value:.4g}"),
        stable=result.stable,  # six significant digits (analysis.significant)
        canary=result.canary,
        guards=[
            GuardRecord(
                metric=g.limit.metric,
                status=g.status,
                degradation_pct=None if g.degradation_pct is None else round(g.degradation_pct, 3),
                max_degradation_pct=g.limit.max_degradation_pct,
            )
            for g in verdict.guards
        ],
    )
    current.steps = [s for s in current.steps if s.index != step.index] + [entry]
    if result.stable.n or result.canary.n:
        ports.proposer.observe(current.profile, profile, current.stable_config, current.config, entry)
    return verdict


def _steps(ctx: RunContext) -> tuple[int, ...]:
    return tuple(ctx.spec.rollout.steps)


# --- actions -----------------------------------------------------------------------------------------
def revision_name(run: str, profile: str, number: int, attempt: int = 1) -> str:
    """The immutable revision ConfigMap of a proposal; a later attempt when the name was taken by something else."""
    parts = [run, profile, str(number)] + ([f"r{attempt}"] if attempt > 1 else [])
    return object_name(*parts)


def start_canary(ctx: RunContext, ports: Ports, status: RunStatus, snapshot: ConfigSnapshot) -> Transition | None:
    current = status.current
    assert current is not None and current.revision is not None
    canary = merge_stable(snapshot.stable or "{}", current.config)  # untuned keys travel with the canary too
    for attempt in range(1, REVISION_ATTEMPTS + 1):
        try:
            ports.configs.create_revision(
                snapshot.ref.namespace,
                current.revision,
                {
                    "config.json": canary,
                    "stable.json": snapshot.stable or "",
                    "profile": current.profile,
                    "run": ctx.name,
                },
                # Kubernetes ignores (and garbage-collects for) an owner in another namespace, so a revision
                # of a ConfigMap outside the run's namespace is left unowned rather than silently deleted.
                owner=ctx.owner if snapshot.ref.namespace == ctx.namespace else None,
                labels={
                    "autotune.dwcp.io/run": label_value(ctx.name),
                    "autotune.dwcp.io/profile": label_value(current.profile),
                },
            )
            break
        except Conflict:  # the name is taken by an object that is not this proposal's: never touched, use another
            if attempt == REVISION_ATTEMPTS:
                return _superseded(
                    ctx, status, f"revision names up to {current.revision} are all taken by other objects"
                )
            current.revision = revision_name(ctx.name, current.profile, current.number, attempt + 1)
            ports.persist(status)
    weight = ctx.spec.rollout.steps[0]
    current.canary_digest = digest(canary)  # (the proposal recorded it already; older statuses did not)
    try:
        ports.configs.write(
            snapshot.ref,
            expected_resource_version=snapshot.resource_version,
            set_keys={CANARY_KEY: canary, CANARY_WEIGHT_KEY: str(weight), CANARY_REVISION_KEY: current.revision},
        )
    except Conflict:
        return None  # the ConfigMap moved since the read: the next tick re-reads, checks and finishes the start
    current.pending_action = None
    current.canary_weight = weight
    current.step_index = 0
    current.step_started_at = ports.write_time(ctx)
    current.last_analysis_at = None
    return _canary_started(current, resumed=False)


def _canary_started(current: ProposalStatus, *, resumed: bool) -> Transition:
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
    _record_end(ctx, status, "Held", "Superseded", message)
    status.current = None
    return Transition("Superseded", message)


def abandon(ctx: RunContext, ports: Ports, status: RunStatus, reason: str, why: str) -> Transition:
    """The canary is no longer this run's to withdraw (someone removed or replaced it): record the end, go on."""
    current = status.current
    assert current is not None
    message = f"Proposal {current.number} for {current.profile} ended: {why}. Nothing was written; the run goes on."
    return _after_rollback(ctx, ports, status, None, reason, message)


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
    passed = next((s for s in current.steps if s.index == current.step_index - 1), None)
    evidence = "" if passed is None else f"; the previous step passed: {passed.evidence()}"
    return Transition(
        "StepAdvanced",
        f"Proposal {current.number} for {current.profile}: canary at {weight} % ({step}){evidence}.",
        event_message=f"{current.profile}: canary {current.revision} at {weight} %{evidence}",
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


def promote_now(ctx: RunContext, ports: Ports, status: RunStatus, why: str) -> Transition | None:
    """Promote the canary out now, whatever step it is at (a person asked, or approved a waiting canary).

    The same write-ahead path as an analysed promotion: `Promote` is recorded first, the ConfigMap checked to be
    exactly what the run wrote, then written once; history says `ManualPromotion`."""
    current = status.current
    assert current is not None
    profile = ctx.profiles.get(current.profile)
    if not isinstance(profile, ParameterProfileSpec):
        return None  # the profile went: `advance` withdraws the canary this tick
    snapshot = _read_canary_target(ctx, ports, current, profile)
    if not isinstance(snapshot, ConfigSnapshot):
        return snapshot
    problem = _integrity(ctx, ports, status, snapshot, check_weight=False)
    if problem is not None:
        return problem
    # A canary that passed its analysis and waited for approval is promoted on its merits (CanaryBetter); one
    # promoted before its analysis said so is a person's decision (ManualPromotion).
    current.pending_reason = "Approved" if current.awaiting_approval else "ManualPromotion"
    current.awaiting_approval = False
    current.pending_action = "Promote"
    current.promote_digest = digest(_promoted_bytes(snapshot, current.config))
    status.message = f"Proposal {current.number} for {current.profile}: {why}."
    ports.persist(status)
    return _promote(ctx, ports, status, profile, snapshot)


def abort(ctx: RunContext, ports: Ports, status: RunStatus, why: str) -> Transition | None:
    """Withdraw the canary out because a person aborted the run (no verdict on the configuration)."""
    current = status.current
    assert current is not None
    profile = ctx.profiles.get(current.profile)
    snapshot = _read_canary_target(ctx, ports, current, profile)
    if isinstance(snapshot, Transition) and snapshot.reason != "TargetNotFound":
        return snapshot  # the API failed: retried next tick
    return rollback(ctx, ports, status, snapshot if isinstance(snapshot, ConfigSnapshot) else None, "Aborted", why)


def _verdict(ctx: RunContext, current: ProposalStatus, promoted: bool, reason: str, reward: float) -> ProposalVerdict:
    return ProposalVerdict(
        number=current.number,
        stable=dict(current.stable_config),
        proposed=dict(current.config),
        promoted=promoted,
        reason=reason,
        reward=reward,
        key=f"{ctx.uid}/{current.number}",
    )


def _after_promotion(
    ctx: RunContext, ports: Ports, status: RunStatus, profile: ParameterProfileSpec | None
) -> Transition:
    current = status.current
    assert current is not None
    improvement = None
    if current.means.stable is not None and current.means.canary is not None and current.means.stable != 0:
        improvement = (current.means.canary - current.means.stable) / abs(current.means.stable) * 100.0
    total = (1.0 + (status.improvement_pct or 0.0) / 100.0) * (1.0 + (improvement or 0.0) / 100.0)
    status.improvement_pct = round((total - 1.0) * 100.0, 4)
    own = (1.0 + status.improvements.get(current.profile, 0.0) / 100.0) * (1.0 + (improvement or 0.0) / 100.0)
    status.improvements[current.profile] = round((own - 1.0) * 100.0, 4)
    p = "n/a" if current.p_value is None else f"{current.p_value:.2g}"
    reason = "ManualPromotion" if current.pending_reason == "ManualPromotion" else "CanaryBetter"
    how = {"ManualPromotion": " on request", "Approved": " (approved)"}.get(current.pending_reason or "", "")
    message = (
        f"Promoted proposal {current.number} for {current.profile}{how}: objective "
        f"{'n/a' if improvement is None else f'{improvement:+.2f} %'} (p={p})."
    )
    _record_end(ctx, status, "Promoted", reason, message, improvement)
    if profile is not None:
        verdict = _verdict(ctx, current, True, reason, (improvement or 0.0) / 100.0)
        ports.proposer.learn(current.profile, profile, verdict)
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
    current.pending_message = message  # the run's message is overwritten by a failed tick before this finishes
    status.message = message
    ports.persist(status)
    if snapshot is not None and _edited(current, snapshot):
        return _paused(snapshot, _rollback_waits(current, reason))
    if snapshot is not None and _ours(current, snapshot):
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
    _record_end(ctx, status, "RolledBack", reason, text)
    if reason in VERDICT_REASONS:
        continuous.on_rollback(ctx, status, current, reason)
        if profile is not None:
            ports.proposer.learn(current.profile, profile, _verdict(ctx, current, False, reason, ROLLBACK_REWARD))
    if profile is not None:
        continuous.sync_learning(ports, status, current.profile, profile)
    status.current = None
    return Transition("RolledBack", text, cause=reason, event_key=f"{current.number}/RolledBack")


def _record_end(
    ctx: RunContext, status: RunStatus, verdict: str, reason: str, message: str, improvement: float | None = None
) -> None:
    current = status.current
    assert current is not None
    record(
        status,
        ProposalRecord(
            number=current.number,
            profile=current.profile,
            config=current.config,
            verdict=verdict,
            reason=reason,
            message=message,
            improvement_pct=None if improvement is None else round(improvement, 4),
            p_value=current.p_value if verdict != "Held" else None,
            revision=current.revision,
            stable_config=current.stable_config,
            steps=current.steps,
            finished_at=now_iso(ctx.now),
        ),
    )
