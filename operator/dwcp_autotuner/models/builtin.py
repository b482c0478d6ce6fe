"""Built-in tuning spaces for the three DWCP v3 components, with the original system's hard bounds.

The metric names are the ones the reference workloads (`dwcp_autotuner.workloads`) measure.
The objectives and constraints were calibrated on the full grids measured with those workloads
(`bench/workload_surface.py`) so that the score stays positive over the whole grid (so "fraction of
the optimum" is a plain ratio), the default scores clearly below the optimum, and the optimum
lies inside the bounds of most parameters:

* HDE — effective transfer rate first, the compression ratio (WAN bytes) second, a memory budget.
  CPU s/GB is measured but not scored: for a single-threaded compressor it is ~1000 / throughput,
  already counted, and it grows without bound at the slowest configurations (a negative score).
  Optimum (default link 100 Mbit/s): level 1–2, 64 KiB chunks, a 128 KiB window — the best ratio
  that still fills the link, on a ridge of near-ties (within 2–5 %) among which timing noise picks;
  the default (the original system's: level 5, 16 KiB chunks, a 512 KiB window) is compression-bound at
  a tenth to a seventh of that rate.
* PBA — accuracy, with violations priced four times waste, a budget for reserved-but-idle
  bandwidth (12 %) and an SLA on violations (3 %). Optimum: a 20 s window, the 0.8–0.85 quantile,
  updates every 5 s (more often, reconfiguration losses; less often, stale allocations). The default (the
  original system's: a 30 s window, the 0.85 quantile, updates every 10 s) is within 1 % of it.
* ACP — throughput and round success first; p95 latency is priced at 0.02 per second only, since
  the capped 10 s of a stalled configuration must not push the score below zero (the same holds
  for the per-request network cost, which grows as O(n²)/batch, hence a loose constraint).
  The default (the original system's: 2000 ms, batches of 25, 7 replicas) scores a little over half the
  optimum. Optimum: timeout 500 ms, batches of 25–50, and the largest group (14–15): with two faulty
  replicas a larger group dilutes silent leaders and adds quorum slack, and its network cost
  cannot be priced strongly enough to win against that without breaking positivity.

The defaults are the original system's "before" configuration; the `tune` report sets its published
figures beside what these workloads measure at the same settings.

`tests/test_workloads.py` checks that a tuned configuration clearly beats the default and that
the score stays positive at the corners of the grids.
"""

from __future__ import annotations

from .space import MetricSpec, ObjectiveTerm, Parameter, SoftConstraint, TuningSpace

HDE = TuningSpace(
    parameters=[
        Parameter(
            name="compression_level",
            type="int",
            min=1,
            max=9,
            default=5,
            step=1,
            description="zstd level (zstd itself goes to 22; a profile may widen the bound).",
        ),
        Parameter(
            name="chunk_size",
            type="int",
            min=1024,
            max=65536,
            default=16384,
            scale="log2",
            unit="bytes",
            description="Bytes compressed per call; each chunk is compressed against its own region of the previous snapshot.",
        ),
        Parameter(
            name="window_size",
            type="int",
            min=32768,
            max=1048576,
            default=524288,
            scale="log2",
            unit="bytes",
            description="Bytes of the previous snapshot used as the raw-content dictionary of a chunk.",
        ),
    ],
    metrics=[
        MetricSpec(
            name="compression_ratio",
            description="Snapshot bytes / bytes sent (frames, lengths and the changed-chunk bitmap).",
        ),
        MetricSpec(
            name="throughput_mbps",
            unit="MB/s",
            description="Snapshot megabytes encoded per second of wall time, dictionary setup included.",
        ),
        MetricSpec(name="cpu_seconds_per_gb", unit="s/GB", description="CPU seconds spent per gigabyte of snapshot."),
        MetricSpec(
            name="peak_memory_mb",
            unit="MB",
            description="Peak compressor memory: zstd context, dictionary and buffers.",
        ),
        MetricSpec(
            name="effective_throughput_mbps",
            unit="MB/s",
            description="Transfer rate over the link: min(compression speed, link bandwidth × ratio).",
        ),
    ],
    objective=[
        ObjectiveTerm(metric="effective_throughput_mbps", goal="maximize", weight=1.0, scale=10.0),
        ObjectiveTerm(metric="compression_ratio", goal="maximize", weight=0.5, scale=10.0),
    ],
    constraints=[
        SoftConstraint(metric="peak_memory_mb", max=8.0, penalty=0.2),
    ],
)

PBA = TuningSpace(
    parameters=[
        Parameter(
            name="prediction_window",
            type="int",
            min=10,
            max=300,
            default=30,
            step=20,
            unit="s",
            description="Seconds of history the predictor looks back over.",
        ),
        Parameter(
            name="confidence_threshold",
            type="float",
            min=0.5,
            max=0.99,
            default=0.85,
            step=0.05,
            description="Quantile of the predicted demand that is allocated.",
        ),
        Parameter(
            name="update_frequency",
            type="int",
            min=1,
            max=60,
            default=10,
            scale="log2",
            unit="s",
            description="Seconds between re-predictions.",
        ),
    ],
    metrics=[
        MetricSpec(
            name="accuracy", description="1 − mean absolute percentage error of the point prediction (per second)."
        ),
        MetricSpec(name="waste_pct", unit="%", description="Allocated but unused bandwidth, % of allocation."),
        MetricSpec(
            name="violation_pct",
            unit="%",
            description="Demand above the allocation or dropped while reallocating (SLA violation), % of demand.",
        ),
        MetricSpec(name="prediction_latency_ms", unit="ms", description="Compute time per prediction."),
    ],
    objective=[
        ObjectiveTerm(metric="accuracy", goal="maximize", weight=1.0, scale=1.0),
        ObjectiveTerm(metric="waste_pct", goal="minimize", weight=0.25, scale=100.0),
        ObjectiveTerm(metric="violation_pct", goal="minimize", weight=1.0, scale=100.0),
    ],
    constraints=[
        SoftConstraint(metric="waste_pct", max=12.0, penalty=0.3),
        SoftConstraint(metric="violation_pct", max=3.0, penalty=0.05),
        SoftConstraint(metric="prediction_latency_ms", max=1.0, penalty=0.5),
    ],
)

ACP = TuningSpace(
    parameters=[
        Parameter(
            name="timeout_ms",
            type="int",
            min=100,
            max=5000,
            default=2000,
            scale="log2",
            unit="ms",
            description="View-change timeout of a consensus round.",
        ),
        Parameter(
            name="batch_size",
            type="int",
            min=1,
            max=100,
            default=25,
            scale="log2",
            description="Requests committed per consensus round.",
        ),
        Parameter(
            name="quorum_size",
            type="int",
            min=3,
            max=15,
            default=7,
            step=1,
            description="Replicas taking part; tolerates f = ⌊(n−1)/3⌋ Byzantine faults.",
        ),
    ],
    metrics=[
        MetricSpec(
            name="consensus_p50_ms",
            unit="ms",
            description="Median time from request to commit (capped at the client's 10 s timeout).",
        ),
        MetricSpec(
            name="consensus_p95_ms",
            unit="ms",
            description="95th percentile time from request to commit (capped at the client's 10 s timeout).",
        ),
        MetricSpec(name="success_rate", description="Fraction of consensus rounds (views) that commit."),
        MetricSpec(name="throughput_rps", unit="req/s", description="Committed requests per second of simulated time."),
        MetricSpec(name="messages_per_request", description="Protocol messages per committed request."),
        MetricSpec(name="network_kb_per_request", unit="KB", description="Bytes on the wire per committed request."),
    ],
    objective=[
        ObjectiveTerm(metric="throughput_rps", goal="maximize", weight=1.0, scale=100.0),
        ObjectiveTerm(metric="consensus_p95_ms", goal="minimize", weight=0.2, scale=10000.0),
        ObjectiveTerm(metric="success_rate", goal="maximize", weight=1.0, scale=1.0),
    ],
    constraints=[
        SoftConstraint(metric="network_kb_per_request", max=50.0, penalty=0.01),
    ],
)

BUILTIN_SPACES: dict[str, TuningSpace] = {"hde": HDE, "pba": PBA, "acp": ACP}
