"""Canary analysis of one rollout step: per-variant measurements from the metrics source → a verdict.

The objective is computed per timestamp from the profile's metric queries (both variants are
queried over the same window, which begins when the step began, so steps never share samples),
then judged by the shared canary statistics. Guards are judged on their own metric's samples.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from ..models.profile import ParameterProfileSpec
from ..models.run import RolloutSettings
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
) -> tuple[MetricSamples, list[tuple[GuardLimit, MetricSamples]]]:
    """Query every metric the objective and guards need, for both variants; raises Unavailable."""
    queries = {m.name: m.query for m in profile.metrics}
    needed = {t.metric for t in profile.objective} | {g.metric for g in profile.guards}
    missing = sorted(m for m in needed if not queries.get(m))
    if missing:
        raise Unavailable(f"metric(s) {', '.join(missing)} have no query")
    data: dict[str, dict[str, dict[float, float]]] = {
        variant: {m: _series(source, queries[m], variant, start, end, step_seconds) for m in sorted(needed)}
        for variant in ("stable", "canary")
    }

    def objective_samples(variant: str) -> list[float]:
        series = data[variant]
        objective_metrics = [t.metric for t in profile.objective]
        common = set.intersection(*(set(series[m]) for m in objective_metrics)) if objective_metrics else set()
        values = []
        for ts in sorted(common):
            values.append(profile.objective_value({m: series[m][ts] for m in objective_metrics}))
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
) -> StepAnalysis:
    settings = analysis_settings(rollout)
    # Aim for about twice the minimum samples in one analysis interval, never finer than 1 s.
    step_seconds = max(1.0, rollout.analysis_interval_seconds / max(2 * rollout.min_samples, 1))
    try:
        objective, guards = collect(profile, source, start, end, step_seconds)
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
