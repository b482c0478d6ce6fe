#!/usr/bin/env python
"""What does the canary SDK cost a component? (A script, not a test.)

Two measurements, in the same run:

1. Throughput. The HDE service (`dwcp_autotuner.components.hde`: SDK routing per 64 KiB region,
   change detection, zstd with a raw-content dictionary per changed chunk, per-variant Prometheus
   counters) against zstandard called directly on the same data at the same level: the very chunks
   the service compresses, with the same dictionaries, precomputed, in a plain loop — no routing, no
   metrics, no change detection, no timing calls. The ratio service / direct is the share of
   zstd's throughput the service keeps (target: >= 0.9). The service routes with a canary at 50 %
   whose configuration equals the stable one, so both variants' series are really updated.
2. Routing. `ConfigFollower.route(key)` and `assign(key)` (route + the units counter) per call, in
   nanoseconds, against an empty loop over the same keys, and as a share of one unit of work.

Within a round the two sides alternate every few units (`--block`), so changes of the machine's load
hit both alike; the median of the per-round ratios is reported (the machine may be shared).

    python bench/component_overhead.py                 # default and tuned configuration, full-size data
    python bench/component_overhead.py --quick --rounds 3
    python bench/component_overhead.py --json out/component_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import zstandard
from prometheus_client import CollectorRegistry

from dwcp_autotuner.canary.protocol import CANARY_KEY, CANARY_REVISION_KEY, CANARY_WEIGHT_KEY
from dwcp_autotuner.cli.arguments import whole
from dwcp_autotuner.components.hde import REGION, HdeComponent
from dwcp_autotuner.components.service import Unit
from dwcp_autotuner.models.builtin import HDE
from dwcp_autotuner.sdk import ConfigFollower
from dwcp_autotuner.workloads.hde import _changed_words, _window_bounds, snapshots

CONFIGS = {
    "default": HDE.default_config(),
    "tuned": {"compression_level": 1, "chunk_size": 32768, "window_size": 131072},
}


def plan(component: HdeComponent, config: dict, units: list[Unit]) -> list[list[tuple[bytes, bytes, int]]]:
    """Per unit: (dictionary bytes, chunk bytes, level) of every chunk the service compresses for it."""
    level, chunk, window = config["compression_level"], config["chunk_size"], config["window_size"]
    jobs = []
    for unit in units:
        seed, region = unit.payload
        pair = snapshots(seed, component.pages, component.dirty_fraction)
        lo = region * REGION
        changed = _changed_words(pair.prev[lo : lo + REGION], pair.new[lo : lo + REGION], chunk)
        unit_jobs = []
        for i in np.flatnonzero(changed).tolist():
            index = lo // chunk + i
            a, b = _window_bounds(index, chunk, window, len(pair.prev))
            unit_jobs.append((pair.prev[a:b], pair.new[index * chunk : (index + 1) * chunk], level))
        jobs.append(unit_jobs)
    return jobs


def direct(jobs: list[list[tuple[bytes, bytes, int]]]) -> float:
    """zstandard on the same chunks with the same dictionaries and level: seconds."""
    t0 = time.perf_counter()
    for unit_jobs in jobs:
        for dictionary_bytes, data, level in unit_jobs:
            dictionary = zstandard.ZstdCompressionDict(dictionary_bytes, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            zstandard.ZstdCompressor(
                level=level, dict_data=dictionary, write_checksum=False, write_dict_id=False
            ).compress(data)
    return time.perf_counter() - t0


def service(component: HdeComponent, follower: ConfigFollower, units: list[Unit]) -> float:
    """The service's loop body for the same units: route, encode, export. Seconds."""
    t0 = time.perf_counter()
    for unit in units:
        variant, config = follower.assign(unit.key)
        component.process(unit, variant, config)
    return time.perf_counter() - t0


def interleaved(
    component: HdeComponent, follower: ConfigFollower, units: list[Unit], jobs: list, block: int, flip: bool
) -> tuple[float, float]:
    """Both sides over the same units, alternating every `block` units (load changes hit both alike)."""
    d = s = 0.0
    for k in range(0, len(units), block):
        if (k // block + flip) % 2:
            s += service(component, follower, units[k : k + block])
            d += direct(jobs[k : k + block])
        else:
            d += direct(jobs[k : k + block])
            s += service(component, follower, units[k : k + block])
    return d, s


def routing(follower: ConfigFollower, n: int) -> dict[str, float]:
    keys = [f"snapshot-{i // 64}/region-{i % 64}" for i in range(n)]
    best = {"empty": float("inf"), "route": float("inf"), "assign": float("inf")}
    for _ in range(5):
        t0 = time.perf_counter()
        for _key in keys:
            pass
        best["empty"] = min(best["empty"], time.perf_counter() - t0)
        route = follower.route
        t0 = time.perf_counter()
        for key in keys:
            route(key)
        best["route"] = min(best["route"], time.perf_counter() - t0)
        assign = follower.assign
        t0 = time.perf_counter()
        for key in keys:
            assign(key)
        best["assign"] = min(best["assign"], time.perf_counter() - t0)
    return {
        "route_ns": (best["route"] - best["empty"]) / n * 1e9,
        "assign_ns": (best["assign"] - best["empty"]) / n * 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 MB snapshots instead of 8 MB")
    parser.add_argument(
        "--rounds", type=whole(1), default=5, help="alternating direct/service rounds per configuration (default 5)"
    )
    parser.add_argument("--snapshots", type=whole(1), default=2, help="snapshot pairs per round (default 2)")
    parser.add_argument(
        "--block", type=whole(1), default=8, help="units per alternation between the two sides (default 8)"
    )
    parser.add_argument(
        "--routing-keys", type=whole(1), default=200_000, help="keys for the routing timing (default 200,000)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    registry = CollectorRegistry()
    component = HdeComponent(registry, quick=args.quick, seed=0)
    follower = ConfigFollower(HDE, registry=registry, name="hde")
    seeds = list(range(args.snapshots))
    results: dict[str, object] = {
        "snapshot_bytes": component.size,
        "snapshots_per_round": len(seeds),
        "rounds": args.rounds,
    }
    print(
        f"HDE service vs zstandard direct: {len(seeds)} snapshot pair(s) of {component.size / 1e6:.1f} MB per round, "
        f"{args.rounds} rounds, canary at 50 % with the stable configuration"
    )
    for label, config in CONFIGS.items():
        text = json.dumps(config)
        follower.apply({"config.json": text, CANARY_KEY: text, CANARY_WEIGHT_KEY: "50", CANARY_REVISION_KEY: "bench"})
        units = [Unit(f"snapshot-{s}/region-{r}", (s, r)) for s in seeds for r in range(component.regions)]
        jobs = plan(component, config, units)
        direct(jobs[:20])  # warm up: caches, allocator
        service(component, follower, units[:20])
        ratios, service_s, direct_s = [], [], []
        for i in range(args.rounds):
            d, s = interleaved(component, follower, units, jobs, args.block, bool(i % 2))
            ratios.append(d / s)
            service_s.append(s)
            direct_s.append(d)
        total = component.size * len(seeds)
        ratio = statistics.median(ratios)
        per_unit_us = statistics.median(service_s) / len(units) * 1e6
        results[label] = {
            "config": config,
            "chunks_compressed": sum(len(j) for j in jobs),
            "service_mb_per_s": total / statistics.median(service_s) / 1e6,
            "direct_mb_per_s": total / statistics.median(direct_s) / 1e6,
            "ratio": ratio,
            "ratios": ratios,
            "service_us_per_unit": per_unit_us,
        }
        print(
            f"  {label:8s} {text}: service {total / statistics.median(service_s) / 1e6:6.1f} MB/s, "
            f"zstandard direct {total / statistics.median(direct_s) / 1e6:6.1f} MB/s -> ratio {ratio:.3f} "
            f"(target >= 0.9; rounds {', '.join(f'{r:.3f}' for r in ratios)})"
        )
    timing = routing(follower, args.routing_keys)
    unit_us = min(results[label]["service_us_per_unit"] for label in CONFIGS)  # type: ignore[index]
    results["routing"] = {**timing, "share_of_fastest_unit": timing["assign_ns"] / (unit_us * 1e3)}
    print(
        f"Routing: route() {timing['route_ns']:.0f} ns/op, assign() (route + units counter) {timing['assign_ns']:.0f} ns/op "
        f"= {timing['assign_ns'] / (unit_us * 1e3):.2%} of the fastest unit of work ({unit_us:.0f} µs per 64 KiB region)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
