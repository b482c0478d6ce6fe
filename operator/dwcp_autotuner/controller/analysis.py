"""Canary analysis of one rollout step: per-variant measurements from the metrics source → one verdict.

The score is computed per timestamp from the profile's metric queries (both variants are queried over
the same window, which begins when the step began, so steps never share samples) with the profile's
one score function, `TuningSpace.score` (the weighted objective minus the soft-constraint penalties of
constraints whose metric has a query; relative constraints, `maxIncreasePct`, are judged against the
stable variant's means), and judged by the shared canary statistics together with the guards, each
guard once. The verdict is all the rollout reads (`rollout/decision.py`): at an intermediate step it
asks "not worse, guards held, enough data?", at the last step "significantly better?".

At a weight of 100 % the stable variant gets no work, so the caller passes `baseline_start` and
`baseline_end` to take the stable samples from the previous step alone: the stable series does not stop at the
switch, the rate windows straddling it hold the last few stable units, whose scores scatter far beyond the
stable configuration's own spread (a handful of units of uneven work).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from ..models.analysis import AnalysisSettings
from ..models.profile import ParameterProfileSpec
from ..models.run import RolloutSettings, VariantMeasurement, sample_seconds
from ..ports.base import MetricsSource, Unavailable, render_query
from ..rollout.statistics import GuardLimit, MetricSamples, Verdict, analyse, sample_std, unavailable_verdict


@dataclass
class StepAnalysis:
    verdict: Verdict
    objective: MetricSamples  # the score samples of both variants
    stable: VariantMeasurement
    canary: VariantMeasurement


def _series(
    source: MetricsSource, template: str, variant: str, start: dt.datetime, end: dt.datetime, step: float
) -> dict[float, float]:
    query = render_query(template, variant, step)
    return {s.timestamp: s.value for s in source.samples(query, start, end, step)}


def score_series(
    profile: ParameterProfileSpec, series: dict[str, dict[float, float]], baseline: dict[str, float] | None
) -> list[float]:
    """The profile's score at every timestamp where all its scored metrics have a sample."""
    scored = sorted(
        {t.metric for t in profile.objective} | {c.metric for c in profile.constraints if c.metric in series}
    )
    common = set.intersection(*(set(series[m]) for m in scored)) if scored else set()
    return [profile.score({m: series[m][ts] for m in scored}, baseline) for ts in sorted(common)]


def collect(
    profile: ParameterProfileSpec,
    source: MetricsSource,
    start: dt.datetime,
    end: dt.datetime,
    step_seconds: float,
    *,
    baseline_start: dt.datetime | None = None,
    baseline_end: dt.datetime | None = None,
) -> tuple[MetricSamples, list[tuple[GuardLimit, MetricSamples]], dict[str, dict[str, dict[float, float]]]]:
    """Query every metric the score and guards need, for both variants; raises Unavailable.

    The stable variant is queried from `baseline_start` to `baseline_end` (default: `start` to `end`), the canary
    from `start` to `end`.
    Returns the score samples, the guards' samples and every metric's series per variant."""
    queries = {m.name: m.query for m in profile.metrics}
    needed = {t.metric for t in profile.objective} | {g.metric for g in profile.guards}
    missing = sorted(m for m in needed if not queries.get(m))
    if missing:
        raise Unavailable(f"metric(s) {', '.join(missing)} have no query")
    needed |= {c.metric for c in profile.constraints if queries.get(c.metric)}
    windows = {"stable": (baseline_start or start, baseline_end or end), "canary": (start, end)}
    data = {
        variant: {
            m: _series(source, queries[m] or "", variant, *windows[variant], step_seconds) for m in sorted(needed)
        }
        for variant in ("stable", "canary")
    }
    stable_means = {m: mean(list(values.values())) for m, values in data["stable"].items()}
    baseline = None if any(v is None for v in stable_means.values()) else stable_means
    objective = MetricSamples(
        metric="objective",
        goal="maximize",
        baseline=score_series(profile, data["stable"], baseline),
        candidate=score_series(profile, data["canary"], baseline),
    )
    guards = [
        (
            g,
            MetricSamples(
                metric=g.metric,
                goal=g.goal,
                baseline=[v for _, v in sorted(data["stable"][g.metric].items())],
                candidate=[v for _, v in sorted(data["canary"][g.metric].items())],
            ),
        )
        for g in profile.guards
    ]
    return objective, guards, data


def analyse_step(
    profile: ParameterProfileSpec,
    source: MetricsSource,
    rollout: RolloutSettings,
    start: dt.datetime,
    end: dt.datetime,
    *,
    last_step: bool,
    baseline_start: dt.datetime | None = None,
    baseline_end: dt.datetime | None = None,
) -> StepAnalysis:
    settings = AnalysisSettings.model_validate(rollout.model_dump(include=set(AnalysisSettings.model_fields)))
    try:
        objective, guards, data = collect(
            profile,
            source,
            start,
            end,
            sample_seconds(rollout),
            baseline_start=baseline_start,
            baseline_end=baseline_end,
        )
    except Unavailable as error:
        empty = MetricSamples(metric="objective", goal="maximize")
        return StepAnalysis(unavailable_verdict(str(error)), empty, VariantMeasurement(), VariantMeasurement())
    verdict = analyse(objective, guards, settings, require="better" if last_step else "not_worse")
    return StepAnalysis(
        verdict=verdict,
        objective=objective,
        stable=_measurement(objective.baseline, data["stable"]),
        canary=_measurement(objective.candidate, data["canary"]),
    )


def _measurement(scores: list[float], series: dict[str, dict[float, float]]) -> VariantMeasurement:
    finite = [v for v in scores if np.isfinite(v)]
    metrics = {m: significant(v) for m, values in series.items() if (v := mean(list(values.values()))) is not None}
    return VariantMeasurement(
        score=None if not finite else significant(float(np.mean(finite))),
        score_std=None if len(finite) < 2 else significant(sample_std(np.array(finite))),
        n=len(finite),
        metrics=metrics,
    )


def significant(value: float) -> float:
    """Six significant digits, not six decimals: a score of 3e-7 (a latency in hours, a small weight) rounded to six
    decimals was 0 in every step record, and the learned twin, seeing nothing but zeros, held the run for good."""
    return float(f"{value:.6g}")


def mean(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None
