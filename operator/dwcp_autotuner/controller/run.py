"""The OptimizationRun state machine: propose → canary steps → verdict → learn → next proposal.

One call of `reconcile` advances a run by at most one transition (`controller/transitions.py` lists
them all and is the only code that changes the phase) and returns the new status. It is safe to call at
any time, any number of times, after a crash at any point:

- Everything the next call needs is in the status and the ConfigMaps, never only in memory.
- Before the controller changes a ConfigMap it records what it is about to do
  (`current.pendingAction`) and persists the status; after a restart the action is finished or
  verified against the ConfigMap (which describes itself: canary keys + revision name), so a
  promotion happens once and a canary is never left orphaned (`controller/rollout.py`).
- Every ConfigMap write is one patch guarded by the resourceVersion of the read that justified it.

This module holds the entry points and the phases before a canary: Pending, Pretraining, Proposing
(and how a run finishes). The rollout is `controller/rollout.py`; what a finished continuous run
watches, and safe exploration before a proposal, is `controller/continuous.py`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from ..canary.protocol import canonical_json, digest, merge_stable, target_ref, withdraw
from ..models.profile import ParameterProfileSpec
from ..models.run import (
    TERMINAL_PHASES,
    HoldRecord,
    OptimizationRunSpec,
    Phase,
    ProposalRecord,
    ProposalStatus,
    Recommendation,
    RunStatus,
    RunSummary,
    TargetRef,
)
from ..ports.base import ConfigStore, EventSink, NotFound
from ..proposers.base import NoProposal, Proposal
from . import continuous, manual, rollout
from .conditions import now_iso
from .context import Ports, RunContext, parse_time
from .history import record
from .target import config_ref, parse_stable, read_target
from .transitions import Transition, apply

# What bench/train_speed.py measures on two cores (500,000 steps with updates in about 200 s): for estimates only.
TRAINING_STEPS_PER_SECOND = 2_400


# --- entry points ----------------------------------------------------------------------------------
def reconcile(ctx: RunContext, ports: Ports) -> RunStatus:
    """Advance the run by at most one transition and return its new status."""
    status = ctx.status.model_copy(deep=True)
    if status.phase == Phase.FAILED and status.observed_generation != ctx.generation:
        status = manual.start_over(status)  # the spec was fixed: a new generation starts the run again
    status.observed_generation = ctx.generation
    status, transition = manual.act(ctx, ports, status)  # a person's pause, promote, abort or retry first
    if transition is None and not (ctx.spec.paused and status.phase not in TERMINAL_PHASES):
        transition = _next(ctx, ports, status)
    status = status if transition is None else apply(ctx, ports.events, status, transition)
    status.summary = summarise(status, ctx.spec)
    return status


def summarise(status: RunStatus, spec: OptimizationRunSpec) -> RunSummary:
    """The short strings `kubectl get` shows (the printer columns): profile, step, proposals, improvement."""
    current = status.current
    made = status.proposals - (status.cycle_proposals_start if spec.continuous.enabled else 0)
    steps = len(spec.rollout.steps)
    message = status.message or ""
    return RunSummary(
        profile=None if current is None else current.profile,
        step=None if current is None or not current.canary_weight else f"{current.step_index + 1}/{steps}",
        proposals=f"{made}/{spec.budget.max_proposals}",
        improvement=", ".join(f"{name} {gain:+.1f}%" for name, gain in status.improvements.items()) or None,
        message=message if len(message) <= 80 else message[:79] + "…",
    )


def settled(
    status: RunStatus, generation: int | None, continuous_enabled: bool, annotations: Mapping[str, str] | None = None
) -> bool:
    """Whether a run needs no reconcile at all: finished for this generation, not a continuous watch, and no
    manual action (a retry) waiting to be acted on."""
    if status.phase not in TERMINAL_PHASES or status.observed_generation != generation:
        return False
    if manual.pending(status, annotations or {}):
        return False
    return status.phase in (Phase.FAILED, Phase.ABORTED) or not continuous_enabled


@dataclass(frozen=True)
class RunRef:
    """Who a run is, for a reconcile that has no valid spec to work with."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    now: dt.datetime


def reconcile_failed(
    ref: RunRef, events: EventSink, status: RunStatus, error: str, ticks: int, since: str
) -> RunStatus:
    """A reconcile raised: the run is Degraded (InternalError) with the error and how long it has lasted.

    The phase stays (nothing was decided); the Event is emitted once, when the condition first turns True."""
    status = status.model_copy(deep=True)
    message = (
        f"Internal error, {ticks} tick(s) in a row since {since}: {error}. The operator retries every tick; "
        "its log has the traceback (once)."
    )
    return apply(ref, events, status, Transition("InternalError", message, event_message=f"Internal error: {error}"))


def reconcile_recovered(ref: RunRef, events: EventSink, status: RunStatus) -> RunStatus:
    """A reconcile worked again after an internal error: Degraded goes back to False (a Resumed Event)."""
    degraded = next((c for c in status.conditions if c.type == "Degraded"), None)
    if degraded is None or degraded.status != "True" or degraded.reason != "InternalError":
        return status
    status = status.model_copy(deep=True)
    return apply(ref, events, status, Transition("AsExpected", "Reconciling again after an internal error."))


def reconcile_invalid(
    ref: RunRef, configs: ConfigStore, events: EventSink, status: RunStatus, problem: str
) -> RunStatus:
    """The spec does not validate: withdraw a canary that is out (from where it was written), then fail.

    An edit the schema accepts but the models reject, or an operator upgrade that checks more, must not
    leave a canary out. The withdrawal is guarded like any other; an API failure raises (retried on
    the next tick) rather than failing the run with its canary still out.
    """
    status = status.model_copy(deep=True)
    if status.phase == Phase.FAILED and status.observed_generation == ref.generation:
        return status
    status.observed_generation = ref.generation
    current = status.current
    withdrawn = False
    if current is not None and current.revision is not None and current.target is not None:
        try:
            withdrawn = withdraw(configs, config_ref(current.target), current.revision)
        except NotFound:
            withdrawn = False
    if withdrawn and current is not None:
        problem += "; the canary that was out was withdrawn (the stable configuration is unchanged)"
        record(
            status,
            ProposalRecord(
                number=current.number,
                profile=current.profile,
                config=current.config,
                verdict="RolledBack",
                reason="InvalidSpec",
                message=problem,
                revision=current.revision,
                stable_config=current.stable_config,
                steps=current.steps,
                finished_at=now_iso(ref.now),
            ),
        )
        events.emit("Warning", "RolledBack", f"{current.profile}: canary {current.revision} withdrawn: {problem}")
        status.current = None
    return apply(ref, events, status, Transition("InvalidSpec", problem))


def _next(ctx: RunContext, ports: Ports, status: RunStatus) -> Transition | None:
    if status.phase in TERMINAL_PHASES:
        if status.phase not in (Phase.FAILED, Phase.ABORTED) and ctx.spec.continuous.enabled:
            return continuous.watch(ctx, ports, status)  # may start a new cycle
        return None
    if status.started_at is None:
        status.started_at = now_iso(ctx.now)
    if status.current is not None:
        return rollout.advance(ctx, ports, status)
    if status.phase == Phase.PROPOSING:
        stop = _budget_left(ctx, status)
        if stop:  # a run whose budget is spent finishes even if a profile became unusable meanwhile
            return _finish(ctx, ports, status, stop)
    problems = {name: p for name, p in ctx.profiles.items() if isinstance(p, str)}
    if problems:
        # Not terminal: with GitOps the profile may simply be applied after the run. Wait for it.
        name, problem = next(iter(problems.items()))
        return Transition("ProfileNotReady", f"profile {name}: {problem}")
    if status.phase == Phase.PENDING:
        return Transition("Started", "Run started.")
    if status.phase == Phase.PRETRAINING:
        return _pretrain(ctx, ports, status)
    return _propose(ctx, ports, status)


# --- phases ----------------------------------------------------------------------------------------
def _pretrain(ctx: RunContext, ports: Ports, status: RunStatus) -> Transition:
    _warn_if_long(ctx, ports, status)
    busy = False
    for name in ctx.spec.profiles:
        profile = ctx.profiles[name]
        assert not isinstance(profile, str)
        progress = ports.proposer.pretrain(name, profile)
        if progress is not None:
            status.training[name] = progress
            busy = busy or progress.busy
    if busy:
        done = sum(t.episodes for t in status.training.values())
        total = sum(t.episodes_total for t in status.training.values())
        return Transition("Pretraining", f"Pretraining on twins: {done}/{total} episodes.")
    for name in ctx.spec.profiles:
        continuous.sync_learning(ports, status, name, ctx.profiles[name])
    status.conditions = continuous.warm_start_condition(ctx, status)
    failed = {name: t.message for name, t in status.training.items() if t.failed}
    for name, why in failed.items():
        ports.events.emit("Warning", "PretrainingFailed", f"{name}: {why}")
    if failed:
        message = "Pretrained, except " + "; ".join(f"{name}: {why}" for name, why in failed.items()) + "."
    else:
        message = "Pretrained." if status.training else "No twin to pretrain on; learning online."
    return Transition("Pretrained", message)


def _warn_if_long(ctx: RunContext, ports: Ports, status: RunStatus) -> None:
    """One Warning Event when the DQN's pretraining would take an hour or more (at the measured training speed)."""
    agent = ctx.spec.agent
    twinned = [name for name in ctx.spec.profiles if getattr(ctx.profiles.get(name), "twin", None)]
    if agent.strategy != "DQN" or not twinned:
        return
    steps = agent.episodes * agent.steps_per_episode * len(twinned)
    hours = steps / TRAINING_STEPS_PER_SECOND / 3600.0
    if hours >= 1.0:
        ports.events.emit(
            "Warning",
            "LongPretraining",
            f"Pretraining is {steps:,} environment steps ({agent.episodes} episodes × {agent.steps_per_episode} steps "
            f"× {len(twinned)} profile(s)): about {hours:.1f} h at {TRAINING_STEPS_PER_SECOND:,} steps/s. Lower "
            "spec.agent.episodes or stepsPerEpisode for a shorter one; the run proposes when it is done.",
            key=f"pretraining/{status.cycle}/{status.proposals}",
        )


def _budget_left(ctx: RunContext, status: RunStatus) -> str | None:
    """None while the run may propose again; otherwise why it stops."""
    budget = ctx.spec.budget
    limit = (ctx.spec.continuous.proposals_per_cycle if status.cycle else None) or budget.max_proposals
    if status.proposals - status.cycle_proposals_start >= limit:  # per cycle (continuous runs re-optimize in cycles)
        return "BudgetExhausted"
    started = parse_time(status.cycle_started_at or status.started_at)
    if budget.deadline_seconds is not None and started is not None:
        if (ctx.now - started).total_seconds() >= budget.deadline_seconds:
            return "DeadlineReached"
    if budget.target_improvement_pct is not None and (status.improvement_pct or 0.0) >= budget.target_improvement_pct:
        return "TargetReached"
    return None


def _finish(ctx: RunContext, ports: Ports, status: RunStatus, reason: str) -> Transition:
    continuous.on_finish(ctx, ports, status)
    promoted = sum(1 for h in status.history if h.verdict == "Promoted")
    recommended = sum(1 for h in status.history if h.verdict == "Recommended")
    if ctx.spec.mode == "Recommend" or promoted:
        what = (
            f"{recommended} recommendation(s)"
            if ctx.spec.mode == "Recommend"
            else f"{promoted} of {status.proposals} proposal(s) promoted"
        )
        imp = "".join(f", {name} {gain:+.1f} %" for name, gain in status.improvements.items())
        if not imp and status.improvement_pct is not None:  # a status written before `improvements` existed
            imp = f", objective {status.improvement_pct:+.1f} %"
        return Transition(reason, f"Finished ({reason}): {what}{imp}.", to=Phase.SUCCEEDED)
    cycle = [h for h in status.history if h.number > status.cycle_proposals_start]
    rolled_back = [h for h in cycle if h.verdict == "RolledBack"]
    if not rolled_back:
        message = (
            f"Finished ({reason}): nothing was rolled out; {len(cycle)} proposal(s), none of them a canary "
            f"({', '.join(sorted({h.reason for h in cycle})) or 'none made'})."
        )
        return Transition(reason, message, to=Phase.UNCHANGED)
    if all(_for_want_of_metrics(h) for h in rolled_back):
        message = (
            f"Finished ({reason}): {len(rolled_back)} canary(ies) rolled back because the metrics were unavailable "
            "(no data or the metrics backend unreachable); nothing was judged worse. Check Prometheus and the "
            "profiles' queries."
        )
        return Transition(reason, message, to=Phase.ROLLED_BACK, cause="MetricsUnavailable")
    message = (
        f"Finished ({reason}): no proposal was better than the stable configuration; "
        f"{len(rolled_back)} canary(ies) rolled back."
    )
    return Transition(reason, message, to=Phase.ROLLED_BACK, cause="NothingPromoted")


def _for_want_of_metrics(record: ProposalRecord) -> bool:
    """A rollback because no analysis could measure the canary (Prometheus down, no series), not a verdict on it."""
    return (
        record.reason == "Inconclusive"
        and bool(record.steps)
        and record.steps[-1].reason
        in (
            "MetricsUnavailable",
            "NoData",
        )
    )


def _propose(ctx: RunContext, ports: Ports, status: RunStatus) -> Transition | None:
    overlap = _overlapping_profiles(ctx)
    if overlap is not None:
        return Transition("ProfilesOverlap", overlap)
    name = _next_profile(ctx, status)
    if name is None:
        return _all_held(ctx, ports, status)
    profile = ctx.profiles[name]
    assert not isinstance(profile, str)
    ref = target_ref(profile.target, ctx.namespace)
    snapshot = read_target(ports, ref, "not found; waiting for it.")
    if isinstance(snapshot, Transition):
        return snapshot
    if snapshot.canary is not None:
        return Transition(
            "ForeignCanary",
            f"ConfigMap {ref.namespace}/{ref.name} already has a canary ({snapshot.canary_revision or 'unknown revision'}); "
            "another run or a person is rolling out. Waiting (remove the autotune.dwcp.io.canary* keys if it is stale).",
        )
    stable = parse_stable(profile, snapshot)
    if isinstance(stable, str):
        return Transition("InvalidStableConfig", stable)

    hold = continuous.before_proposal(ctx, ports, status, name, profile)  # freeze windows, fine-tuning, exploration
    if hold is not None:
        return hold
    proposal = continuous.propose(ctx, ports, status, name, profile, stable)  # skips configurations in their cooldown
    if not isinstance(proposal, Proposal) or canonical_json(proposal.config) == canonical_json(stable):
        return _nothing_to_roll_out(ctx, status, name, stable, proposal)
    if ctx.spec.mode == "Recommend":
        return _recommend(ctx, status, name, stable, proposal)
    number = status.proposals + 1
    status.current = ProposalStatus(
        number=number,
        profile=name,
        config=proposal.config,
        stable_config=stable,
        revision=rollout.revision_name(ctx.name, name, number),
        target=TargetRef(namespace=ref.namespace, name=ref.name, key=ref.key),
        stable_digest=snapshot.stable_digest(),
        # Known before the write: a restart that finds these bytes under this revision knows the start happened.
        canary_digest=digest(merge_stable(snapshot.stable or "{}", proposal.config)),
        pending_action="StartCanary",
        expected_improvement_pct=proposal.expected_improvement_pct,
    )
    status.proposals = number
    status.message = f"Proposal {number} for {name}: starting the canary."
    ports.persist(status)  # write-ahead: a restart now finishes (or verifies) the start
    return rollout.start_canary(ctx, ports, status, snapshot)


def _next_profile(ctx: RunContext, status: RunStatus) -> str | None:
    """The next profile in turn that the proposer is not holding for (its hold expired, or none), else None."""
    count = len(ctx.spec.profiles)
    start = (status.proposals - status.cycle_proposals_start) % count
    for offset in range(count):
        name = ctx.spec.profiles[(start + offset) % count]
        hold = status.holds.get(name)
        if hold is None:
            return name
        until = parse_time(hold.until)
        if until is not None and ctx.now >= until:
            del status.holds[name]  # asked again now
            return name
    return None


def _all_held(ctx: RunContext, ports: Ports, status: RunStatus) -> Transition:
    """Every profile is held: the run finishes when nothing better is in sight anywhere, else it waits."""
    holds = {name: status.holds[name] for name in ctx.spec.profiles}
    if all(h.until is None for h in holds.values()):
        return _finish(ctx, ports, status, "Converged")
    name, hold = min(((n, h) for n, h in holds.items() if h.until), key=lambda item: item[1].until or "")
    return Transition("Holding", f"Holding {name} until {hold.until} ({hold.reason}): {hold.message}")


def _nothing_to_roll_out(ctx: RunContext, status: RunStatus, name: str, stable: dict, proposal) -> Transition:
    """The proposer had nothing (or only the stable configuration): the proposal counts and is recorded as Held."""
    message = proposal.message if isinstance(proposal, NoProposal) else "The agent proposed no change."
    if isinstance(proposal, NoProposal) and proposal.reason != "NoChange":
        until = None if proposal.final else now_iso(ctx.now + dt.timedelta(seconds=ctx.spec.exploration.hold_seconds))
        status.holds[name] = HoldRecord(reason=proposal.reason, message=message, at=now_iso(ctx.now), until=until)
    status.proposals += 1
    entry = ProposalRecord(
        number=status.proposals,
        profile=name,
        config=stable,
        verdict="Held",
        reason=proposal.reason if isinstance(proposal, NoProposal) else "NoChange",
        message=message,
        finished_at=now_iso(ctx.now),
    )
    record(status, entry)
    if name in status.holds:
        return Transition("Holding", f"Holding {name} ({proposal.reason}): {message}")
    return Transition("NoChange", message)


def _recommend(ctx: RunContext, status: RunStatus, name: str, stable: dict, proposal: Proposal) -> Transition:
    status.proposals += 1
    status.recommendations = [r for r in status.recommendations if r.profile != name] + [
        Recommendation(
            profile=name,
            config=proposal.config,
            expected_improvement_pct=proposal.expected_improvement_pct,
            confidence=proposal.confidence,
            reason=proposal.reason,
        )
    ]
    entry = ProposalRecord(
        number=status.proposals,
        profile=name,
        config=proposal.config,
        verdict="Recommended",
        reason="RecommendMode",
        message=proposal.reason,
        improvement_pct=proposal.expected_improvement_pct,
        stable_config=stable,
        finished_at=now_iso(ctx.now),
    )
    record(status, entry)
    message = f"Recommended a configuration for {name}; the ConfigMap is not touched in Recommend mode."
    return Transition("Recommended", message)


def _overlapping_profiles(ctx: RunContext) -> str | None:
    """Why two profiles of the run cannot both be tuned: they write the same parameter of the same ConfigMap key."""
    seen: dict[tuple[str, str, str, str], str] = {}
    for name in ctx.spec.profiles:
        profile = ctx.profiles.get(name)
        if not isinstance(profile, ParameterProfileSpec) or profile.target is None:
            continue
        ref = target_ref(profile.target, ctx.namespace)
        for parameter in profile.parameter_names:
            other = seen.setdefault((ref.namespace, ref.name, ref.key, parameter), name)
            if other != name:
                return (
                    f"profiles {other} and {name} both tune {parameter!r} of ConfigMap {ref.namespace}/{ref.name} key "
                    f"{ref.key}: one would undo the other's promotions. Remove the parameter from one profile, or tune "
                    "them in separate runs (a ConfigMap carries one canary at a time)."
                )
    return None
