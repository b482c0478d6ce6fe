"""`decide`: every verdict × rollout position × inconclusive limit, as a table (rollout/decision.py)."""

from __future__ import annotations

import pytest

from dwcp_autotuner.rollout.decision import Advance, Hold, Limits, Promote, Rollback, Step, Wait, decide
from dwcp_autotuner.rollout.statistics import Verdict

STEPS = (5, 25, 50, 100)
VERDICTS = {
    "passed": Verdict(phase="Successful", reason="NotWorse", message="not worse"),
    "better": Verdict(phase="Successful", reason="CanaryBetter", message="better"),
    "worse": Verdict(phase="Failed", reason="CanaryWorse", message="worse"),
    "guard": Verdict(phase="Failed", reason="GuardBreached", message="guard"),
    "no data": Verdict(phase="Inconclusive", reason="NoData", message="no data"),
    "unavailable": Verdict(phase="Inconclusive", reason="MetricsUnavailable", message="prometheus down"),
    "not significant": Verdict(phase="Inconclusive", reason="NotSignificant", message="p=0.2"),
}
POSITIONS = {"first": Step(0, STEPS), "middle": Step(2, STEPS), "last": Step(3, STEPS), "only": Step(0, (100,))}
LIMITS = {  # (limits, inconclusive analyses before this one)
    "room left": (Limits(3, "Rollback"), 0),
    "last chance, rollback": (Limits(3, "Rollback"), 2),
    "last chance, hold": (Limits(3, "Hold"), 2),
    "no patience": (Limits(1, "Rollback"), 0),
}


def expected(verdict: str, position: str, limit: str):
    """The table of rollout/decision.py's docstring, written out case by case."""
    if verdict in ("worse", "guard"):
        return Rollback(VERDICTS[verdict].reason, VERDICTS[verdict].message)
    if verdict in ("passed", "better"):
        step = POSITIONS[position]
        return Promote() if position in ("last", "only") else Advance(step.index + 1, STEPS[step.index + 1])
    limits, before = LIMITS[limit]
    count = before + 1
    if limit == "room left":
        return Wait(VERDICTS[verdict].reason, VERDICTS[verdict].message, count)
    if limit == "last chance, hold":
        return Hold(VERDICTS[verdict].message, count)
    return Rollback("Inconclusive", f"{count} inconclusive analyses: {VERDICTS[verdict].message}")


CASES = [(v, p, limit) for v in VERDICTS for p in POSITIONS for limit in LIMITS]


@pytest.mark.parametrize("verdict, position, limit", CASES, ids=[" / ".join(c) for c in CASES])
def test_decide(verdict, position, limit):
    limits, before = LIMITS[limit]
    assert decide(VERDICTS[verdict], POSITIONS[position], limits, before) == expected(verdict, position, limit)


def test_an_advance_goes_to_the_next_weight_and_never_past_the_last_step():
    assert decide(VERDICTS["passed"], Step(0, STEPS), Limits(3, "Rollback")) == Advance(1, 25)
    assert decide(VERDICTS["passed"], Step(2, STEPS), Limits(3, "Rollback")) == Advance(3, 100)
    assert isinstance(decide(VERDICTS["passed"], Step(3, STEPS), Limits(3, "Rollback")), Promote)
