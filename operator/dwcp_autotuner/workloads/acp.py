"""ACP reference workload: a discrete-event simulation of PBFT-style consensus over a WAN.

The environment (fixed; random draws deterministic for a seed)
--------------------------------------------------------------
`quorum_size` = n replicas spread round-robin over five regions (us-east, us-west, eu-west,
ap-northeast, sa-east) with real-world inter-region round-trip times (65–260 ms). Every message
takes the one-way base latency of its link × a lognormal factor (σ 0.3), plus 1 ms processing,
plus now and then (1 %) a WAN tail spike (exponential, mean 150 ms); 1 % of messages are lost.
Two replicas (ids 1 and 2, whenever n includes them) are faulty: in each round each of them is
down (silent: crashed, partitioned or withholding votes) with probability `fault_down` (0.5) and
behaves otherwise. Clients send `arrival_rps` (100) requests per second, Poisson, of
`request_bytes` (1 KiB); replicas have `uplink_mbps` (100 Mbit/s) of WAN uplink.

The protocol
------------
f = ⌊(n−1)/3⌋ and the quorum is q = ⌈(n+f+1)/2⌉ (= 2f+1 when n = 3f+1; larger groups need
more than 2f+1 for quorums to intersect in a correct replica). Fewer than q live replicas cannot
commit, so with both faulty replicas down a group of n ≤ 5 stalls — f must cover the faults.
Each batch is one consensus instance; attempt k is led by replica k mod n (a rotating leader,
as in HotStuff/Tendermint-style PBFT variants), and up to `pipeline` (4) instances run at once
(PBFT's watermark window); batches are executed in order. A leader waits until `batch_size`
requests are pending, then sends PRE-PREPARE with the batch (its uplink serialises the n−1
copies); replicas exchange PREPARE and COMMIT all-to-all, each waiting for q votes; a batch
commits when f+1 replicas have committed it (what a client waits for). A view-change timer of
`timeout_ms` starts with each attempt; if the batch has not committed when it fires — a silent
leader, a quorum of live replicas missing, WAN tail latency or lost messages — replicas exchange
VIEW-CHANGE messages and the next leader takes over once it has q of them, retrying the same
batch; the timeout doubles after each view change without progress (PBFT's liveness rule,
capped at ×4 as implementations do). Too short a
timeout causes spurious view changes; too long a one makes every silent leader cost a full
timeout, and a stalled instance holds back every later one.

Metrics (all simulated, deterministic for a seed; `sim_seconds` 240, quick 100):
consensus_p50_ms / p95_ms = time from a request's arrival to its execution, over the requests
that arrive in the first 80 % of the simulated time (a request still pending at the end counts
with its wait so far; a client gives up after `client_timeout_s`, 10 s, which caps both);
success_rate = committed attempts / attempts (view changes count as failed attempts);
throughput_rps = executed requests per simulated second; messages_per_request and
network_kb_per_request = all protocol messages sent (lost ones included) and their bytes (MAC
authenticators growing with n) per executed request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .base import ConfigValue, as_int, require

PARAMS = ("timeout_ms", "batch_size", "quorum_size")
METRICS = (
    "consensus_p50_ms",
    "consensus_p95_ms",
    "success_rate",
    "throughput_rps",
    "messages_per_request",
    "network_kb_per_request",
)
#: The live conditions this workload's options stand for, with their valid range (see `twin_conditions`).
CONDITIONS = {
    "arrival_rps": (0.0, None),
    "fault_down": (0.0, 1.0),
    "loss": (0.0, 1.0),
    "jitter_sigma": (0.0, None),
    "spike_prob": (0.0, 1.0),
    "spike_ms": (0.0, None),
    "request_bytes": (1.0, None),
    "uplink_mbps": (0.0, None),
}

REGIONS = ("us-east", "us-west", "eu-west", "ap-northeast", "sa-east")
#: Round-trip times between the regions, ms (intra-region 1 ms).
RTT_MS = np.array(
    [
        [1.0, 65.0, 75.0, 160.0, 120.0],
        [65.0, 1.0, 140.0, 105.0, 180.0],
        [75.0, 140.0, 1.0, 220.0, 190.0],
        [160.0, 105.0, 220.0, 1.0, 260.0],
        [120.0, 180.0, 190.0, 260.0, 1.0],
    ]
)
FAULTY = (1, 2)
HEADER_BYTES = 64
MAC_BYTES = 16  # one MAC per receiver in a PBFT authenticator
BLOCK = 64  # rounds drawn at a time
#: The view-change timeout doubles after each view change without progress, at most this often
#: (implementations cap PBFT's unbounded backoff so that one bad streak cannot stall for minutes).
MAX_DOUBLINGS = 2


class AcpWorkload:
    """PBFT-style consensus rounds over WAN latencies, with faulty replicas; simulated."""

    name = "acp"
    metric_names = METRICS
    parameter_names = PARAMS
    #: Simulated times only: a run is a pure function of (config, seed), measured on any number of cores.
    timed_metrics: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        quick: bool = False,
        sim_seconds: float | None = None,
        arrival_rps: float = 100.0,
        fault_down: float = 0.5,
        loss: float = 0.01,
        jitter_sigma: float = 0.3,
        spike_prob: float = 0.01,
        spike_ms: float = 150.0,
        client_timeout_s: float = 10.0,
        pipeline: int = 4,
        request_bytes: int = 1024,
        uplink_mbps: float = 100.0,
    ) -> None:
        self.quick = bool(quick)
        self.sim_seconds = float(sim_seconds if sim_seconds is not None else (100.0 if quick else 240.0))
        if self.sim_seconds <= 0 or arrival_rps <= 0:
            raise ValueError("sim_seconds and arrival_rps must be positive")
        for label, value in (("fault_down", fault_down), ("loss", loss), ("spike_prob", spike_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{label} must lie in [0, 1]")
        self.arrival_rps = float(arrival_rps)
        self.fault_down = float(fault_down)
        self.loss = float(loss)
        self.jitter_sigma = float(jitter_sigma)
        self.spike_prob = float(spike_prob)
        self.spike_ms = float(spike_ms)
        if client_timeout_s <= 0:
            raise ValueError("client_timeout_s must be positive")
        self.client_timeout_s = float(client_timeout_s)
        if pipeline < 1:
            raise ValueError("pipeline must be at least 1")
        self.pipeline = int(pipeline)
        if request_bytes < 1 or uplink_mbps <= 0:
            raise ValueError("request_bytes and uplink_mbps must be positive")
        self.request_bytes = int(request_bytes)
        self.uplink_mbps = float(uplink_mbps)

    def options(self) -> dict:
        return {
            "quick": self.quick,
            "sim_seconds": self.sim_seconds,
            "arrival_rps": self.arrival_rps,
            "fault_down": self.fault_down,
            "loss": self.loss,
            "jitter_sigma": self.jitter_sigma,
            "spike_prob": self.spike_prob,
            "spike_ms": self.spike_ms,
            "client_timeout_s": self.client_timeout_s,
            "pipeline": self.pipeline,
            "request_bytes": self.request_bytes,
            "uplink_mbps": self.uplink_mbps,
        }

    def run(self, config: Mapping[str, ConfigValue], seed: int) -> dict[str, float]:
        return self.simulate(config, seed).metrics()

    def simulate(self, config: Mapping[str, ConfigValue], seed: int) -> AcpTotals:
        """One simulated period: the per-request latencies and the counts behind `run()`'s metrics
        (a live component exports these as counters and a histogram; see `AcpTotals`)."""
        require(config, PARAMS, self.name)
        timeout = float(as_int(config, "timeout_ms", 1))
        batch = as_int(config, "batch_size", 1)
        n = as_int(config, "quorum_size", 1)
        f = (n - 1) // 3
        q = math.ceil((n + f + 1) / 2)
        horizon = self.sim_seconds * 1e3

        seeds = np.random.SeedSequence([0xAC9, int(seed)]).spawn(2)
        arrivals = _arrivals(np.random.default_rng(seeds[0]), self.arrival_rps, horizon)
        rounds = _Rounds(self, np.random.default_rng(seeds[1]), n, f, q, batch)

        deliver = np.full(len(arrivals), np.nan)
        window = self.pipeline
        delivered: list[float] = []  # delivery time of each batch, in order
        k = 0  # consensus attempts so far; attempt k is led by replica k mod n
        started = committed_rounds = 0
        messages = 0.0
        wire_bytes = 0.0
        for first in range(0, len(arrivals) - batch + 1, batch):
            slot = len(delivered)
            filled = arrivals[first + batch - 1]
            # The leader proposes once the batch is full and the watermark window has room.
            t = max(filled, delivered[slot - window]) if slot >= window else filled
            if t >= horizon:
                break
            backoff = 0  # the timeout doubles after each view change without progress (at most ×4)
            done = math.inf
            while t < horizon:
                r = rounds.get(k)
                k += 1
                started += 1
                deadline = t + timeout * (1 << min(backoff, MAX_DOUBLINGS))  # the view's timer starts with it
                if r.proposes:
                    messages += r.messages
                    wire_bytes += r.bytes
                if r.proposes and t + r.duration <= deadline:  # duration is inf when it cannot commit
                    done = t + r.duration
                    committed_rounds += 1
                    break
                # View change: VIEW-CHANGE all-to-all; the next leader needs q of them.
                messages += r.vc_messages
                wire_bytes += r.vc_bytes
                t = deadline + r.vc_duration
                backoff += 1
            if done > horizon:
                break
            # Requests execute in order: a batch is delivered after every earlier one.
            at = max(done, delivered[-1]) if delivered else done
            delivered.append(at)
            deliver[first : first + batch] = at

        commit = deliver
        measured = arrivals < 0.8 * horizon
        latency = np.where(np.isnan(commit), horizon - arrivals, commit - arrivals)[measured]
        latency = np.minimum(latency, self.client_timeout_s * 1e3)  # the client gives up
        n_committed = int(np.count_nonzero(~np.isnan(commit)))
        return AcpTotals(
            latencies_ms=latency,
            horizon_ms=horizon,
            sim_seconds=self.sim_seconds,
            attempts=started,
            committed_rounds=committed_rounds,
            committed_requests=n_committed,
            messages=messages,
            wire_bytes=wire_bytes,
        )


@dataclass(frozen=True)
class AcpTotals:
    """What one simulated period produced; `metrics()` turns it into the workload's metrics.

    latencies_ms: arrival → execution of each request that arrived in the first 80 % of the period
    (capped at the client timeout; a request still pending at the end counts with its wait so far);
    attempts / committed_rounds: consensus attempts started / committed (view changes are failed
    attempts); committed_requests: requests executed; messages / wire_bytes: everything sent.
    """

    latencies_ms: np.ndarray
    horizon_ms: float
    sim_seconds: float
    attempts: int
    committed_rounds: int
    committed_requests: int
    messages: float
    wire_bytes: float

    def metrics(self) -> dict[str, float]:
        latency = self.latencies_ms
        per_request = max(self.committed_requests, 1)
        p50, p95 = np.percentile(latency, [50, 95]) if len(latency) else (self.horizon_ms, self.horizon_ms)
        return {
            "consensus_p50_ms": float(p50),
            "consensus_p95_ms": float(p95),
            "success_rate": float(self.committed_rounds / max(self.attempts, 1)),
            "throughput_rps": float(self.committed_requests / self.sim_seconds),
            "messages_per_request": float(self.messages / per_request),
            "network_kb_per_request": float(self.wire_bytes / 1e3 / per_request),
        }


def _arrivals(rng: np.random.Generator, rps: float, horizon_ms: float) -> np.ndarray:
    expected = rps * horizon_ms / 1e3
    gaps = rng.exponential(1e3 / rps, size=int(expected + 6 * math.sqrt(expected) + 16))
    times = np.cumsum(gaps)
    return times[times < horizon_ms]


class _Round:
    __slots__ = ("proposes", "duration", "messages", "bytes", "vc_messages", "vc_bytes", "vc_duration")

    def __init__(
        self,
        proposes: bool,
        duration: float,
        messages: float,
        nbytes: float,
        vc_messages: float,
        vc_bytes: float,
        vc_duration: float,
    ) -> None:
        self.proposes = proposes  # the leader is live and sends its PRE-PREPARE
        self.duration = duration
        self.messages = messages
        self.bytes = nbytes
        self.vc_messages = vc_messages
        self.vc_bytes = vc_bytes
        self.vc_duration = vc_duration


class _Rounds:
    """Per-round outcomes, drawn vectorised in blocks of rounds (round k is led by k mod n)."""

    def __init__(self, workload: AcpWorkload, rng: np.random.Generator, n: int, f: int, q: int, batch: int) -> None:
        self.w, self.rng, self.n, self.f, self.q, self.batch = workload, rng, n, f, q, batch
        region = np.arange(n) % len(REGIONS)
        self.base = RTT_MS[region[:, None], region[None, :]] / 2.0  # one-way, ms
        self.faulty = np.array([i for i in FAULTY if i < n], dtype=np.int64)
        self.control = HEADER_BYTES + MAC_BYTES * n
        self.preprepare = self.control + batch * workload.request_bytes
        self.uplink_bytes_per_ms = workload.uplink_mbps * 1e6 / 8 / 1e3
        self.rounds: list[_Round] = []

    def get(self, k: int) -> _Round:
        while k >= len(self.rounds):
            self._draw(len(self.rounds))
        return self.rounds[k]

    def _latency(self, base: np.ndarray) -> np.ndarray:
        w, rng = self.w, self.rng
        lat = base * rng.lognormal(0.0, w.jitter_sigma, size=base.shape) + 1.0
        spikes = rng.random(base.shape) < w.spike_prob
        lat[spikes] += rng.exponential(w.spike_ms, size=int(spikes.sum()))
        lat[rng.random(base.shape) < w.loss] = np.inf
        return lat

    def _draw(self, k0: int) -> None:
        n, q, f, rng = self.n, self.q, self.f, self.rng
        rows = np.arange(BLOCK)
        leader = (k0 + rows) % n
        up = np.ones((BLOCK, n), dtype=bool)
        if len(self.faulty):
            up[:, self.faulty] = rng.random((BLOCK, len(self.faulty))) >= self.w.fault_down
        leader_up = up[rows, leader]

        # PRE-PREPARE: the leader's uplink sends the copies one after another.
        order = (np.arange(n)[None, :] - leader[:, None]) % n  # 0 for the leader itself
        pre = order * (self.preprepare / self.uplink_bytes_per_ms) + self._latency(self.base[leader])
        pre[rows, leader] = 0.0
        pre[~up] = np.inf
        pre[~leader_up] = np.inf

        # PREPARE: every replica holding the pre-prepare sends to all; the leader's vote is the
        # pre-prepare itself. Prepared once q votes (own included) have arrived.
        votes = pre[:, :, None] + self._latency(np.broadcast_to(self.base, (BLOCK, n, n)))
        votes[rows, leader, :] = pre
        diag = np.arange(n)
        votes[:, diag, diag] = pre
        prepared = np.maximum(pre, np.partition(votes, q - 1, axis=1)[:, q - 1, :])

        # COMMIT: all-to-all again; committed once q commits (own included) have arrived.
        commits = prepared[:, :, None] + self._latency(np.broadcast_to(self.base, (BLOCK, n, n)))
        commits[:, diag, diag] = prepared
        committed = np.maximum(prepared, np.partition(commits, q - 1, axis=1)[:, q - 1, :])
        duration = np.partition(committed, f, axis=1)[:, f]  # f+1 replicas have committed

        # Messages actually sent (lost ones included): pre-prepare copies, prepares and commits
        # from the replicas that got that far, and one reply per committed replica.
        got_pre = np.isfinite(pre).sum(axis=1) - 1  # backups holding the pre-prepare
        n_prepared = np.isfinite(prepared).sum(axis=1)
        n_committed = np.isfinite(committed).sum(axis=1)
        messages = (n - 1) + got_pre * (n - 1) + n_prepared * (n - 1) + n_committed
        nbytes = (
            (n - 1) * self.preprepare
            + (got_pre + n_prepared) * (n - 1) * self.control
            + n_committed * (HEADER_BYTES + 32 * self.batch)
        )
        live = up.sum(axis=1)
        vc_messages = live * (n - 1) + (n - 1)  # VIEW-CHANGE all-to-all, then NEW-VIEW
        vc_bytes = vc_messages * (self.control + 128)
        next_leader = (leader + 1) % n
        vc_lat = self._latency(self.base[next_leader]) + 0.0
        vc_lat[~up] = np.inf
        vc_lat[rows, next_leader] = 0.0
        vc_duration = np.partition(vc_lat, q - 1, axis=1)[:, q - 1]
        # A view change that cannot gather q messages is retried a timeout later; model its
        # delay as the slowest live replica's message (the protocol keeps resending).
        stuck = ~np.isfinite(vc_duration)
        if stuck.any():
            finite = np.where(np.isfinite(vc_lat), vc_lat, 0.0).max(axis=1)
            vc_duration = np.where(stuck, finite, vc_duration)
        for i in range(BLOCK):
            self.rounds.append(
                _Round(
                    bool(leader_up[i]),
                    float(duration[i]),
                    float(messages[i]) if leader_up[i] else 0.0,
                    float(nbytes[i]) if leader_up[i] else 0.0,
                    float(vc_messages[i]),
                    float(vc_bytes[i]),
                    float(vc_duration[i]),
                )
            )
