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
        return Wait(VERDICTS[verdict].reason, VERDICTS[verdict].message, count, limits.max_inconclusive)
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


LEANS_BETTER = Verdict(phase="Inconclusive", reason="NotSignificant", message="+2 %, p=0.02", p_value=0.02)
LEANS_NOWHERE = Verdict(phase="Inconclusive", reason="NotSignificant", message="-1 %, p=0.7", p_value=0.7)


def test_a_canary_that_leans_better_gets_the_extra_analyses_and_no_more():
    limits = Limits(3, "Rollback", promising_extra=3, promising_significance=0.05)
    first = Step(0, STEPS)
    # Past maxInconclusive, while it leans better: it waits, and says how many it may have.
    assert decide(LEANS_BETTER, first, limits, 2) == Wait("NotSignificant", LEANS_BETTER.message, 3, 6)
    assert decide(LEANS_BETTER, first, limits, 4) == Wait("NotSignificant", LEANS_BETTER.message, 5, 6)
    assert decide(LEANS_BETTER, first, limits, 5) == Rollback(
        "Inconclusive", f"6 inconclusive analyses: {LEANS_BETTER.message}"
    )
    # One that leans nowhere (or worse) is rolled back at maxInconclusive, as without the extra analyses.
    assert decide(LEANS_NOWHERE, first, limits, 2) == Rollback(
        "Inconclusive", f"3 inconclusive analyses: {LEANS_NOWHERE.message}"
    )
    # No p-value (no data): nothing to lean on.
    assert decide(VERDICTS["no data"], first, limits, 2) == Rollback("Inconclusive", "3 inconclusive analyses: no data")
    # Without extra analyses, or with a stricter idea of leaning, the limit is maxInconclusive.
    assert isinstance(decide(LEANS_BETTER, first, Limits(3, "Rollback"), 2), Rollback)
    assert isinstance(decide(LEANS_BETTER, first, Limits(3, "Rollback", 3, 0.01), 2), Rollback)
    # onInconclusive: Hold holds once the extra analyses are spent too.
    assert decide(LEANS_BETTER, first, Limits(3, "Hold", 3), 5) == Hold(LEANS_BETTER.message, 6)
    assert Limits(3, "Hold", 3).allowed(0.02) == 6 and Limits(3, "Hold", 3).allowed(None) == 3
