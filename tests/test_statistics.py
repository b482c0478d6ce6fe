"""Tests for dwcp_autotuner.rollout.statistics: the canary-vs-baseline decision.

Every stochastic test uses numpy Generators with fixed seeds, so results are exact and
repeatable; the bands below are chosen so that a broken test (wrong tail, two-sided p,
Student instead of Welch, pooled "both") fails them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from dwcp_autotuner.rollout.statistics import (
    AnalysisSettings,
    GuardLimit,
    MetricSamples,
    analyse,
    check_guards,
    compare,
    evaluate_guard,
    guard_ok,
)

TESTS = ["welch", "mannwhitney", "both"]


def normal(seed: int, mean: float, cv: float, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, abs(mean) * cv, n)


def pair(seed: int, base_mean: float, cand_mean: float, cv: float = 0.05, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Independent baseline/candidate samples from one seed (distinct sub-streams)."""
    rng = np.random.default_rng(seed)
    b = rng.normal(base_mean, abs(base_mean) * cv, n)
    c = rng.normal(cand_mean, abs(base_mean) * cv, n)
    return b, c


# ------------------------------------------------------------------------------ A/A


@pytest.mark.parametrize("test", TESTS)
def test_aa_never_successful_at_strict_significance(test: str) -> None:
    settings = AnalysisSettings(test=test)  # significance 0.001
    for seed in range(30):
        b, c = pair(seed, 100.0, 100.0, n=50)
        for goal in ("maximize", "minimize"):
            cmp = compare(b, c, goal, settings)
            assert cmp.phase != "Successful", (seed, goal, cmp.message)
            assert cmp.p_value is not None and 0.0 <= cmp.p_value <= 1.0


@pytest.mark.parametrize("test", ["welch", "mannwhitney"])
def test_aa_false_positive_rate_is_nominal(test: str) -> None:
    """One-sided at 0.05: ~5% Successful and ~5% CanaryWorse; a two-sided p would give
    ~2.5% each way, a wrong tail would give ~95%."""
    settings = AnalysisSettings(test=test, significance=0.05)
    seeds = range(1000, 1400)
    better = worse = 0
    for seed in seeds:
        b, c = pair(seed, 50.0, 50.0, cv=0.2, n=50)
        cmp = compare(b, c, "maximize", settings)
        better += cmp.phase == "Successful"
        worse += cmp.reason == "CanaryWorse"
    n = len(seeds)
    assert 0.02 <= better / n <= 0.09, better / n
    assert 0.02 <= worse / n <= 0.09, worse / n


# --------------------------------------------------------------------------- power


@pytest.mark.parametrize("test", TESTS)
def test_ten_percent_gain_is_detected(test: str) -> None:
    settings = AnalysisSettings(test=test)
    for seed in range(10):
        b, c = pair(seed, 100.0, 110.0, cv=0.05, n=40)
        verdict = analyse(MetricSamples(goal="maximize", baseline=b, candidate=c), settings=settings)
        assert verdict.phase == "Successful", verdict.message
        assert verdict.reason == "CanaryBetter"
        assert verdict.p_value is not None and verdict.p_value < 0.001
        assert verdict.improvement_pct == pytest.approx(10.0, abs=3.0)


@pytest.mark.parametrize("test", TESTS)
def test_minimize_goal_lower_is_better(test: str) -> None:
    settings = AnalysisSettings(test=test)
    b, c = pair(7, 200.0, 180.0, cv=0.05, n=40)  # latency down 10%
    down = compare(b, c, "minimize", settings)
    assert (down.phase, down.reason) == ("Successful", "CanaryBetter")
    assert down.change_pct == pytest.approx(10.0, abs=3.0)  # positive = better
    # The same data read as "maximize" is a regression.
    up = compare(b, c, "maximize", settings)
    assert (up.phase, up.reason) == ("Failed", "CanaryWorse")
    assert up.change_pct is not None and up.change_pct < 0


def test_worse_candidate_fails() -> None:
    b, c = pair(3, 100.0, 90.0)
    verdict = analyse(MetricSamples(goal="maximize", baseline=b, candidate=c))
    assert (verdict.phase, verdict.reason) == ("Failed", "CanaryWorse")
    assert verdict.objective is not None and verdict.objective.p_value_worse is not None
    assert verdict.objective.p_value_worse < 0.001
    assert verdict.p_value is not None and verdict.p_value > 0.5
    assert "worse" in verdict.message


def test_welch_p_matches_scipy_welch_not_student() -> None:
    rng = np.random.default_rng(11)
    b = rng.normal(10.0, 0.5, 8)
    c = rng.normal(10.6, 3.0, 30)  # unequal sizes and variances: Welch != Student
    cmp = compare(b, c, "maximize", AnalysisSettings(significance=0.05))
    welch = stats.ttest_ind(c, b, equal_var=False, alternative="greater").pvalue
    student = stats.ttest_ind(c, b, equal_var=True, alternative="greater").pvalue
    assert cmp.p_value == pytest.approx(welch, rel=1e-12)
    assert abs(welch - student) > 1e-3
    assert cmp.welch_p_value == cmp.p_value and cmp.mann_whitney_p_value is None
    # The opposite tail, for both goals, matches scipy's own one-sided tests.
    less = stats.ttest_ind(c, b, equal_var=False, alternative="less").pvalue
    assert cmp.p_value_worse == pytest.approx(less, rel=1e-9)
    mini = compare(b, c, "minimize", AnalysisSettings(significance=0.05))
    assert mini.p_value == pytest.approx(less, rel=1e-9)
    assert mini.p_value_worse == pytest.approx(welch, rel=1e-9)
    # A far tail is reported exactly, not rounded to 0 by 1 - p.
    far = compare(normal(1, 100.0, 0.01, 40), normal(2, 80.0, 0.01, 40), "maximize")
    assert far.p_value_worse is not None and 0.0 < far.p_value_worse < 1e-30


def test_both_requires_both_tests_to_reject() -> None:
    """Ranks clearly shifted up, but one huge negative outlier kills the mean: the
    Mann-Whitney test rejects, Welch does not, so 'both' must not."""
    rng = np.random.default_rng(5)
    b = rng.normal(100.0, 1.0, 40)
    c = rng.normal(103.0, 1.0, 40)
    c[0] = -1000.0
    mwu = compare(b, c, "maximize", AnalysisSettings(test="mannwhitney"))
    welch = compare(b, c, "maximize", AnalysisSettings(test="welch"))
    both = compare(b, c, "maximize", AnalysisSettings(test="both"))
    assert mwu.p_value is not None and mwu.p_value < 0.001
    assert mwu.p_value == pytest.approx(stats.mannwhitneyu(c, b, alternative="greater").pvalue, rel=1e-12)
    assert mwu.p_value_worse == pytest.approx(stats.mannwhitneyu(c, b, alternative="less").pvalue, rel=1e-12)
    assert welch.p_value is not None and welch.p_value > 0.05
    assert both.p_value == pytest.approx(max(mwu.p_value, welch.p_value))
    assert both.welch_p_value == pytest.approx(welch.p_value)
    assert both.mann_whitney_p_value == pytest.approx(mwu.p_value)
    assert both.phase == "Inconclusive" and both.reason == "NotSignificant"
    # Mann-Whitney alone is significant but the mean went down: no success either.
    assert (mwu.phase, mwu.reason) == ("Inconclusive", "BelowMinimumImprovement")


# -------------------------------------------------------------------------- guards


def _objective_better(seed: int = 21) -> MetricSamples:
    b, c = pair(seed, 100.0, 110.0)
    return MetricSamples(goal="maximize", baseline=b, candidate=c)


def _latency(seed: int, base: float, cand: float, n: int = 40, cv: float = 0.02) -> MetricSamples:
    b, c = pair(seed, base, cand, cv=cv, n=n)
    return MetricSamples(metric="p99_latency", goal="minimize", baseline=b, candidate=c)


def test_guard_breach_fails_even_if_objective_improved() -> None:
    limit = GuardLimit(metric="p99_latency", goal="minimize", max_degradation_pct=5.0)
    lat = _latency(31, 10.0, 12.0)  # +20% latency
    verdict = analyse(_objective_better(), [(limit, lat)])
    assert (verdict.phase, verdict.reason) == ("Failed", "GuardBreached")
    assert verdict.objective is not None and verdict.objective.phase == "Successful"
    assert verdict.improvement_pct is not None and verdict.improvement_pct > 5
    (check,) = verdict.guards
    assert check.breached and check.status == "Breached"
    assert check.degradation_pct == pytest.approx(20.0, abs=3.0)
    assert "p99_latency" in verdict.message and "5% tolerance" in verdict.message
    assert guard_ok(limit, lat) is False
    gv = check_guards([(limit, lat)])
    assert gv is not None and (gv.phase, gv.reason) == ("Failed", "GuardBreached")


def test_guard_degradation_within_tolerance_is_not_a_breach() -> None:
    limit = GuardLimit(metric="p99_latency", goal="minimize", max_degradation_pct=5.0)
    lat = _latency(32, 10.0, 10.2, n=60, cv=0.01)  # +2%, highly significant
    check = evaluate_guard(limit, lat)
    assert check.p_value_worse is not None and check.p_value_worse < 0.001
    assert check.degradation_pct == pytest.approx(2.0, abs=0.5)
    assert (check.status, check.reason) == ("Held", "WithinTolerance")
    assert guard_ok(limit, lat) is True
    assert check_guards([(limit, lat)]) is None
    verdict = analyse(_objective_better(), [(limit, lat)])
    assert (verdict.phase, verdict.reason) == ("Successful", "CanaryBetter")
    # With zero tolerance the same data breaches.
    strict = GuardLimit(metric="p99_latency", goal="minimize")
    assert evaluate_guard(strict, lat).breached


def _ratio_guard_outcomes(test: str, truth_pct: float, cv: float, n: int, seeds: int = 200) -> tuple[dict, int]:
    """Outcomes of a 10 % guard on a metric to maximize whose candidate is `truth_pct` worse, over many seeds;
    and how often the means alone said "significantly worse, and beyond the tolerance" (the old breach rule)."""
    limit = GuardLimit(metric="compression_ratio", goal="maximize", max_degradation_pct=10.0)
    settings = AnalysisSettings(test=test, min_samples=3)
    outcomes: dict[str, int] = {"Breached": 0, "Inconclusive": 0, "Held": 0}
    worse_and_beyond = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        base = 12.0 * (1 + cv * rng.standard_normal(n))
        cand = 12.0 * (1 - truth_pct / 100) * (1 + cv * rng.standard_normal(n))
        check = evaluate_guard(
            limit, MetricSamples(metric="compression_ratio", goal="maximize", baseline=base, candidate=cand), settings
        )
        outcomes[check.status] += 1
        assert check.p_value_worse is not None and check.degradation_pct is not None
        if check.p_value_worse < settings.significance and check.degradation_pct > 10.0:
            worse_and_beyond += 1
            assert check.status != "Held"  # a mean beyond the tolerance never steps forward
            if check.status == "Inconclusive":
                assert check.reason == "NotSignificant" and "not significantly beyond" in check.message
                assert check.p_value_beyond is not None and check.p_value_beyond >= settings.significance
    return outcomes, worse_and_beyond


@pytest.mark.parametrize("test", TESTS)
def test_a_degradation_within_the_tolerance_is_not_breached_by_a_noisy_mean(test: str) -> None:
    """A guard breaches only when the degradation is significantly beyond its tolerance, not when a noisy mean
    lands beyond it: a candidate 6 % worse under a 10 % guard (8 % noise per sample, 20 samples, as a
    compression ratio over short windows) measured "significantly worse and more than 10 % worse" in 8 of 200
    analyses, which rolled a good canary back (the closed loop's HDE canary, GuardBreached at 50 %)."""
    outcomes, worse_and_beyond = _ratio_guard_outcomes(test, truth_pct=6.0, cv=0.08, n=20)
    assert worse_and_beyond >= 5  # the data do put noisy means beyond the tolerance ...
    assert outcomes["Breached"] == 0  # ... and none of them breaches
    assert outcomes["Inconclusive"] == worse_and_beyond  # each of them is measured again


@pytest.mark.parametrize("test", TESTS)
def test_a_degradation_well_beyond_the_tolerance_still_breaches_at_once(test: str) -> None:
    clear, _ = _ratio_guard_outcomes(test, truth_pct=20.0, cv=0.05, n=40, seeds=50)
    assert clear == {"Breached": 50, "Inconclusive": 0, "Held": 0}
    noisy, _ = _ratio_guard_outcomes(test, truth_pct=20.0, cv=0.08, n=20, seeds=100)
    assert noisy["Held"] == 0 and noisy["Breached"] >= 75  # the rest is measured again, never stepped over


def test_a_guard_beyond_its_tolerance_by_its_mean_only_keeps_the_step_waiting() -> None:
    """The objective passes, the guard is worse and beyond its tolerance by its mean, but not significantly
    beyond it: the analysis is inconclusive (the rollout waits for more samples), neither a breach nor a pass."""
    limit = GuardLimit(metric="compression_ratio", goal="maximize", max_degradation_pct=10.0)
    rng = np.random.default_rng(5)
    base, cand = 12.0 * (1 + 0.08 * rng.standard_normal(20)), 10.6 * (1 + 0.08 * rng.standard_normal(20))
    ratio = MetricSamples(metric="compression_ratio", goal="maximize", baseline=base, candidate=cand)
    check = evaluate_guard(limit, ratio)
    assert check.degradation_pct is not None and check.degradation_pct > 10.0
    assert check.p_value_worse is not None and check.p_value_worse < 0.001
    assert (check.status, check.reason) == ("Inconclusive", "NotSignificant")
    for require in ("not_worse", "better"):
        verdict = analyse(_objective_better(), [(limit, ratio)], require=require)  # type: ignore[arg-type]
        assert (verdict.phase, verdict.reason) == ("Inconclusive", "NotSignificant"), verdict.message
        assert "beyond the 10% tolerance by its mean but not significantly beyond it" in verdict.message


def test_a_guard_at_zero_tolerance_breaches_on_any_significant_degradation() -> None:
    limit = GuardLimit(metric="p99_latency", goal="minimize")
    check = evaluate_guard(limit, _latency(36, 10.0, 10.3, n=40, cv=0.01))
    assert check.breached and check.p_value_beyond == check.p_value_worse


def test_guard_unchanged_holds() -> None:
    limit = GuardLimit(metric="p99_latency", goal="minimize")
    check = evaluate_guard(limit, _latency(33, 10.0, 10.0))
    assert (check.status, check.reason) == ("Held", "NotWorse")


def test_guard_clearly_worse_but_too_few_samples_is_inconclusive() -> None:
    limit = GuardLimit(metric="p99_latency", goal="minimize")
    lat = MetricSamples(metric="p99_latency", goal="minimize", baseline=[10.0, 10.1, 9.9], candidate=[20.0, 21.0, 19.0])
    check = evaluate_guard(limit, lat)
    assert not check.breached
    assert (check.status, check.reason) == ("Inconclusive", "TooFewSamples")
    gv = check_guards([(limit, lat)])
    assert gv is not None and (gv.phase, gv.reason) == ("Inconclusive", "TooFewSamples")
    # A better objective does not hide the unmeasured guard.
    verdict = analyse(_objective_better(), [(limit, lat)])
    assert (verdict.phase, verdict.reason) == ("Inconclusive", "TooFewSamples")
    assert "p99_latency" in verdict.message


def test_several_breaches_are_all_named() -> None:
    l1 = GuardLimit(metric="p99_latency", goal="minimize")
    l2 = GuardLimit(metric="error_rate", goal="minimize")
    lat = _latency(34, 10.0, 12.0)
    b, c = pair(35, 0.01, 0.02)
    err = MetricSamples(metric="error_rate", goal="minimize", baseline=b, candidate=c)
    gv = check_guards([(l1, lat), (l2, err)])
    assert gv is not None and gv.reason == "GuardBreached"
    assert "p99_latency" in gv.message and "error_rate" in gv.message
    assert [g.breached for g in gv.guards] == [True, True]


def test_guard_paired_with_wrong_metric_raises() -> None:
    limit = GuardLimit(metric="error_rate", goal="minimize")
    with pytest.raises(ValueError, match="error_rate"):
        evaluate_guard(limit, _latency(36, 10.0, 10.0))


# ------------------------------------------------------------- data edge cases


@pytest.mark.parametrize(("nb", "nc"), [(4, 40), (40, 4), (2, 2)])
def test_too_few_samples_is_inconclusive(nb: int, nc: int) -> None:
    b = normal(1, 100.0, 0.05, nb)
    c = normal(2, 200.0, 0.05, nc)  # a huge gain, but we do not trust it
    verdict = analyse(MetricSamples(goal="maximize", baseline=b, candidate=c))
    assert (verdict.phase, verdict.reason) == ("Inconclusive", "TooFewSamples")
    assert verdict.p_value is None
    assert "5 per variant" in verdict.message


def test_non_finite_samples_are_dropped_before_counting() -> None:
    b = [1.0, 2.0, 3.0, 4.0, 5.0]
    c = [2.0, 3.0, float("nan"), 5.0, float("inf"), 6.0]
    cmp = compare(b, c, "maximize")
    assert cmp.reason == "TooFewSamples"
    assert cmp.candidate.n == 4 and cmp.candidate.dropped == 2
    assert cmp.candidate.mean == pytest.approx(4.0)
    ok = compare(b, c + [7.0, float("-inf")], "maximize", AnalysisSettings(significance=0.4))
    assert ok.candidate.n == 5 and ok.candidate.dropped == 3
    assert ok.p_value is not None and math.isfinite(ok.p_value)


def test_samples_near_the_float_limit_get_a_finite_spread_without_a_warning() -> None:
    """A broken query's ±1e300 is finite, so it is analysed: squared as they are such samples leave the float
    range, numpy warned (`overflow encountered in square`, 25 times in CI) and the spread read inf."""
    huge = [1e300, -1e300, 1e300, -1e300, 1e300, 5.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compare([1.0, 2.0, 3.0, 4.0, 5.0], huge, "maximize")
    assert result.candidate.std == pytest.approx(np.std(np.array(huge) / 1e300, ddof=1) * 1e300)
    assert math.isfinite(result.candidate.std) and result.baseline.std == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1))


@pytest.mark.parametrize(
    ("baseline", "candidate"),
    [([], []), ([], [1.0] * 10), ([1.0] * 10, []), ([float("nan")] * 10, [1.0] * 10)],
)
def test_no_data(baseline: list[float], candidate: list[float]) -> None:
    verdict = analyse(MetricSamples(goal="maximize", baseline=baseline, candidate=candidate))
    assert (verdict.phase, verdict.reason) == ("Inconclusive", "NoData")
    assert verdict.improvement_pct is None and verdict.p_value is None


def test_min_improvement_filters_small_significant_gain() -> None:
    b, c = pair(41, 100.0, 102.0, cv=0.01, n=40)  # +2%, very significant
    strict = compare(b, c, "maximize", AnalysisSettings(min_improvement_pct=5.0))
    assert strict.p_value is not None and strict.p_value < 0.001
    assert (strict.phase, strict.reason) == ("Inconclusive", "BelowMinimumImprovement")
    assert "5%" in strict.message
    lax = compare(b, c, "maximize", AnalysisSettings(min_improvement_pct=1.0))
    assert (lax.phase, lax.reason) == ("Successful", "CanaryBetter")


@pytest.mark.parametrize("test", TESTS)
def test_zero_variance(test: str) -> None:
    settings = AnalysisSettings(test=test)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scipy RuntimeWarnings may leak out
        same = compare([3.0] * 8, [3.0] * 8, "maximize", settings)
        assert (same.phase, same.reason) == ("Inconclusive", "NotSignificant")
        assert same.p_value == 1.0 and same.p_value_worse == 1.0 and same.change_pct == 0.0

        up = compare([3.0] * 8, [4.0] * 8, "maximize", settings)
        assert (up.phase, up.reason, up.p_value) == ("Successful", "CanaryBetter", 0.0)
        down = compare([3.0] * 8, [4.0] * 8, "minimize", settings)
        assert (down.phase, down.reason, down.p_value_worse) == ("Failed", "CanaryWorse", 0.0)

        # Negative constants: -5 -> -4 is an increase, i.e. +20% for maximize.
        neg = compare([-5.0] * 6, [-4.0] * 6, "maximize", settings)
        assert neg.phase == "Successful" and neg.change_pct == pytest.approx(20.0)

        # Zero baseline mean: no relative scale, but still a deterministic verdict.
        zero = compare([0.0] * 6, [1.0] * 6, "minimize", settings)
        assert zero.phase == "Failed" and zero.change_pct == -math.inf

        # Only one side constant: scipy can test, and must not warn.
        one = compare([3.0] * 20, normal(9, 3.0, 0.05, 20), "maximize", settings)
        assert one.p_value is not None and math.isfinite(one.p_value)


def test_negative_valued_metric_sign_convention() -> None:
    b, c = pair(51, -100.0, -90.0)  # e.g. a negated cost going up by 10% of |baseline|
    cmp = compare(b, c, "maximize")
    assert cmp.phase == "Successful"
    assert cmp.change_pct == pytest.approx(10.0, abs=3.0)
    assert compare(b, c, "minimize").reason == "CanaryWorse"


# ------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"significance": 0.0}, "significance"),
        ({"significance": 0.5}, "significance"),
        ({"significance": float("nan")}, "significance"),
        ({"min_samples": 1}, "min_samples"),
        ({"min_improvement_pct": -1.0}, "min_improvement_pct"),
        ({"test": "ttest"}, "test"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        AnalysisSettings(**kwargs)
    locs = [e["loc"][0] for e in exc.value.errors()]
    assert locs == [field]
    assert field in str(exc.value)


def test_settings_round_trip_camel_case_for_crds() -> None:
    settings = AnalysisSettings.model_validate(
        {"test": "both", "significance": 0.01, "minSamples": 10, "minImprovementPct": 2.5}
    )
    assert settings.min_samples == 10 and settings.min_improvement_pct == 2.5
    assert settings.dump() == {"test": "both", "significance": 0.01, "minSamples": 10, "minImprovementPct": 2.5}
    with pytest.raises(ValidationError, match="minSamples"):
        AnalysisSettings.model_validate({"minSamples": 1})
    with pytest.raises(ValidationError):
        AnalysisSettings.model_validate({"minSample": 10})  # typos are rejected, not ignored
    with pytest.raises(ValidationError, match="max_degradation_pct"):
        GuardLimit(metric="x", goal="minimize", max_degradation_pct=-1)


def test_verdict_serialises_camel_case() -> None:
    limit = GuardLimit(metric="p99_latency", goal="minimize", max_degradation_pct=5.0)
    verdict = analyse(_objective_better(), [(limit, _latency(61, 10.0, 10.0))])
    data = verdict.dump()
    assert data["phase"] == "Successful" and data["reason"] == "CanaryBetter"
    assert {"pValue", "improvementPct", "objective", "guards"} <= set(data)
    assert data["objective"]["changePct"] == pytest.approx(verdict.improvement_pct)
    assert data["guards"][0]["limit"]["maxDegradationPct"] == 5.0
    assert data["guards"][0]["status"] == "Held"
