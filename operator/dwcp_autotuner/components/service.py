"""The loop every reference component runs: take the next unit of work, route it, do it, export it.

A component yields `Unit`s (a key plus whatever the unit needs); for each, the follower decides the
variant from the key and the current canary weight, the component does the unit with that variant's
configuration and adds the result to its `variant`-labelled series. A failing unit is logged and
counted (`dwcp_component_unit_errors_total{variant}`), never fatal. `rate` caps the units per second
(0: as fast as the CPU allows); the time a unit takes is what the component measures, so pacing does
not change its metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from ..sdk import ConfigFollower, VariantCounter, VariantState

log = logging.getLogger("dwcp_autotuner.components")


@dataclass(frozen=True)
class Unit:
    key: str
    payload: Any = None


class Component(Protocol):
    name: str

    def units(self) -> Iterator[Unit]:
        """An endless stream of units of work."""

    def process(self, unit: Unit, variant: str, config: Mapping[str, Any]) -> None:
        """Do one unit with `config` and add its measurements to the `variant` series."""

    def on_change(self, old: VariantState, new: VariantState) -> None:
        """The follower switched configuration (e.g. reset a per-configuration peak)."""


class ServiceLoop:
    """Runs a component under a follower until `stop` is set (or `duration` seconds have passed)."""

    def __init__(
        self, component: Component, follower: ConfigFollower, registry: CollectorRegistry, *, rate: float = 0.0
    ) -> None:
        self.component = component
        self.follower = follower
        self.rate = rate
        self.errors = VariantCounter("dwcp_component_unit_errors", "Units of work that failed", registry)
        self.done = dict.fromkeys(("stable", "canary"), 0)
        follower.on_change(component.on_change)

    def run(self, stop: threading.Event, *, duration: float | None = None, report_seconds: float = 30.0) -> None:
        units = self.component.units()
        started = time.monotonic()
        next_at = started
        next_report = started + report_seconds
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        while not stop.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            unit = next(units)
            variant, config = self.follower.assign(unit.key)
            try:
                self.component.process(unit, variant, config)
                self.done[variant] += 1
            except Exception:
                self.errors[variant].inc()
                log.exception("%s: unit %s (%s) failed", self.component.name, unit.key, variant)
            if now >= next_report:
                state = self.follower.snapshot()
                log.info(
                    "%s: %d stable / %d canary units so far; canary weight %d %%",
                    self.component.name,
                    self.done["stable"],
                    self.done["canary"],
                    state.weight,
                )
                next_report = now + report_seconds
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -1.0:  # fell behind (a slow configuration): do not burst to catch up
                    next_at = time.monotonic()
