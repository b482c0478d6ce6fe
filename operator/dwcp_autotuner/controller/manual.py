"""A person's hand on a run, as Argo Rollouts and Flagger users expect it: pause and resume, promote now, abort,
retry, and an approval gate before every promotion.

- `spec.paused: true` pauses the run (GitOps or `kubectl patch`); `false` resumes it.
- The annotations `autotune.dwcp.io/promote`, `…/abort` and `…/retry` act once per distinct value (any text; a
  timestamp does): `kubectl annotate optrun RUN autotune.dwcp.io/promote="$(date +%s)" --overwrite`, or
  `kubectl autotune promote RUN`. The values acted on are kept in `status.manual`, so the same annotation applied
  again by a GitOps tool changes nothing, and an action survives an operator restart exactly once.
- `spec.rollout.requireApproval: true` stops a canary that passed its last analysis at its weight until a promote
  annotation approves it (Flagger's confirm-promotion).

`act` is called before the run's own work on every tick; like every phase function it returns at most one
`Transition`, which `transitions.apply` applies.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..models.run import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    TERMINAL_PHASES,
    ManualStatus,
    Phase,
    RunStatus,
)
from . import rollout
from .conditions import get_condition, now_iso
from .context import Ports, RunContext
from .transitions import Transition


def act(ctx: RunContext, ports: Ports, status: RunStatus) -> tuple[RunStatus, Transition | None]:
    """The manual action due this tick: (the status to go on with, the transition, or None for the run's own work).

    Retry may replace the status (a fresh run that keeps what was learned); everything else changes it in place."""
    manual = status.manual
    retry = _new(ctx, RETRY_ANNOTATION, manual.retry)
    if retry is not None:
        manual.retry = retry
        if status.phase in TERMINAL_PHASES:
            fresh = start_over(status)
            fresh.manual.last = f"retry {retry!r}: the run starts again (it was {status.phase})"
            fresh.observed_generation = status.observed_generation
            return fresh, Transition("Retried", f"Started again on request ({RETRY_ANNOTATION}={retry}).")
        manual.last = f"retry {retry!r} ignored: the run has not ended (phase {status.phase})"
    abort = _new(ctx, ABORT_ANNOTATION, manual.abort)
    if abort is not None:
        manual.abort = abort
        if status.phase in TERMINAL_PHASES:
            manual.last = f"abort {abort!r} ignored: the run had already ended ({status.phase})"
        else:
            manual.abort_requested = True
            manual.last = f"abort {abort!r}: the canary (if one is out) is withdrawn and the run ends"
    if manual.abort_requested:
        return status, _abort(ctx, ports, status)
    promote = _new(ctx, PROMOTE_ANNOTATION, manual.promote)
    if promote is not None:
        current = status.current
        if current is None or not current.canary_weight or current.pending_action is not None:
            manual.promote = promote
            manual.last = f"promote {promote!r} ignored: no canary is out to promote"
        else:
            return status, _promote(ctx, ports, status, promote)
    return status, _pause(ctx, status)


def _promote(ctx: RunContext, ports: Ports, status: RunStatus, promote: str) -> Transition | None:
    """Promote the canary out now. The request counts as handled once the promotion is written or decided (or the
    canary turned out to be gone or edited); while the profile or the ConfigMap cannot be read it stays, and the
    next tick tries again."""
    current = status.current
    assert current is not None
    number, weight = current.number, current.canary_weight
    transition = rollout.promote_now(ctx, ports, status, f"promoted on request ({PROMOTE_ANNOTATION}={promote})")
    unread = transition is None or transition.reason == "KubernetesUnavailable"
    if unread and status.current is not None and status.current.pending_action is None:
        return transition
    status.manual.promote = promote
    pending = status.current is not None and status.current.pending_action == "Promote"  # the rollout finishes it
    promoted = pending or any(h.number == number and h.verdict == "Promoted" for h in status.history)
    status.manual.last = (
        f"promote {promote!r}: proposal {number} promoted at {weight} %"
        if promoted
        else f"promote {promote!r}: proposal {number} was not promoted ({transition.message if transition else ''})"
    )
    return transition


def _new(ctx: RunContext, annotation: str, handled: str | None) -> str | None:
    return _unhandled(ctx.annotations or {}, annotation, handled)


def _unhandled(annotations: Mapping[str, str], annotation: str, handled: str | None) -> str | None:
    """The annotation's value when it is set and was not acted on yet."""
    value = annotations.get(annotation)
    return value if value and value != handled else None


def pending(status: RunStatus, annotations: Mapping[str, str]) -> bool:
    """Whether an action annotation waits to be acted on (a finished run must then be reconciled)."""
    m = status.manual
    return any(
        _unhandled(annotations, a, h)
        for a, h in ((PROMOTE_ANNOTATION, m.promote), (ABORT_ANNOTATION, m.abort), (RETRY_ANNOTATION, m.retry))
    )


def _abort(ctx: RunContext, ports: Ports, status: RunStatus) -> Transition | None:
    current = status.current
    if current is None:
        status.manual.abort_requested = False
        return Transition("Aborted", f"Aborted on request ({ABORT_ANNOTATION}); nothing was out.")
    if current.pending_action in ("Promote", "Rollback"):
        return None  # a write already decided is finished first (the rollout resumes it), then the run ends
    return rollout.abort(ctx, ports, status, f"aborted on request ({ABORT_ANNOTATION}={status.manual.abort})")


def _pause(ctx: RunContext, status: RunStatus) -> Transition | None:
    if status.phase in TERMINAL_PHASES:
        return None
    progressing = get_condition(status.conditions, "Progressing")
    paused_now = progressing is not None and progressing.reason == "Paused"
    if ctx.spec.paused:
        current = status.current
        where = (
            "" if current is None else f"; the canary of proposal {current.number} stays at {current.canary_weight} %"
        )
        return Transition("Paused", f"Paused (spec.paused){where}. Set spec.paused to false to resume.")
    if paused_now:
        current = status.current
        if current is not None and current.canary_weight:
            # Samples taken while paused may predate a change a person made: the step's interval starts again.
            current.step_started_at = now_iso(ctx.now)
            current.last_analysis_at = None
        return Transition("Unpaused", "Resumed (spec.paused is false).")
    return None


def start_over(status: RunStatus) -> RunStatus:
    """A fresh run; what was learned and decided before (history, rejections, manual actions) is kept.

    Proposal numbers go on from where they were (the budget counts from here): a number names one
    proposal for the life of the run, its revision ConfigMap and the verdict the proposer learns once."""
    return RunStatus(
        history=status.history,
        rejected=status.rejected,
        learning=status.learning,
        training=status.training,
        proposals=status.proposals,
        cycle_proposals_start=status.proposals,
        improvements=status.improvements,
        manual=ManualStatus.model_validate(status.manual.model_dump()) if status.manual else ManualStatus(),
        phase=Phase.PENDING,
    )
