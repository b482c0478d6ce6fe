"""Status conditions the way Kubernetes tools expect them (kubectl wait, GitOps health checks).

A condition's lastTransitionTime changes only when its status changes; reason and message may be
refreshed without a transition.
"""

from __future__ import annotations

import datetime as dt

from ..models.run import Condition


def now_iso(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    *,
    now: dt.datetime,
    generation: int | None,
) -> list[Condition]:
    """A new list with the condition set; other conditions are kept in order."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    out: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type == type_:
            found = True
            transition = condition.last_transition_time if condition.status == status_text else now_iso(now)
            out.append(
                Condition(
                    type=type_,
                    status=status_text,
                    reason=reason,
                    message=message,
                    last_transition_time=transition,
                    observed_generation=generation,
                )
            )
        else:
            out.append(condition)
    if not found:
        out.append(
            Condition(
                type=type_,
                status=status_text,
                reason=reason,
                message=message,
                last_transition_time=now_iso(now),
                observed_generation=generation,
            )
        )
    return out


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
