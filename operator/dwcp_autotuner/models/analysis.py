"""The limits of a canary analysis: how much evidence a verdict needs, and what a guard tolerates.

One model each, shared by the CRDs (a run's `spec.rollout`, a profile's `spec.guards`), the canary
statistics (`rollout/statistics.py`) and `tune`'s verification.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import CamelModel
from .space import Goal

TestKind = Literal["welch", "mannwhitney", "both"]
#: A one-sided p-value threshold: strictly between 0 and 0.5 (at 0.5 a one-sided test decides on a coin flip).
Significance = Annotated[float, Field(gt=0.0, lt=0.5, allow_inf_nan=False)]


class AnalysisSettings(CamelModel):
    """How much evidence a verdict needs.

    The defaults are deliberately strict (p < 0.001): a rollout that promotes on noise costs more than
    one that waits for a few more samples.
    """

    test: TestKind = Field(
        "welch",
        description=(
            "Statistical test of the canary analysis: Welch's t-test (means, unequal variances), Mann-Whitney U "
            "(ranks, robust to outliers and skew), or both (both must reject; the larger p is reported)."
        ),
    )
    significance: Significance = Field(
        0.001,
        description="One-sided p-value the objective must beat to promote (and a guard to count as breached).",
    )
    min_samples: int = Field(
        5,
        ge=2,
        description=(
            "Samples per variant an analysis needs before any test runs (at least 2, so a standard deviation "
            "exists). Mann-Whitney's exact p cannot go below 1/C(2n, n): with 5 per variant that is about 0.004, "
            "so it cannot reject at 0.001."
        ),
    )
    min_improvement_pct: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Minimum relative improvement of the objective, in percent, for a significant result to promote.",
    )


class GuardLimit(CamelModel):
    """A metric the canary must not make worse; a breach (significantly beyond the tolerance) rolls it back at once."""

    metric: str = Field(min_length=1, description="Name of a metric in `metrics`.")
    goal: Goal = Field(description="Whether larger or smaller values are better.")
    max_degradation_pct: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description=(
            "Tolerated degradation of the canary's mean, in percent. The guard breaches only when a one-sided test "
            "says the canary is worse by more than this tolerance (against the stable samples moved by it); a mean "
            "beyond it without that evidence makes the analysis inconclusive, and it is measured again."
        ),
    )
