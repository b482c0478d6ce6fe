"""Per-variant metrics for components: plain prometheus-client series with a `variant` label.

`VariantCounter` / `VariantGauge` wrap a prometheus-client Counter / Gauge whose only label is
`variant`, with both children created up front (a counter exists at 0 before its first unit, so
`rate()` has a start point) and looked up once (`counter["canary"].inc(n)` costs a dict lookup and a
lock). `VariantCounters` is several such counters updated by one call under one lock — what a
component that adds half a dozen totals per unit of work wants (each separate `inc` costs a few
microseconds once the unit's own work has evicted the interpreter's data from the CPU caches).
`VariantHistogram` takes many observations at once (`observe_many(variant, values)`, numpy, one lock
per call): a simulated epoch may produce thousands of latencies, and a Python loop of `Histogram.observe`
would cost more than the unit of work.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

VARIANTS = ("stable", "canary")


class VariantCounter:
    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.metric = Counter(name, documentation, ["variant"], registry=registry)
        self._children = {v: self.metric.labels(v) for v in VARIANTS}

    def __getitem__(self, variant: str) -> Counter:
        return self._children[variant]


class VariantCounters(Collector):
    """Counters labelled `variant` (`<name>_total`), all updated by one `add(variant, *amounts)` call."""

    def __init__(self, specs: Sequence[tuple[str, str]], registry: CollectorRegistry) -> None:
        self.specs = [(name.removesuffix("_total"), documentation) for name, documentation in specs]
        self._lock = threading.Lock()
        self._totals = {v: [0.0] * len(self.specs) for v in VARIANTS}
        registry.register(self)

    def add(self, variant: str, *amounts: float) -> None:
        """Add `amounts` (in the order of `specs`; each >= 0) to the variant's counters."""
        totals = self._totals[variant]
        with self._lock:
            for i, amount in enumerate(amounts):
                totals[i] += amount

    def value(self, variant: str, name: str) -> float:
        index = [n for n, _ in self.specs].index(name.removesuffix("_total"))
        return self._totals[variant][index]

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(name, documentation, labels=["variant"]) for name, documentation in self.specs]

    def collect(self) -> Iterator[CounterMetricFamily]:
        with self._lock:
            snapshot = {v: list(t) for v, t in self._totals.items()}
        for i, (name, documentation) in enumerate(self.specs):
            family = CounterMetricFamily(name, documentation, labels=["variant"])
            for variant in VARIANTS:
                family.add_metric([variant], snapshot[variant][i])
            yield family


class VariantGauge:
    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.metric = Gauge(name, documentation, ["variant"], registry=registry)

    def set(self, variant: str, value: float) -> None:
        self.metric.labels(variant).set(value)

    def remove(self, variant: str) -> None:
        """Stop exposing the variant's series (Prometheus marks it stale)."""
        try:
            self.metric.remove(variant)
        except KeyError:
            pass


class VariantHistogram(Collector):
    """A histogram labelled `variant` that accepts arrays of observations."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        bounds = sorted(float(b) for b in buckets if np.isfinite(b))
        if not bounds:
            raise ValueError("a histogram needs at least one finite bucket")
        self.name = name
        self.documentation = documentation
        self.bounds = np.array(bounds)
        self._lock = threading.Lock()
        self._counts = {v: np.zeros(len(bounds) + 1, dtype=np.int64) for v in VARIANTS}
        self._sums = dict.fromkeys(VARIANTS, 0.0)
        registry.register(self)

    def observe_many(self, variant: str, values: Iterable[float] | np.ndarray) -> None:
        array = np.asarray(values, dtype=float).ravel()
        if array.size == 0:
            return
        # Bucket i holds values v with bounds[i-1] < v <= bounds[i] (Prometheus' `le`); the last one +Inf.
        counts = np.bincount(np.searchsorted(self.bounds, array, side="left"), minlength=len(self.bounds) + 1)
        total = float(array.sum())
        with self._lock:
            self._counts[variant] += counts
            self._sums[variant] += total

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=["variant"])]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["variant"])
        with self._lock:
            snapshot = {v: (self._counts[v].copy(), self._sums[v]) for v in VARIANTS}
        for variant, (counts, total) in snapshot.items():
            cumulative = np.cumsum(counts)
            buckets = [(floatToGoString(b), float(c)) for b, c in zip(self.bounds, cumulative[:-1])]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric([variant], buckets, total)
        yield family


def geometric_buckets(low: float, high: float, factor: float) -> list[float]:
    """low, low·factor, … up to and including `high`."""
    out = []
    value = low
    while value < high * (1 - 1e-9):
        out.append(round(value, 6))
        value *= factor
    out.append(high)
    return out
