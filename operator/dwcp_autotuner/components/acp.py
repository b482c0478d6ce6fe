"""ACP as a service: runs consensus epochs of the simulated BFT group, one epoch per unit of work.

A unit of work (key `epoch-<n>`) is one epoch: `sim_seconds` (100 with --quick, else 240) of the ACP
workload's discrete-event simulation (`AcpWorkload.simulate`: PBFT-style rounds over WAN latencies
with two faulty replicas, Poisson client requests) with the variant's timeout, batch size and group
size, on a fresh seed. Its requests and rounds are added to the variant's series.

Series (all `variant`-labelled; see examples/acp-profile.yaml):
  dwcp_acp_consensus_seconds        histogram of request → execution time (requests arriving in the
                                    first 80 % of an epoch, capped at the client's 10 s timeout)
  dwcp_acp_rounds_total             consensus attempts started (view changes are failed attempts)
  dwcp_acp_rounds_committed_total   attempts that committed
  dwcp_acp_requests_committed_total requests executed
  dwcp_acp_simulated_seconds_total  simulated time
  dwcp_acp_messages_total           protocol messages sent (lost ones included)
  dwcp_acp_network_bytes_total      bytes of those messages
So p50/p95 = histogram_quantile over the buckets, success_rate = committed / rounds, throughput_rps =
requests_committed / simulated_seconds, messages_per_request and network_kb_per_request per executed
request: the workload's definitions, pooled over the epochs in the window (the quantiles to within
the buckets' width, 10 %).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from ..sdk import VariantCounters, VariantHistogram, VariantState, geometric_buckets
from ..workloads.acp import AcpWorkload
from .service import Unit

#: 20 ms … 10 s (the client timeout, which caps every latency), 10 % apart.
LATENCY_BUCKETS = geometric_buckets(0.02, 10.0, 1.1)


class AcpComponent:
    name = "acp"

    def __init__(self, registry: CollectorRegistry, *, quick: bool = False, seed: int = 0) -> None:
        self.workload = AcpWorkload(quick=quick)
        self.seed = int(seed)
        self.latency = VariantHistogram(
            "dwcp_acp_consensus_seconds",
            "Time from a request's arrival to its execution (capped at the client timeout)",
            LATENCY_BUCKETS,
            registry,
        )
        self.counters = VariantCounters(
            [
                ("dwcp_acp_rounds", "Consensus attempts started"),
                ("dwcp_acp_rounds_committed", "Consensus attempts that committed"),
                ("dwcp_acp_requests_committed", "Requests executed"),
                ("dwcp_acp_simulated_seconds", "Simulated seconds of consensus"),
                ("dwcp_acp_messages", "Protocol messages sent"),
                ("dwcp_acp_network_bytes", "Bytes of protocol messages sent"),
            ],
            registry,
        )

    def units(self) -> Iterator[Unit]:
        for n in itertools.count():
            yield Unit(f"epoch-{n}", self.seed * 1_000_003 + n)

    def process(self, unit: Unit, variant: str, config: Mapping[str, Any]) -> None:
        totals = self.workload.simulate(config, unit.payload)
        self.latency.observe_many(variant, totals.latencies_ms / 1e3)
        self.counters.add(
            variant,
            totals.attempts,
            totals.committed_rounds,
            totals.committed_requests,
            totals.sim_seconds,
            totals.messages,
            totals.wire_bytes,
        )

    def on_change(self, old: VariantState, new: VariantState) -> None:
        pass
