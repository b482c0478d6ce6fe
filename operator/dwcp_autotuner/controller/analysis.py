"""Canary analysis of one rollout step: per-variant measurements from the metrics source → a verdict.

The objective is computed per timestamp from the profile's metric queries (both variants are
queried over the same window, which begins when the step began, so steps never share samples),
then judged by the shared canary statistics. Guards are judged on their own metric's samples.

"Objective" here is the profile's score: the weighted objective minus the soft-constraint penalties
(constraints whose metric has a query), the quantity the agent, the twin and `tune`'s verification
maximise; relative constraints (`maxIncreasePct`) are judged against the stable variant's means.
At a weight of 100 % the stable variant gets no work, so the caller passes `baseline_start` to reach
back into the previous step for the stable samples.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from ..models.profile import ParameterProfileSpec
from ..models.run import RolloutSettings, sample_seconds
from ..ports.base import MetricsSource, Unavailable, render_query
from ..rollout.statistics import AnalysisSettings, GuardLimit, MetricSamples, Verdict, analyse, check_guards


@dataclass
class StepAnalysis:
    verdict: Verdict
    guards_verdict: Verdict | None  # None: every guard held
    objective: MetricSamples
    unavailable: str | None = None  # the metrics backend could not be reached


def analysis_settings(rollout: RolloutSettings) -> AnalysisSettings:
    return AnalysisSettings(
        test=rollout.test,
        significance=rollout.significance,
        min_samples=rollout.min_samples,
        min_improvement_pct=rollout.min_improvement_pct,
    )


def _series(source: MetricsSource, template: str, variant: str, start: dt.datetime, end: dt.datetime, step: float) -> dict[float, float]:
    query = render_query(template, variant, step)
    return {s.timestamp: s.value for s in source.samples(query, start, end, step)}


def collect(
    profile: ParameterProfileSpec,
    source: MetricsSource,
    start: dt.datetime,
    end: dt.datetime,
    step_seconds: float,
    *,
    baseline_start: dt.datetime | None = None,
) -> tuple[MetricSamples, list[tuple[GuardLimit, MetricSamples]]]:
    """Query every metric the score and guards need, for both variants; raises Unavailable.

    The stable variant is queried from `baseline_start` (default: `start`), the canary from `start`."""
    queries = {m.name: m.query for m in profile.metrics}
    needed = {t.metric for t in profile.objective} | {g.metric for g in profile.guards}
    missing = sorted(m for m in needed if not queries.get(m))
    if missing:
        raise Unavailable(f"metric(s) {', '.join(missing)} have no query")
    constraints = [c for c in profile.constraints if queries.get(c.metric)]
    needed |= {c.metric for c in constraints}
    windows = {"stable": (baseline_start or start, end), "canary": (start, end)}
    data: dict[str, dict[str, dict[float, float]]] = {
        variant: {m: _series(source, queries[m], variant, *windows[variant], step_seconds) for m in sorted(needed)}
        for variant in ("stable", "canary")
    }
    scored = sorted({t.metric for t in profile.objective} | {c.metric for c in constraints})
    stable_means = {m: mean(list(data["stable"][m].values())) for m in scored}
    baseline = None if any(v is None for v in stable_means.values()) else stable_means

    def objective_samples(variant: str) -> list[float]:
        series = data[variant]
        common = set.intersection(*(set(series[m]) for m in scored)) if scored else set()
        values = []
        for ts in sorted(common):
            metrics = {m: series[m][ts] for m in scored}
            penalty = sum(c.penalty * c.violation(metrics[c.metric], None if baseline is None else baseline[c.metric]) for c in constraints)
            values.append(profile.objective_value(metrics) - penalty)
        return values

    objective = MetricSamples(metric="objective", goal="maximize", baseline=objective_samples("stable"), candidate=objective_samples("canary"))
    guards = [
        (
            GuardLimit(metric=g.metric, goal=g.goal, max_degradation_pct=g.max_degradation_pct),
            MetricSamples(
                metric=g.metric,
                goal=g.goal,
                baseline=[v for _, v in sorted(data["stable"][g.metric].items())],
                candidate=[v for _, v in sorted(data["canary"][g.metric].items())],
            ),
        )
        for g in profile.guards
    ]
    return objective, guards


def analyse_step(
    profile: ParameterProfileSpec,
    source: MetricsSource,
    rollout: RolloutSettings,
    start: dt.datetime,
    end: dt.datetime,
    *,
    baseline_start: dt.datetime | None = None,
) -> StepAnalysis:
    settings = analysis_settings(rollout)
    # Aim for about twice the minimum samples in one analysis interval, never finer than 1 s.
    step_seconds = sample_seconds(rollout)
    try:
        objective, guards = collect(profile, source, start, end, step_seconds, baseline_start=baseline_start)
    except Unavailable as error:
        empty = MetricSamples(metric="objective", goal="maximize")
        verdict = analyse(empty, settings=settings)
        return StepAnalysis(
            verdict=verdict.model_copy(update={"message": f"Metrics unavailable: {error}"}),
            guards_verdict=None,
            objective=empty,
            unavailable=str(error),
        )
    return StepAnalysis(
        verdict=analyse(objective, guards, settings),
        guards_verdict=check_guards(guards, settings) if guards else None,
        objective=objective,
    )


def mean(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None
