"""PBA as a service: plans the bandwidth of a stream of WAN links, one link's demand trace per unit.

A unit of work (key `link-<n>`) is one link: its demand trace (the PBA workload's `trace`, from a pool
of `pool` seeds so the traces are generated once) is planned with the variant's configuration — every
`update_frequency` seconds a prediction from the last `prediction_window` seconds, allocated at the
`confidence_threshold` quantile (`PbaWorkload.evaluate`, the workload's own computation) — and the
outcome is added to the variant's counters.

Series (all `variant`-labelled; see examples/pba-profile.yaml):
  dwcp_pba_abs_error_ratio_total                 Σ over evaluated seconds of |demand − prediction| / demand
  dwcp_pba_evaluated_seconds_total               seconds of demand evaluated
  dwcp_pba_demand_bytes_total                    demand
  dwcp_pba_allocated_bytes_total                 bandwidth allocated
  dwcp_pba_allocated_unused_bytes_total          allocated but not used
  dwcp_pba_demand_over_allocation_bytes_total    demand above the allocation
  dwcp_pba_reconfiguration_dropped_bytes_total   traffic dropped while the rate limiter was reprogrammed
  dwcp_pba_prediction_seconds_total              compute time of the predictions
  dwcp_pba_predictions_total                     predictions made
So accuracy = 1 − abs_error / evaluated_seconds, waste_pct = 100 × unused / allocated, violation_pct =
100 × (over_allocation + dropped) / demand and prediction_latency_ms = 1000 × prediction_seconds /
predictions: the workload's definitions, pooled over the links planned in the window.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from ..sdk import VariantCounters, VariantState
from ..workloads.pba import PbaWorkload
from .service import Unit

MBIT = 125_000.0  # bytes in a megabit: the traces are in Mbit/s, one value per second


class PbaComponent:
    name = "pba"

    def __init__(self, registry: CollectorRegistry, *, quick: bool = False, seed: int = 0, pool: int = 8) -> None:
        self.workload = PbaWorkload(quick=quick)
        self.seed = int(seed)
        self.pool = max(1, min(int(pool), 8))  # trace() caches 8 traces
        self.counters = VariantCounters(
            [
                ("dwcp_pba_abs_error_ratio", "Sum over evaluated seconds of |demand - prediction| / demand"),
                ("dwcp_pba_evaluated_seconds", "Seconds of demand evaluated"),
                ("dwcp_pba_demand_bytes", "Bandwidth demand"),
                ("dwcp_pba_allocated_bytes", "Bandwidth allocated"),
                ("dwcp_pba_allocated_unused_bytes", "Bandwidth allocated but not used"),
                ("dwcp_pba_demand_over_allocation_bytes", "Demand above the allocation"),
                ("dwcp_pba_reconfiguration_dropped_bytes", "Traffic dropped while the rate limiter was reprogrammed"),
                ("dwcp_pba_prediction_seconds", "Compute time of the predictions"),
                ("dwcp_pba_predictions", "Predictions made"),
            ],
            registry,
        )

    def units(self) -> Iterator[Unit]:
        for n in itertools.count():
            yield Unit(f"link-{n}", self.seed + n % self.pool)

    def process(self, unit: Unit, variant: str, config: Mapping[str, Any]) -> None:
        t = self.workload.evaluate(config, unit.payload)
        self.counters.add(
            variant,
            t.abs_error,
            t.seconds,
            t.demand * MBIT,
            t.allocated * MBIT,
            t.unused * MBIT,
            t.over_allocation * MBIT,
            t.reconfiguration_dropped * MBIT,
            t.compute_seconds,
            t.predictions,
        )

    def on_change(self, old: VariantState, new: VariantState) -> None:
        pass
