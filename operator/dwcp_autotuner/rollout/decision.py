"""What a rollout does with one step's verdict: advance, promote, roll back, wait or hold.

The verdict is the only thing the rollout reads of an analysis (as in Argo Rollouts, whose rollout reads
one analysis phase): the analysis already folded the guards, the objective, missing data and an
unreachable metrics backend into `phase` and `reason`. `decide` adds the rollout's position and its
limits on inconclusive analyses, and nothing else; it is pure and table-tested
(`tests/test_decision.py`).

| verdict      | not the last step            | the last step                 |
|--------------|------------------------------|-------------------------------|
| Successful   | Advance to the next weight   | Promote                       |
| Failed       | Rollback (the verdict's reason: CanaryWorse, GuardBreached)  |
| Inconclusive | Wait for the next analysis; at `maxInconclusive` analyses, Rollback (Inconclusive) or Hold, as `onInconclusive` says |

An inconclusive analysis whose p-value says the canary leans better allows `promisingExtraAnalyses` more
(`Limits.allowed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .statistics import Verdict


@dataclass(frozen=True)
class Advance:
    """Raise the canary weight to the next step's."""

    step_index: int
    weight: int


@dataclass(frozen=True)
class Promote:
    """Make the canary the stable configuration."""


@dataclass(frozen=True)
class Rollback:
    """Withdraw the canary; `reason` is the RolledBack condition's reason."""

    reason: str
    message: str


@dataclass(frozen=True)
class Wait:
    """Inconclusive: analyse again one interval later (the window keeps growing from the step's start)."""

    reason: str
    message: str
    inconclusive: int
    limit: int  # the inconclusive analyses this one's evidence allows (`Limits.allowed`)


@dataclass(frozen=True)
class Hold:
    """Too many inconclusive analyses and `onInconclusive: Hold`: keep the canary where it is for a human."""

    message: str
    inconclusive: int


Decision = Advance | Promote | Rollback | Wait | Hold


@dataclass(frozen=True)
class Step:
    """Where the rollout is: the step index into `steps` (weights in percent)."""

    index: int
    steps: tuple[int, ...]

    @property
    def last(self) -> bool:
        return self.index >= len(self.steps) - 1


@dataclass(frozen=True)
class Limits:
    """How many inconclusive analyses a proposal may have, and what happens then."""

    max_inconclusive: int
    on_inconclusive: Literal["Rollback", "Hold"]
    promising_extra: int = 0
    promising_significance: float = 0.05

    def allowed(self, p_value: float | None) -> int:
        """The inconclusive analyses a proposal may have after one whose objective p-value (that the canary is
        better) is `p_value`: `max_inconclusive`, and `promising_extra` more while the canary leans better
        (p below `promising_significance`). The canary's window grows from the step's start (at 100 % the stable
        samples are those of the step before: the stable variant gets no work), so a canary a little better
        than the stable one, which `max_inconclusive` analyses cannot confirm at a strict significance, gets
        the samples that can; one that leans nowhere, or worse, is not kept longer."""
        leaning = p_value is not None and p_value < self.promising_significance
        return self.max_inconclusive + (self.promising_extra if leaning else 0)


def decide(verdict: Verdict, step: Step, limits: Limits, inconclusive_before: int = 0) -> Decision:
    """The decision for one analysis of `step`, given how many earlier analyses of the proposal were inconclusive."""
    if verdict.phase == "Failed":
        return Rollback(verdict.reason, verdict.message)
    if verdict.phase == "Successful":
        if step.last:
            return Promote()
        return Advance(step.index + 1, step.steps[step.index + 1])
    count = inconclusive_before + 1
    limit = limits.allowed(verdict.p_value)
    if count < limit:
        return Wait(verdict.reason, verdict.message, count, limit)
    if limits.on_inconclusive == "Rollback":
        return Rollback("Inconclusive", f"{count} inconclusive analyses: {verdict.message}")
    return Hold(verdict.message, count)
