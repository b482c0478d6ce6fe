"""The interface every reference workload implements, and small helpers they share.

A workload runs one configuration of a DWCP v3 component on synthetic but realistic input and
returns its metrics. Everything that is not a timing (ratios, byte counts, accuracies, simulated
times) is a pure function of (options, config, seed); timings (throughput, CPU seconds per GB,
prediction latency) are real measurements on this machine and therefore carry noise.

This package imports nothing else of `dwcp_autotuner`: it only needs the standard library, numpy
and zstandard, so the twin, the benchmarks and the tests can use it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

ConfigValue = int | float | str


@runtime_checkable
class Workload(Protocol):
    """One component's reference implementation, run on a configuration."""

    #: "hde" | "pba" | "acp": the built-in tuning space this workload measures.
    name: str
    #: Exactly the metric names of the matching built-in space, in the same order.
    metric_names: tuple[str, ...]
    #: The parameters a configuration must set (those of the matching built-in space).
    parameter_names: tuple[str, ...]
    #: The metrics that are timings on this machine's clocks (the rest are pure functions of config and seed):
    #: a twin whose space reads one is measured one run at a time (`env.twin.twin_processes`).
    timed_metrics: tuple[str, ...]

    def options(self) -> dict:
        """JSON-able settings that change the results (sizes, link bandwidth …); a cache key."""
        ...

    def run(self, config: Mapping[str, ConfigValue], seed: int) -> dict[str, float]:
        """Run one configuration and return one float per name in `metric_names`."""
        ...


def require(config: Mapping[str, ConfigValue], names: tuple[str, ...], workload: str) -> None:
    """Fail clearly when a configuration misses a parameter the workload needs."""
    missing = [n for n in names if n not in config]
    if missing:
        raise KeyError(f"{workload}: configuration lacks parameter(s) {', '.join(missing)} (needs {', '.join(names)})")


def as_int(config: Mapping[str, ConfigValue], name: str, lo: int) -> int:
    value = float(config[name])
    if value != int(value) or value < lo:
        raise ValueError(f"{name} must be a whole number ≥ {lo}, got {config[name]!r}")
    return int(value)


def as_float(config: Mapping[str, ConfigValue], name: str, lo: float, hi: float) -> float:
    value = float(config[name])
    if not lo <= value <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {config[name]!r}")
    return value
