"""PBA reference workload: predict bandwidth demand and allocate at a quantile of it.

The trace (deterministic for a seed, cached per seed)
-----------------------------------------------------
`hours` hours (3, quick 1.5) of demand at 1 s resolution, in Mbit/s around a mean of 400: a diurnal cycle
(24 h period, random phase, ±35 %, so a few hours show a ramp), an hourly batch job (a 10-minute
plateau of +25 % at a random minute of every hour), bursts (Poisson, one per 10 minutes on
average, lognormal duration around 60 s and height around +40 %, a 5 s rise and an exponential
decay), AR(1) noise (φ = 0.9, 5 % of the mean) and 12 % multiplicative white noise (1-second
demand of an aggregate is bursty).

The predictor (real computation, vectorised with numpy)
-------------------------------------------------------
Every `update_frequency` seconds it looks at the last `prediction_window` seconds, fits a level
and a linear trend by least squares, predicts the demand at the middle of the next interval
(the trend damped by half, since a short window's slope is mostly noise) and allocates that
point prediction plus the `confidence_threshold` quantile of the window's residuals around the
fit. Every reallocation reprograms the rate limiter, which drops the traffic it carries for
`reconfig_loss_ms` (queues are flushed when the shaper is replaced): that is the price of very
frequent updates. All configurations are evaluated over the same span (the trace after the
longest window of the built-in space).

Metrics: accuracy = 1 − MAPE of the point prediction against the demand of each second, clipped
to [0, 1]; waste_pct = Σ(allocated − used)⁺ / Σ allocated × 100; violation_pct = (Σ(demand −
allocated)⁺ + reconfiguration losses) / Σ demand × 100; prediction_latency_ms = measured compute
time of one prediction (all predictions of a run are computed together, vectorised, and the time
is divided by their number; the work per prediction grows with the window).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .base import ConfigValue, as_float, as_int, require

PARAMS = ("prediction_window", "confidence_threshold", "update_frequency")
METRICS = ("accuracy", "waste_pct", "violation_pct", "prediction_latency_ms")
#: The live conditions this workload's options stand for, with their valid range (see `twin_conditions`).
CONDITIONS = {"reconfig_loss_ms": (0.0, 999.0), "trend_damping": (0.0, 1.0)}
MEAN_DEMAND = 400.0  # Mbit/s
#: Evaluation starts here, so that every window of the built-in space (≤ 300 s) fits before.
WARMUP_S = 300


class PbaWorkload:
    """Bandwidth prediction and allocation on a synthetic demand trace."""

    name = "pba"
    metric_names = METRICS
    parameter_names = PARAMS
    #: The predictor's compute time per prediction, on this machine's clock.
    timed_metrics = ("prediction_latency_ms",)

    def __init__(
        self,
        *,
        quick: bool = False,
        hours: float | None = None,
        reconfig_loss_ms: float = 30.0,
        trend_damping: float = 0.5,
    ) -> None:
        self.quick = bool(quick)
        self.hours = float(hours if hours is not None else (1.5 if quick else 3.0))
        if self.hours <= 0:
            raise ValueError("hours must be positive")
        if not 0.0 <= reconfig_loss_ms < 1000.0:
            raise ValueError("reconfig_loss_ms must lie in [0, 1000)")
        if not 0.0 <= trend_damping <= 1.0:
            raise ValueError("trend_damping must lie in [0, 1]")
        self.reconfig_loss_ms = float(reconfig_loss_ms)
        self.trend_damping = float(trend_damping)
        self.seconds = int(round(self.hours * 3600))
        if self.seconds <= 2 * WARMUP_S:
            raise ValueError(f"the trace must be longer than {2 * WARMUP_S} s")

    def options(self) -> dict:
        return {
            "quick": self.quick,
            "seconds": self.seconds,
            "reconfig_loss_ms": self.reconfig_loss_ms,
            "trend_damping": self.trend_damping,
        }

    def run(self, config: Mapping[str, ConfigValue], seed: int) -> dict[str, float]:
        return self.evaluate(config, seed).metrics()

    def evaluate(self, config: Mapping[str, ConfigValue], seed: int) -> PbaTotals:
        """One trace planned with `config`: the sums behind `run()`'s metrics (a live component
        exports these as counters; see `PbaTotals`)."""
        require(config, PARAMS, self.name)
        window = as_int(config, "prediction_window", 2)
        quantile = as_float(config, "confidence_threshold", 0.0, 1.0)
        update = as_int(config, "update_frequency", 1)
        if window > WARMUP_S:
            raise ValueError(f"prediction_window must be at most {WARMUP_S} s")
        demand = trace(int(seed), self.seconds)
        horizon = demand[WARMUP_S:]
        starts = np.arange(WARMUP_S, self.seconds, update)

        t0 = time.perf_counter()
        point, allocation = predict(demand, starts, window, update, quantile, self.trend_damping)
        compute_seconds = time.perf_counter() - t0

        per_second_point = np.repeat(point, update)[: len(horizon)]
        per_second_alloc = np.repeat(allocation, update)[: len(horizon)]
        per_second_alloc = np.maximum(per_second_alloc, 0.0)

        abs_error = float(np.sum(np.abs(horizon - per_second_point) / horizon))
        over = np.maximum(per_second_alloc - horizon, 0.0).sum()
        under = np.maximum(horizon - per_second_alloc, 0.0).sum()
        # Every reallocation reprograms the rate limiter, which drops what it carries meanwhile.
        served_at_updates = np.minimum(horizon[::update], per_second_alloc[::update])
        dropped = self.reconfig_loss_ms / 1e3 * served_at_updates.sum()
        return PbaTotals(
            seconds=len(horizon),
            abs_error=abs_error,
            demand=float(horizon.sum()),
            allocated=float(per_second_alloc.sum()),
            unused=float(over),
            over_allocation=float(under),
            reconfiguration_dropped=float(dropped),
            predictions=len(starts),
            compute_seconds=compute_seconds,
        )


@dataclass(frozen=True)
class PbaTotals:
    """Sums over one planned trace (demand and allocations in Mbit: Mbit/s × 1 s); `metrics()` gives
    the workload's metrics.

    abs_error: Σ over seconds of |demand − point prediction| / demand; unused: Σ (allocated −
    demand)⁺; over_allocation: Σ (demand − allocated)⁺; reconfiguration_dropped: traffic dropped
    while the rate limiter is reprogrammed; predictions / compute_seconds: how many predictions were
    made and the time they took.
    """

    seconds: int
    abs_error: float
    demand: float
    allocated: float
    unused: float
    over_allocation: float
    reconfiguration_dropped: float
    predictions: int
    compute_seconds: float

    def metrics(self) -> dict[str, float]:
        mape = self.abs_error / self.seconds
        under = self.over_allocation + self.reconfiguration_dropped
        return {
            "accuracy": float(min(max(1.0 - mape, 0.0), 1.0)),
            "waste_pct": float(100.0 * self.unused / max(self.allocated, 1e-9)),
            "violation_pct": float(100.0 * under / self.demand),
            "prediction_latency_ms": float(self.compute_seconds * 1e3 / self.predictions),
        }


def predict(
    demand: np.ndarray, starts: np.ndarray, window: int, update: int, quantile: float, damping: float
) -> tuple[np.ndarray, np.ndarray]:
    """Point predictions and allocations made at `starts`, each from the `window` seconds before."""
    rows = sliding_window_view(demand, window)[starts - window]  # (predictions, window)
    x = np.arange(window, dtype=float) - (window - 1) / 2.0
    level = rows.mean(axis=1)
    slope = rows @ x / max(float(x @ x), 1e-12)
    residuals = rows - level[:, None] - slope[:, None] * x
    position = quantile * (window - 1)  # the empirical quantile, linear between order statistics
    lo = min(int(position), window - 1)
    hi = min(lo + 1, window - 1)
    ordered = np.partition(residuals, (lo, hi), axis=1)
    spread = ordered[:, lo] + (position - lo) * (ordered[:, hi] - ordered[:, lo])
    ahead = (window - 1) / 2.0 + (update + 1) / 2.0  # from the window's centre to the next interval's
    point = level + damping * slope * ahead
    return point, point + spread


@functools.lru_cache(maxsize=8)
def trace(seed: int, seconds: int) -> np.ndarray:
    """Bandwidth demand (Mbit/s) for each second; deterministic for the seed (read-only array)."""
    rng = np.random.default_rng([0xB4, seed])
    t = np.arange(seconds, dtype=float)
    mean = MEAN_DEMAND
    demand = mean * (1.0 + 0.35 * np.sin(2 * math.pi * (t + rng.uniform(0, 86400)) / 86400.0))
    # Hourly batch job: a 10-minute plateau at a random minute of each hour, with soft edges.
    minute = rng.integers(0, 50)
    in_hour = (t % 3600) - minute * 60
    demand += 0.25 * mean * np.clip(np.minimum(in_hour, 600 - in_hour) / 30.0, 0.0, 1.0)
    # Bursts.
    for _ in range(int(rng.poisson(seconds / 600.0))):
        start = rng.uniform(0, seconds)
        duration = rng.lognormal(math.log(60.0), 0.7)
        height = rng.lognormal(math.log(0.4 * mean), 0.5)
        rel = t - start
        rise = np.clip(rel / 5.0, 0.0, 1.0)
        decay = np.where(rel > duration, np.exp(-(rel - duration) / 20.0), 1.0)
        demand += np.where(rel >= 0, height * rise * decay, 0.0)
    # AR(1) noise, φ = 0.9, stationary standard deviation 5 % of the mean.
    phi = 0.9
    shocks = rng.normal(0.0, 0.05 * mean * math.sqrt(1 - phi * phi), seconds)
    ar = np.empty(seconds)
    acc = 0.0
    for i, e in enumerate(shocks.tolist()):
        acc = phi * acc + e
        ar[i] = acc
    demand = np.maximum(demand + ar, 0.05 * mean) * rng.lognormal(0.0, 0.12, seconds)
    demand.setflags(write=False)
    return demand
