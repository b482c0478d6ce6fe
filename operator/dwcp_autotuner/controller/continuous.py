"""Continuous re-optimization: safe exploration before each proposal, and triggers after a run finished.

Design: a trigger starts a new *cycle* of the same run, not a new run. The run's status already
holds everything a new cycle needs (the rolled-back configurations and their cooldown, the stored
model's counters, the baselines the triggers compare with, the history), the run keeps its name for
dashboards and `kubectl wait`, and nothing has to create or garbage-collect objects. A cycle is:
`status.cycle` + 1, `cycleStartedAt`, `cycleProposalsStart` (the budget counts per cycle), phase
back to `Proposing`, a `status.triggers[]` entry with the evidence, an Event `Reoptimizing`.

Only a run with `spec.continuous.enabled` watches after it finished (phase `Succeeded` or
`RolledBack`; `Failed` needs a human). Every `checkIntervalSeconds` it evaluates, per profile, in
this order (the first that fires starts the cycle):

- ProfileChanged: the profile's spec differs from the one the baseline was taken with;
- TargetChanged: the stable configuration in the ConfigMap is not the one the run left there;
- Degradation: the stable objective over the last `windowSeconds` is worse than at promotion (the
  canary mean of the last step) by more than `degradationPct`;
- WorkloadShift: a two-sample Kolmogorov-Smirnov test of each workload metric (recent window vs
  the reference window, stable variant) has p < `shiftSignificance`;
- Schedule: `scheduleSeconds` since the current cycle began.

Safe exploration (any run): no new proposal inside a freeze window, nor while a guard metric of the
stable configuration breaches against its reference at promotion; a configuration rolled back
is not proposed again within `exploration.rejectedCooldownSeconds` (remembered in the status, so a
restart keeps it); after `exploration.stagnationProposals` proposals in a row without a promotion,
exploration is raised to `boostEpsilon` for `boostSeconds` (`status.learning[p].explorationBoostedUntil`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping

import numpy as np
from scipy import stats

from ..canary.protocol import canonical_json, target_ref
from ..models.analysis import AnalysisSettings
from ..models.profile import ParameterProfileSpec
from ..models.run import (
    REJECTED_LIMIT,
    TRIGGER_LIMIT,
    Baseline,
    LearningStatus,
    ProposalStatus,
    RejectedConfig,
    RunStatus,
    TriggerRecord,
    sample_seconds,
)
from ..ports.base import MetricsSource, NotFound, Unavailable, render_query
from ..proposers.base import NoProposal, Proposal
from ..rollout.statistics import MetricSamples, evaluate_guard
from .analysis import score_series
from .conditions import now_iso, set_condition
from .context import Ports, RunContext
from .context import parse_time as _parse
from .transitions import Transition


def profile_digest(profile: ParameterProfileSpec) -> str:
    return hashlib.sha256(profile.model_dump_json().encode()).hexdigest()[:16]


# --- freeze windows ----------------------------------------------------------------------------------
def frozen(windows: list[str], now: dt.datetime) -> str | None:
    """The freeze window `now` falls in, or None. Daily `HH:MM-HH:MM` (UTC, may wrap midnight) or `START/END`."""
    now = now.astimezone(dt.UTC)
    for window in windows:
        if "/" in window:
            start, end = (_parse(part) for part in window.split("/", 1))
            if start is not None and end is not None and start <= now < end:
                return window
            continue
        start_text, end_text = window.split("-")
        minute = now.hour * 60 + now.minute
        start = int(start_text[:2]) * 60 + int(start_text[3:])
        end = int(end_text[:2]) * 60 + int(end_text[3:])
        if (start <= minute < end) if start <= end else (minute >= start or minute < end):
            return window
    return None


# --- hooks of the state machine ---------------------------------------------------------------------
def sync_learning(ports: Ports, status: RunStatus, name: str, profile: ParameterProfileSpec) -> LearningStatus | None:
    """Copy the proposer's learning counters into the status (a proposer that reports none is left alone)."""
    learning = ports.proposer.learning_status(name, profile)
    if learning is None:
        return None
    previous = status.learning.get(name)
    if learning.save_error and (previous is None or previous.save_error != learning.save_error):
        ports.events.emit("Warning", "ModelNotStored", f"{name}: {learning.save_error}")
    if previous is not None:  # the controller's own fields survive a proposer that restarted
        learning.last_fine_tune_at = learning.last_fine_tune_at or previous.last_fine_tune_at
        learning.exploration_boosted_until = previous.exploration_boosted_until
    status.learning[name] = learning
    return learning


def before_proposal(
    ctx: RunContext, ports: Ports, status: RunStatus, name: str, profile: ParameterProfileSpec
) -> Transition | None:
    """Fine-tuning when due, exploration boost, freeze windows. Returns the transition that holds, else None."""
    window = frozen(ctx.spec.freeze_windows, ctx.now)
    if window:
        return Transition("Frozen", f"Inside the freeze window {window}: no new proposal until it ends.")
    breach = guard_breaching(ctx, ports, status, name, profile)
    if breach:
        return Transition("GuardBreaching", breach)
    learning = sync_learning(ports, status, name, profile)
    if learning is not None:
        last = _parse(learning.last_fine_tune_at)
        if last is None:
            learning.last_fine_tune_at = now_iso(ctx.now)  # the interval counts from the first proposal
        elif (ctx.now - last).total_seconds() >= ctx.spec.agent.fine_tune_interval_seconds:
            outcome = ports.proposer.fine_tune(name, profile)
            sync_learning(ports, status, name, profile)
            status.learning[name].last_fine_tune_at = now_iso(ctx.now)
            if outcome is not None:
                ports.events.emit("Normal", "FineTuned", f"{name}: {outcome}")
        _exploration(ctx, ports, status, name, profile)
    return None


def guard_breaching(
    ctx: RunContext, ports: Ports, status: RunStatus, name: str, profile: ParameterProfileSpec
) -> str | None:
    """Why no exploration may start now: a guard metric of the stable configuration breaches, else None.

    The stable configuration's guard metrics over the last `continuous.windowSeconds` are compared
    with the reference window recorded when it was promoted (where it ran as the canary), by the
    same one-sided guard test and tolerance the canary analysis uses. Without a reference window
    (nothing promoted yet) or without data there is no evidence of a breach, and nothing is held.
    """
    if not ctx.spec.exploration.pause_on_guard_breach or not profile.guards:
        return None
    base = status.baselines.get(name)
    start, end = (_parse(base.window_start), _parse(base.window_end)) if base else (None, None)
    if start is None or end is None:
        return None
    queries = {m.name: m.query for m in profile.metrics}
    window = ctx.spec.continuous.window_seconds
    step = sample_seconds(ctx.spec.rollout)
    settings = AnalysisSettings.model_validate(ctx.spec.rollout.model_dump(include=set(AnalysisSettings.model_fields)))
    for guard in profile.guards:
        template = queries.get(guard.metric) or ""
        try:
            reference = [
                v.value for v in ports.metrics.samples(render_query(template, "canary", step), start, end, step)
            ]
            recent = [
                v.value
                for v in ports.metrics.samples(
                    render_query(template, "stable", step), ctx.now - dt.timedelta(seconds=window), ctx.now, step
                )
            ]
        except Unavailable:
            continue
        check = evaluate_guard(
            guard, MetricSamples(metric=guard.metric, goal=guard.goal, baseline=reference, candidate=recent), settings
        )
        if check.breached:
            return (
                f"Guard {guard.metric} of the stable configuration breaches against its value at promotion: "
                f"{check.message} No exploration until it recovers."
            )
    return None


def _exploration(ctx: RunContext, ports: Ports, status: RunStatus, name: str, profile: ParameterProfileSpec) -> None:
    settings = ctx.spec.exploration
    learning = status.learning[name]
    until = _parse(learning.exploration_boosted_until)
    if until is not None and ctx.now >= until:
        learning.exploration_boosted_until = None
        ports.proposer.set_exploration(name, profile, 0.0)
        until = None
    recent = [h for h in status.history if h.profile == name][-settings.stagnation_proposals :]
    stagnating = len(recent) == settings.stagnation_proposals and all(h.verdict != "Promoted" for h in recent)
    last_finished = _parse(recent[-1].finished_at) if recent else None
    boosted_at = None if until is None else until - dt.timedelta(seconds=settings.boost_seconds)
    if (
        stagnating
        and until is None
        and (boosted_at is None or (last_finished is not None and last_finished > boosted_at))
    ):
        until = ctx.now + dt.timedelta(seconds=settings.boost_seconds)
        learning.exploration_boosted_until = now_iso(until)
        ports.events.emit(
            "Normal",
            "ExplorationRaised",
            f"{name}: {settings.stagnation_proposals} proposals without a promotion; "
            f"exploration at {settings.boost_epsilon:.2f} until {now_iso(until)}",
        )
    if until is not None:
        ports.proposer.set_exploration(name, profile, settings.boost_epsilon)


PROPOSALS_PER_TICK = 32  # proposals asked for in one tick while each is in its rollback cooldown


def blocked(ctx: RunContext, status: RunStatus, name: str, config: Mapping[str, object]) -> RejectedConfig | None:
    """The rejection that keeps `config` from being proposed now, if any."""
    key = canonical_json(config)
    cooldown = dt.timedelta(seconds=ctx.spec.exploration.rejected_cooldown_seconds)
    for rejected in reversed(status.rejected):
        if rejected.profile == name and canonical_json(rejected.config) == key:
            at = _parse(rejected.at)
            if at is not None and ctx.now - at < cooldown:
                return rejected
    return None


def propose(
    ctx: RunContext,
    ports: Ports,
    status: RunStatus,
    name: str,
    profile: ParameterProfileSpec,
    stable: Mapping[str, object],
) -> Proposal | NoProposal | None:
    """The proposer's proposal, skipping configurations rolled back within the cooldown (asks again, a bounded number
    of times; then no change this time, saying why: the proposal counts, so a proposer with nothing else to offer
    lets the run finish by its budget rather than hold it until the cooldown ends)."""
    for _ in range(PROPOSALS_PER_TICK):
        proposal = ports.proposer.propose(name, profile, stable)
        rejected = None if not isinstance(proposal, Proposal) else blocked(ctx, status, name, proposal.config)
        if rejected is None:
            return proposal
        ports.proposer.decline(name, profile, proposal.config)
    return NoProposal(
        "NoChange",
        f"No change: the last {PROPOSALS_PER_TICK} configurations proposed were each rolled back within "
        f"exploration.rejectedCooldownSeconds ({ctx.spec.exploration.rejected_cooldown_seconds} s), the last "
        f"{canonical_json(rejected.config)} at {rejected.at} ({rejected.reason}).",
    )


def on_rollback(ctx: RunContext, status: RunStatus, current: ProposalStatus, reason: str) -> None:
    status.rejected = (
        status.rejected
        + [RejectedConfig(profile=current.profile, config=current.config, at=now_iso(ctx.now), reason=reason)]
    )[-REJECTED_LIMIT:]


def on_promotion(
    ctx: RunContext,
    status: RunStatus,
    current: ProposalStatus,
    profile: ParameterProfileSpec,
    stable_digest: str | None,
) -> None:
    last = current.steps[-1] if current.steps else None
    status.baselines[current.profile] = Baseline(
        config_digest=stable_digest,
        profile_hash=profile_digest(profile),
        objective=current.means.canary,
        reference_metrics=dict(last.stable.metrics) if last is not None else {},
        window_start=current.step_started_at,
        window_end=now_iso(ctx.now),
    )


def on_finish(ctx: RunContext, ports: Ports, status: RunStatus) -> None:
    """A continuous run starts watching: every profile gets a baseline (its reference measured at the first check when none)."""
    if not ctx.spec.continuous.enabled:
        return
    status.last_check_at = now_iso(ctx.now)
    for name in ctx.spec.profiles:
        profile = ctx.profiles.get(name)
        if isinstance(profile, str) or profile is None or name in status.baselines:
            continue
        status.baselines[name] = Baseline(
            config_digest=_stable_digest(ctx, ports, profile), profile_hash=profile_digest(profile)
        )


def _stable_digest(ctx: RunContext, ports: Ports, profile: ParameterProfileSpec) -> str | None:
    try:
        return ports.configs.read(target_ref(profile.target, ctx.namespace)).stable_digest()
    except (NotFound, Unavailable):
        return None


# --- the watch -------------------------------------------------------------------------------------
def _series(
    source: MetricsSource, template: str, start: dt.datetime, end: dt.datetime, step: float
) -> dict[float, float]:
    return {s.timestamp: s.value for s in source.samples(render_query(template, "stable", step), start, end, step)}


def _score(
    profile: ParameterProfileSpec,
    source: MetricsSource,
    start: dt.datetime,
    end: dt.datetime,
    step: float,
    reference: dict[str, float],
) -> list[float]:
    """The stable variant's score samples, by the same function (and relative-constraint reference) as at promotion."""
    queries = {m.name: m.query for m in profile.metrics}
    scored = {t.metric for t in profile.objective} | {c.metric for c in profile.constraints if queries.get(c.metric)}
    series = {m: _series(source, queries[m] or "", start, end, step) for m in sorted(scored)}
    return score_series(profile, series, reference or None)


def watch(ctx: RunContext, ports: Ports, status: RunStatus) -> Transition | None:
    """A finished continuous run: evaluate the triggers every check interval; start a new cycle when one fires."""
    settings = ctx.spec.continuous
    last = _parse(status.last_check_at)
    if last is not None and (ctx.now - last).total_seconds() < settings.check_interval_seconds:
        return None
    status.last_check_at = now_iso(ctx.now)
    for name in ctx.spec.profiles:
        profile = ctx.profiles.get(name)
        if isinstance(profile, str) or profile is None:
            continue
        try:
            fired = _check(ctx, ports, status, name, profile)
        except Unavailable as error:
            status.message = f"Watching; cannot evaluate the triggers of {name}: {error}"
            continue
        if fired is not None:
            return _new_cycle(ctx, ports, status, name, *fired)
    return None


def _check(
    ctx: RunContext, ports: Ports, status: RunStatus, name: str, profile: ParameterProfileSpec
) -> tuple[str, str] | None:
    settings = ctx.spec.continuous
    base = status.baselines.setdefault(name, Baseline(profile_hash=profile_digest(profile)))
    if base.profile_hash is not None and base.profile_hash != profile_digest(profile):
        return "ProfileChanged", f"the profile's spec changed (digest {base.profile_hash} -> {profile_digest(profile)})"
    current_digest = _stable_digest(ctx, ports, profile)
    if base.config_digest is not None and current_digest is not None and current_digest != base.config_digest:
        return "TargetChanged", "the stable configuration in the target ConfigMap is not the one the run left there"
    window = dt.timedelta(seconds=settings.window_seconds)
    step = max(1.0, settings.window_seconds / 60)
    recent_start = ctx.now - window
    recent = _score(profile, ports.metrics, recent_start, ctx.now, step, base.reference_metrics)
    if base.objective is None:
        if recent:  # no promotion to compare with: this window is the reference
            base.objective, base.window_start, base.window_end = (
                float(np.mean(recent)),
                now_iso(recent_start),
                now_iso(ctx.now),
            )
            base.config_digest = base.config_digest or current_digest
        return _schedule(ctx, status)
    if recent and base.objective != 0:
        change = (float(np.mean(recent)) - base.objective) / abs(base.objective) * 100.0
        if change < -settings.degradation_pct:
            return "Degradation", (
                f"stable objective {float(np.mean(recent)):.4g} over the last {settings.window_seconds} s vs {base.objective:.4g} "
                f"at promotion ({change:+.1f} %, threshold -{settings.degradation_pct:g} %; {len(recent)} samples)"
            )
    reference_start, reference_end = _parse(base.window_start), _parse(base.window_end)
    if reference_start is not None and reference_end is not None:
        objective_metrics = {t.metric for t in profile.objective}
        names = settings.workload_metrics or [m.name for m in profile.metrics if m.name not in objective_metrics]
        queries = {m.name: m.query for m in profile.metrics}
        for metric in names:
            if not queries.get(metric):
                continue
            before = list(_series(ports.metrics, queries[metric], reference_start, reference_end, step).values())
            after = list(_series(ports.metrics, queries[metric], recent_start, ctx.now, step).values())
            if len(before) >= 5 and len(after) >= 5:
                test = stats.ks_2samp(before, after)
                if test.pvalue < settings.shift_significance:
                    return "WorkloadShift", (
                        f"{metric}: Kolmogorov-Smirnov D={test.statistic:.3f}, p={test.pvalue:.2g} < {settings.shift_significance:g} "
                        f"(reference mean {np.mean(before):.4g}, n={len(before)}; recent mean {np.mean(after):.4g}, n={len(after)})"
                    )
    return _schedule(ctx, status)


def _schedule(ctx: RunContext, status: RunStatus) -> tuple[str, str] | None:
    every = ctx.spec.continuous.schedule_seconds
    began = _parse(status.cycle_started_at or status.started_at)
    if every is not None and began is not None and (ctx.now - began).total_seconds() >= every:
        return "Schedule", f"{every} s since the cycle began at {now_iso(began)}"
    return None


def _new_cycle(ctx: RunContext, ports: Ports, status: RunStatus, name: str, kind: str, evidence: str) -> Transition:
    status.cycle += 1
    status.cycle_started_at = now_iso(ctx.now)
    status.cycle_proposals_start = status.proposals
    status.holds = {}  # a new cycle asks again for every profile
    status.triggers = (
        status.triggers
        + [TriggerRecord(cycle=status.cycle, profile=name, kind=kind, evidence=evidence, at=now_iso(ctx.now))]
    )[-TRIGGER_LIMIT:]
    # The next baseline is the next promotion, or a fresh reference when nothing is promoted.
    for profile_name in ctx.spec.profiles:
        status.baselines.pop(profile_name, None)
        profile = ctx.profiles.get(profile_name)
        if isinstance(profile, ParameterProfileSpec):
            ports.proposer.new_cycle(profile_name, profile)
    return Transition("Reoptimizing", f"Re-optimizing (cycle {status.cycle}, {kind} of {name}): {evidence}")


def warm_start_condition(ctx: RunContext, status: RunStatus) -> list:
    """WarmStarted: whether the agents started from stored models (False with why when not)."""
    states = {
        name: status.learning[name]
        for name in ctx.spec.profiles
        if name in status.learning and status.learning[name].warm_start
    }
    if not states:
        return status.conditions
    for state, value, reason in (
        ("Incompatible", "False", "ModelIncompatible"),
        ("Unreadable", "False", "ModelUnreadable"),
        ("Loaded", "True", "ModelLoaded"),
        ("None", "False", "NoStoredModel"),
    ):
        names = [n for n, s in states.items() if s.warm_start == state]
        if names:
            message = "; ".join(f"{n}: {states[n].warm_start_message}" for n in names)
            return set_condition(
                status.conditions, "WarmStarted", value, reason, message, now=ctx.now, generation=ctx.generation
            )
    return status.conditions
