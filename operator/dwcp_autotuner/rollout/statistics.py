"""Statistical canary analysis: does a candidate beat a baseline, and does it break anything?

Two callers share this module:

* the local ``tune`` command, which re-runs the real workload with the default config
  (baseline) and the tuned config (candidate) and must not claim an improvement that
  is just noise;
* the operator's canary analysis, which at every rollout step compares the canary
  pods (candidate) with the stable pods (baseline).

The layout follows Argo Rollouts' analysis package: *measurements* (`MetricSamples`),
*limits* (`AnalysisSettings`, `GuardLimit`) and *verdicts* (`Comparison`, `GuardCheck`,
`Verdict`) are separate types, and each verdict has a phase (``Successful`` /
``Failed`` / ``Inconclusive``), a CamelCase machine reason, and one human sentence
that carries the numbers, so the verdict can be copied verbatim into a CR status or
a Kubernetes Event.

Conventions used throughout:

* every test is **one-sided**: we ask "is the candidate better?" and, separately,
  "is the candidate worse?", because a rollout only acts on a direction;
* ``change_pct`` is signed so that **positive is better for the metric's goal**
  (a 10 % latency drop is +10 %); ``degradation_pct`` of a guard is its negation;
* non-finite samples (NaN, +/-inf — scrape gaps, divisions by zero in recording
  rules) are dropped before anything else and counted in ``dropped``;
* nothing here raises on awkward *data* (empty, constant, negative, non-finite);
  mis-paired *configuration* (a guard limit attached to another metric's samples)
  raises ``ValueError`` because it is a programming error, not a measurement.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator
from scipy import special, stats

from ..models.analysis import AnalysisSettings, GuardLimit, TestKind
from ..models.base import CamelModel
from ..models.space import Goal

__all__ = [
    "AnalysisSettings",
    "Comparison",
    "Goal",
    "GuardCheck",
    "GuardLimit",
    "GuardStatus",
    "MetricSamples",
    "Phase",
    "Reason",
    "TestKind",
    "VariantStats",
    "Verdict",
    "analyse",
    "check_guards",
    "unavailable_verdict",
    "compare",
    "evaluate_guard",
    "guard_ok",
]

Phase = Literal["Successful", "Failed", "Inconclusive"]
GuardStatus = Literal["Held", "Breached", "Inconclusive"]
Reason = Literal[
    # analysis / objective verdicts
    "CanaryBetter",
    "CanaryWorse",
    "GuardBreached",
    "NotSignificant",
    "TooFewSamples",
    "BelowMinimumImprovement",
    "NoData",
    "MetricsUnavailable",
    # per-guard outcomes (NotWorse is also the verdict of a step that may advance) that are not breaches
    "NotWorse",
    "WithinTolerance",
]


# --------------------------------------------------------------------- measurements


class MetricSamples(CamelModel):
    """Per-variant samples of one metric plus its goal.

    Samples may contain NaN/inf; they are kept here as received (so a report shows what
    was measured) and dropped at analysis time.
    """

    metric: str = Field("objective", min_length=1)
    goal: Goal
    baseline: list[float] = Field(default_factory=list)
    candidate: list[float] = Field(default_factory=list)

    @field_validator("baseline", "candidate", mode="before")
    @classmethod
    def _flatten_iterables(cls, value: Any) -> Any:
        """Accept numpy arrays and generators as well as lists, as callers collect both."""
        if isinstance(value, np.ndarray):
            return value.astype(float).ravel().tolist()
        if isinstance(value, (list, tuple, str, bytes)) or not isinstance(value, Iterable):
            return value
        return list(value)


# ------------------------------------------------------------------------- verdicts


class VariantStats(CamelModel):
    """Descriptive statistics of one variant's finite samples."""

    n: int
    dropped: int = Field(0, description="Non-finite samples (NaN/inf) that were ignored.")
    mean: float | None = None
    std: float | None = Field(None, description="Sample standard deviation (ddof=1); None if n < 2.")


class Comparison(CamelModel):
    """Baseline vs candidate for one metric, with the objective-style verdict for it."""

    metric: str
    goal: Goal
    test: TestKind
    significance: float
    baseline: VariantStats
    candidate: VariantStats
    change_pct: float | None = Field(
        None,
        description=(
            "Relative change of the candidate mean vs the baseline mean in percent, signed "
            "so that positive is better for the goal. +/-inf when the baseline mean is 0 "
            "and the candidate's is not; None when either variant has no data."
        ),
    )
    p_value: float | None = Field(
        None, description="One-sided p-value that the candidate is better (larger p for 'both')."
    )
    p_value_worse: float | None = Field(
        None, description="One-sided p-value that the candidate is worse (larger p for 'both')."
    )
    welch_p_value: float | None = Field(None, description="Welch's p that the candidate is better, if run.")
    mann_whitney_p_value: float | None = Field(
        None, description="Mann-Whitney's p that the candidate is better, if run."
    )
    phase: Phase
    reason: Reason
    message: str

    @property
    def better(self) -> bool:
        """Significantly better *and* above the minimum improvement."""
        return self.phase == "Successful"

    @property
    def worse(self) -> bool:
        """Significantly worse (no tolerance applied; that is what guards are for)."""
        return self.phase == "Failed"

    @property
    def enough_data(self) -> bool:
        return self.reason not in ("TooFewSamples", "NoData")


class GuardCheck(CamelModel):
    """Outcome of one guard: held, breached, or not enough data to tell."""

    limit: GuardLimit
    status: GuardStatus
    reason: Reason
    message: str
    degradation_pct: float | None = Field(
        None, description="Relative degradation of the candidate mean in percent (positive = worse)."
    )
    p_value_worse: float | None = None
    p_value_beyond: float | None = Field(
        None, description="One-sided p that the degradation exceeds the tolerance (run when the mean is beyond it)."
    )
    comparison: Comparison

    @property
    def breached(self) -> bool:
        return self.status == "Breached"


class Verdict(CamelModel):
    """The analysis result: what to do with the candidate, and why, in one sentence."""

    phase: Phase
    reason: Reason
    message: str
    p_value: float | None = Field(None, description="The objective's one-sided p-value that the candidate is better.")
    improvement_pct: float | None = Field(
        None, description="The objective's relative change in percent, positive = better."
    )
    objective: Comparison | None = None
    guards: list[GuardCheck] = Field(default_factory=list)

    @property
    def successful(self) -> bool:
        return self.phase == "Successful"

    @property
    def failed(self) -> bool:
        return self.phase == "Failed"


# ------------------------------------------------------------------------- internals


def _clean(samples: Iterable[float]) -> tuple[np.ndarray, int]:
    """Finite samples as float64, and how many non-finite ones were dropped."""
    arr = np.asarray(list(samples) if not isinstance(samples, np.ndarray) else samples, dtype=float).ravel()
    finite = arr[np.isfinite(arr)]
    return finite, int(arr.size - finite.size)


def sample_std(values: np.ndarray) -> float:
    """The sample standard deviation (ddof 1) of finite values, computed on them scaled by the largest magnitude:
    squared as they are, samples near ±1e300 (a broken query) leave the float range, and numpy warns and says inf."""
    scale = float(np.max(np.abs(values)))
    if scale == 0.0:
        return 0.0
    return scale * float(np.std(values / scale, ddof=1))


def _describe(arr: np.ndarray, dropped: int) -> VariantStats:
    n = int(arr.size)
    mean = float(np.mean(arr)) if n else None
    std = sample_std(arr) if n >= 2 else None
    return VariantStats(n=n, dropped=dropped, mean=mean, std=std)


def _relative_change_pct(base_mean: float, cand_mean: float, goal: Goal) -> float:
    """Signed relative change, positive = better for the goal.

    Divides by |baseline mean| so negative-valued metrics keep the sign convention.
    A zero baseline mean has no relative scale: identical means give 0, otherwise the
    change is infinite in the direction of the difference (deterministic, never NaN).
    """
    sign = 1.0 if goal == "maximize" else -1.0
    diff = cand_mean - base_mean
    if base_mean == 0.0:
        return 0.0 if diff == 0.0 else sign * math.copysign(math.inf, diff)
    if diff == 0.0:
        return 0.0  # not sign * 0.0, which would print as "-0.00%" for minimize goals
    return sign * diff / abs(base_mean) * 100.0


def _alternatives(goal: Goal) -> tuple[str, str]:
    """scipy `alternative` for (candidate better, candidate worse), candidate as 1st sample."""
    return ("greater", "less") if goal == "maximize" else ("less", "greater")


def _safe_p(p: float) -> float:
    """A NaN p-value carries no evidence; treat it as 1 (never significant)."""
    p = float(p)
    return 1.0 if math.isnan(p) else min(max(p, 0.0), 1.0)


def _one_sided_ps(
    base: np.ndarray, cand: np.ndarray, test: Literal["welch", "mannwhitney"], goal: Goal
) -> tuple[float, float]:
    """(p that the candidate is better, p that it is worse), both one-sided.

    Welch's test is run once: scipy's one-sided p for "better" is reported as is, and
    the opposite tail is taken from the same t statistic and Welch-Satterthwaite df
    (`stdtr` is what scipy's t distribution uses), which keeps tiny p-values exact where
    ``1 - p`` would round them to 0, at half the cost. Mann-Whitney's tails are not
    complementary (continuity correction, exact distribution), so it is run twice.
    """
    alt_better, alt_worse = _alternatives(goal)
    with warnings.catch_warnings():
        # scipy warns about precision loss when one sample is (nearly) constant; the
        # result is still usable and we never want warnings leaking into operator logs.
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "welch":
            res = stats.ttest_ind(cand, base, equal_var=False, alternative=alt_better)
            t = float(res.statistic)
            # P(T <= t) is "worse" when better means greater, P(T >= t) otherwise.
            p_worse = special.stdtr(res.df, t) if alt_better == "greater" else special.stdtr(res.df, -t)
            return _safe_p(res.pvalue), _safe_p(p_worse)
        better = stats.mannwhitneyu(cand, base, alternative=alt_better)
        worse = stats.mannwhitneyu(cand, base, alternative=alt_worse)
        return _safe_p(better.pvalue), _safe_p(worse.pvalue)


def _p_values(
    base: np.ndarray, cand: np.ndarray, goal: Goal, test: TestKind
) -> tuple[float, float, float | None, float | None, str]:
    """(p better, p worse, Welch's p better, Mann-Whitney's p better, the test's name), both variants non-empty.

    When both variants are constant, scipy cannot test (zero variance gives NaN), so the decision is made
    from the means: identical means give p = 1 both ways; different constants are treated as certain
    evidence (p = 0) in the direction of the difference."""
    if np.ptp(base) == 0.0 and np.ptp(cand) == 0.0:
        better = float(np.mean(cand) - np.mean(base)) * (1.0 if goal == "maximize" else -1.0)
        if better == 0.0:
            return 1.0, 1.0, None, None, "constant samples"
        return (0.0, 1.0, None, None, "constant samples") if better > 0 else (1.0, 0.0, None, None, "constant samples")
    tests: list[Literal["welch", "mannwhitney"]] = ["welch", "mannwhitney"] if test == "both" else [test]  # type: ignore[list-item]
    welch_p: float | None = None
    mwu_p: float | None = None
    better_ps, worse_ps = [], []
    for t in tests:
        pb, pw = _one_sided_ps(base, cand, t, goal)
        better_ps.append(pb)
        worse_ps.append(pw)
        if t == "welch":
            welch_p = pb
        else:
            mwu_p = pb
    # "both" must reject together, so the weaker evidence (larger p) decides.
    return max(better_ps), max(worse_ps), welch_p, mwu_p, test if test != "both" else "welch+mannwhitney"


def _sentence(msg: str) -> str:
    """Capitalise the first letter only (metric names elsewhere keep their case)."""
    return msg[:1].upper() + msg[1:]


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4g}"


def _fmt_pct(x: float | None) -> str:
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "+inf%" if x > 0 else "-inf%"
    return f"{x:+.2f}%"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.3g}"


# ------------------------------------------------------------------------ public API


def compare(
    baseline: Iterable[float],
    candidate: Iterable[float],
    goal: Goal,
    settings: AnalysisSettings | None = None,
    metric: str = "objective",
) -> Comparison:
    """Compare one metric between baseline and candidate.

    The verdict is the objective-style one: Successful/CanaryBetter when the candidate
    is significantly better and clears ``min_improvement_pct``; Failed/CanaryWorse when
    it is significantly worse; otherwise Inconclusive with NoData, TooFewSamples,
    BelowMinimumImprovement or NotSignificant.

    When both variants are constant, scipy cannot test (zero variance gives NaN), so the
    decision is made from the means: identical means give p = 1 both ways; different
    constants are treated as certain evidence (p = 0) in the direction of the difference.
    """
    settings = settings or AnalysisSettings()
    base, base_dropped = _clean(baseline)
    cand, cand_dropped = _clean(candidate)
    b_stats, c_stats = _describe(base, base_dropped), _describe(cand, cand_dropped)

    common: dict[str, Any] = {
        "metric": metric,
        "goal": goal,
        "test": settings.test,
        "significance": settings.significance,
        "baseline": b_stats,
        "candidate": c_stats,
    }
    counts = f"n={c_stats.n} candidate / {b_stats.n} baseline"

    if b_stats.n == 0 or c_stats.n == 0:
        missing = " and ".join(v for v, s in (("baseline", b_stats), ("candidate", c_stats)) if s.n == 0)
        return Comparison(
            **common,
            phase="Inconclusive",
            reason="NoData",
            message=f"No finite {missing} samples for {metric} ({counts}, {base_dropped + cand_dropped} non-finite dropped).",
        )

    assert b_stats.mean is not None and c_stats.mean is not None  # n >= 1 above
    change = _relative_change_pct(b_stats.mean, c_stats.mean, goal)
    common["change_pct"] = change
    means = f"candidate {metric} mean {_fmt(c_stats.mean)} vs baseline {_fmt(b_stats.mean)} ({_fmt_pct(change)})"

    if b_stats.n < settings.min_samples or c_stats.n < settings.min_samples:
        return Comparison(
            **common,
            phase="Inconclusive",
            reason="TooFewSamples",
            message=f"Too few samples for {metric}: {counts}, need {settings.min_samples} per variant ({means}).",
        )

    p_better, p_worse, welch_p, mwu_p, test_desc = _p_values(base, cand, goal, settings.test)
    common.update(p_value=p_better, p_value_worse=p_worse, welch_p_value=welch_p, mann_whitney_p_value=mwu_p)

    alpha = settings.significance
    if p_better < alpha:
        if change >= settings.min_improvement_pct:
            return Comparison(
                **common,
                phase="Successful",
                reason="CanaryBetter",
                message=f"{_sentence(means)} is significantly better ({test_desc} p={_fmt_p(p_better)} < {alpha:g}, {counts}).",
            )
        return Comparison(
            **common,
            phase="Inconclusive",
            reason="BelowMinimumImprovement",
            message=(
                f"{_sentence(means)} is significantly better ({test_desc} p={_fmt_p(p_better)} < {alpha:g}) "
                f"but below the required {settings.min_improvement_pct:g}% improvement."
            ),
        )
    if p_worse < alpha:
        return Comparison(
            **common,
            phase="Failed",
            reason="CanaryWorse",
            message=f"{_sentence(means)} is significantly worse ({test_desc} p={_fmt_p(p_worse)} < {alpha:g}, {counts}).",
        )
    return Comparison(
        **common,
        phase="Inconclusive",
        reason="NotSignificant",
        message=(
            f"{_sentence(means)} is not significant ({test_desc} p={_fmt_p(p_better)} better / "
            f"{_fmt_p(p_worse)} worse, need < {alpha:g}, {counts})."
        ),
    )


def _check_pairing(limit: GuardLimit, samples: MetricSamples) -> None:
    if samples.metric != limit.metric or samples.goal != limit.goal:
        raise ValueError(
            f"guard limit {limit.metric!r} ({limit.goal}) paired with samples of {samples.metric!r} ({samples.goal})"
        )


def _p_beyond(base: np.ndarray, cand: np.ndarray, limit: GuardLimit, test: TestKind) -> float:
    """One-sided p that the candidate is worse than the baseline by more than the guard's tolerance.

    The baseline's samples are moved by the tolerance (a fraction of |baseline mean|) towards "worse" and
    the candidate is tested for being worse than that: the usual margin test (the one a non-inferiority
    trial runs), so a degradation that is real but within the tolerance is not a breach however many
    samples measure it."""
    sign = 1.0 if limit.goal == "maximize" else -1.0
    threshold = base - sign * limit.max_degradation_pct / 100.0 * abs(float(np.mean(base)))
    return _p_values(threshold, cand, limit.goal, test)[1]


def evaluate_guard(limit: GuardLimit, samples: MetricSamples, settings: AnalysisSettings | None = None) -> GuardCheck:
    """Evaluate one guard.

    Breached only with statistical evidence that the degradation is beyond the tolerance (a one-sided
    margin test against the baseline moved by `max_degradation_pct`, below the significance). A mean
    beyond the tolerance with evidence of a degradation, but none that it exceeds the tolerance, is
    Inconclusive: the rollout neither steps forward on it nor rolls back on it, and measures again, on a
    window that keeps growing. (Breaching on "worse at all, and the mean beyond the tolerance" rolled good
    canaries back: the examples' HDE proposal (level 5, 64 KiB chunks, 256 KiB window) compresses 6-8 % worse
    than the default, within the guard's 10 %, yet 1-2 of 30 of its 10-s analyses at 50 % measured it more
    than 10 % worse at p < 0.001, about one canary in ten over its steps; the margin test breached none:
    `bench/guard_noise.py`, the real component and the real Prometheus.) A
    clearly worse mean on too few samples is Inconclusive too: we do not roll back on anecdotes, but we do
    not step forward on them either.
    """
    settings = settings or AnalysisSettings()
    _check_pairing(limit, samples)
    cmp = compare(samples.baseline, samples.candidate, limit.goal, settings, metric=limit.metric)
    degradation = -cmp.change_pct if cmp.change_pct is not None else None
    common: dict[str, Any] = {
        "limit": limit,
        "comparison": cmp,
        "degradation_pct": degradation,
        "p_value_worse": cmp.p_value_worse,
    }
    tol = f"{limit.max_degradation_pct:g}%"
    alpha = settings.significance
    if not cmp.enough_data:
        return GuardCheck(
            **common,
            status="Inconclusive",
            reason=cmp.reason,
            message=cmp.message,
        )
    assert degradation is not None and cmp.p_value_worse is not None
    worse_txt = (
        f"Guard {limit.metric} degraded {_fmt_pct(degradation).lstrip('+')} (candidate mean "
        f"{_fmt(cmp.candidate.mean)} vs baseline {_fmt(cmp.baseline.mean)}"
    )
    if cmp.p_value_worse < alpha:
        if degradation > limit.max_degradation_pct:
            base, _ = _clean(samples.baseline)
            cand, _ = _clean(samples.candidate)
            p_beyond = _p_beyond(base, cand, limit, settings.test)
            common["p_value_beyond"] = p_beyond
            if p_beyond < alpha:
                return GuardCheck(
                    **common,
                    status="Breached",
                    reason="GuardBreached",
                    message=(
                        f"{worse_txt}), beyond the {tol} tolerance (p={_fmt_p(p_beyond)} < {alpha:g} that it "
                        f"exceeds it)."
                    ),
                )
            return GuardCheck(
                **common,
                status="Inconclusive",
                reason="NotSignificant",
                message=(
                    f"{worse_txt}, p={_fmt_p(cmp.p_value_worse)}), beyond the {tol} tolerance by its mean but not "
                    f"significantly beyond it (p={_fmt_p(p_beyond)}, need < {alpha:g}); measuring again."
                ),
            )
        return GuardCheck(
            **common,
            status="Held",
            reason="WithinTolerance",
            message=(f"{worse_txt}, p={_fmt_p(cmp.p_value_worse)} < {alpha:g}), within the {tol} tolerance."),
        )
    return GuardCheck(
        **common,
        status="Held",
        reason="NotWorse",
        message=(
            f"Guard {limit.metric}: no significant degradation (candidate mean {_fmt(cmp.candidate.mean)} vs "
            f"baseline {_fmt(cmp.baseline.mean)}, p={_fmt_p(cmp.p_value_worse)})."
        ),
    )


def guard_ok(limit: GuardLimit, samples: MetricSamples, settings: AnalysisSettings | None = None) -> bool:
    """True when the guard held with enough data (neither breached nor inconclusive)."""
    return evaluate_guard(limit, samples, settings).status == "Held"


def _guards_verdict(checks: list[GuardCheck]) -> Verdict | None:
    """Failed if any guard breached, Inconclusive if any lacked data, else None."""
    breached = [c for c in checks if c.breached]
    if breached:
        more = ""
        if len(breached) > 1:
            more = " Also breached: " + ", ".join(c.limit.metric for c in breached[1:]) + "."
        return Verdict(phase="Failed", reason="GuardBreached", message=breached[0].message + more, guards=checks)
    unknown = [c for c in checks if c.status == "Inconclusive"]
    if unknown:
        more = ""
        if len(unknown) > 1:
            more = " Also undecided: " + ", ".join(c.limit.metric for c in unknown[1:]) + "."
        return Verdict(phase="Inconclusive", reason=unknown[0].reason, message=unknown[0].message + more, guards=checks)
    return None


def check_guards(
    guards: Sequence[tuple[GuardLimit, MetricSamples]], settings: AnalysisSettings | None = None
) -> Verdict | None:
    """Evaluate guards alone, for intermediate canary steps.

    Returns a Failed/GuardBreached verdict if any guard breached, an Inconclusive
    verdict (TooFewSamples/NoData) if any guard cannot be judged yet, and None when
    every guard held — the only case in which the operator should step the weight up.
    """
    settings = settings or AnalysisSettings()
    return _guards_verdict([evaluate_guard(limit, samples, settings) for limit, samples in guards])


def analyse(
    objective: MetricSamples,
    guards: Sequence[tuple[GuardLimit, MetricSamples]] = (),
    settings: AnalysisSettings | None = None,
    *,
    require: Literal["better", "not_worse"] = "better",
) -> Verdict:
    """Full analysis: guards first, then the objective; each guard is evaluated once.

    `require="better"` (the last rollout step, `tune`'s verification) succeeds only when the candidate
    is significantly better; `require="not_worse"` (an intermediate rollout step: may the weight go
    up?) succeeds when the objective is not significantly worse and every guard held, with enough data
    for both.

    Precedence, most decisive first:
    1. any guard breached                       -> Failed / GuardBreached
    2. objective significantly worse            -> Failed / CanaryWorse
    3. objective lacks data                     -> Inconclusive / NoData | TooFewSamples
    4. objective passes but a guard lacks data  -> Inconclusive / NoData | TooFewSamples
       (a success must not hide an unmeasured guard)
    5. not_worse: otherwise                     -> Successful / NotWorse
    6. better: better by >= min improvement     -> Successful / CanaryBetter
    7. otherwise                                -> Inconclusive / NotSignificant | BelowMinimumImprovement
    """
    settings = settings or AnalysisSettings()
    checks = [evaluate_guard(limit, samples, settings) for limit, samples in guards]
    obj = compare(objective.baseline, objective.candidate, objective.goal, settings, metric=objective.metric)
    extra: dict[str, Any] = {
        "p_value": obj.p_value,
        "improvement_pct": obj.change_pct,
        "objective": obj,
        "guards": checks,
    }

    guard_verdict = _guards_verdict(checks)
    if guard_verdict is not None and guard_verdict.phase == "Failed":
        return Verdict(phase="Failed", reason="GuardBreached", message=guard_verdict.message, **extra)
    if obj.phase == "Failed" or not obj.enough_data:
        return Verdict(phase=obj.phase, reason=obj.reason, message=obj.message, **extra)
    passes = require == "not_worse" or obj.phase == "Successful"
    if passes and guard_verdict is not None:
        name = "Objective" if obj.metric == "objective" else f"Objective {obj.metric}"
        state = "is better" if obj.phase == "Successful" else "is not worse"
        return Verdict(
            phase="Inconclusive",
            reason=guard_verdict.reason,
            message=(
                f"{name} {state} ({_fmt_pct(obj.change_pct)}, p={_fmt_p(obj.p_value)}) "
                f"but {guard_verdict.message[:1].lower()}{guard_verdict.message[1:]}"
            ),
            **extra,
        )
    if require == "not_worse":
        held = f"; {len(checks)} guard(s) held" if checks else ""
        return Verdict(
            phase="Successful",
            reason="NotWorse",
            message=(
                f"Canary {obj.metric} mean {_fmt(obj.candidate.mean)} vs stable {_fmt(obj.baseline.mean)} "
                f"({_fmt_pct(obj.change_pct)}) is not significantly worse (p={_fmt_p(obj.p_value_worse)}){held}."
            ),
            **extra,
        )
    return Verdict(phase=obj.phase, reason=obj.reason, message=obj.message, **extra)


def unavailable_verdict(message: str) -> Verdict:
    """The verdict of an analysis whose metrics could not be queried: inconclusive, never a reason to act."""
    return Verdict(phase="Inconclusive", reason="MetricsUnavailable", message=f"Metrics unavailable: {message}")
