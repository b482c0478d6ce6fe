"""HDE as a service: delta-compresses a stream of VM memory snapshots with real zstd, 64 KiB at a time.

The data are the HDE workload's snapshot pairs (`workloads.hde.snapshots`, a pool of `pool` seeds, so
they are generated once). A unit of work is one 64 KiB region of a new snapshot (the largest chunk size
of the space, so every chunk size tiles it), key `snapshot-<n>/region-<r>`: the region is cut into the
variant's `chunk_size` chunks, unchanged chunks are only marked in the changed-chunk bitmap (the
comparison against the previous snapshot runs for real and is timed), and every changed chunk is
compressed at `compression_level` against the `window_size` bytes of the previous snapshot around it,
exactly as the workload's `_compress_chunk` does — the workload estimates a whole snapshot from a sample
of these chunks; the service compresses all of them.

Series (all `variant`-labelled; see examples/hde-profile.yaml for the queries that read them):
  dwcp_hde_bytes_in_total          snapshot bytes encoded
  dwcp_hde_bytes_out_total         bytes produced: frames, frame lengths, changed-chunk bitmap
  dwcp_hde_compress_seconds_total  wall seconds spent encoding (change detection + dictionary + zstd)
  dwcp_hde_cpu_seconds_total       CPU seconds of the encoding thread
  dwcp_hde_link_seconds_total      seconds the WAN link (`link_mbps`) needs to carry bytes_out
  dwcp_hde_memory_bytes            peak compressor memory (context + dictionary + buffers) of the
                                   variant's current configuration (reset when it changes)
So compression_ratio = in / out, throughput_mbps = in / compress_seconds / 1e6, cpu_seconds_per_gb =
cpu / in × 1e9 and effective_throughput_mbps = in / max(compress_seconds, link_seconds) / 1e6 =
min(throughput, link × ratio): the workload's definitions, over every region encoded in the window.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import zstandard
from prometheus_client import CollectorRegistry

from ..sdk import VariantCounters, VariantGauge, VariantState
from ..workloads.hde import HdeWorkload, _varint_len, _window_bounds, snapshots
from .service import Unit

REGION = 65536


def _libc_memcmp():
    try:
        memcmp = ctypes.CDLL(None).memcmp
    except (OSError, AttributeError):  # no C library to load (e.g. Windows): numpy does the comparison
        return None
    memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    memcmp.restype = ctypes.c_int
    return memcmp


_MEMCMP = _libc_memcmp()


def _address(data: bytes) -> int:
    """Address of an immutable bytes object's buffer (valid while the object lives)."""
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0


class HdeComponent:
    name = "hde"

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        quick: bool = False,
        seed: int = 0,
        link_mbps: float = 100.0,
        pool: int = 4,
    ) -> None:
        self.workload = HdeWorkload(quick=quick, link_mbps=link_mbps)
        self.pages = self.workload.pages
        self.dirty_fraction = self.workload.dirty_fraction
        self.size = self.pages * 4096
        self.regions = self.size // REGION
        self.seed = int(seed)
        self.pool = max(1, min(int(pool), 4))  # snapshots() caches 4 pairs
        self.link_bytes_per_second = link_mbps * 1e6 / 8.0
        self.counters = VariantCounters(
            [
                ("dwcp_hde_bytes_in", "Snapshot bytes encoded"),
                ("dwcp_hde_bytes_out", "Encoded bytes: frames, frame lengths and the changed-chunk bitmap"),
                ("dwcp_hde_compress_seconds", "Wall seconds spent encoding (change detection, dictionary setup, zstd)"),
                ("dwcp_hde_cpu_seconds", "CPU seconds spent encoding"),
                ("dwcp_hde_link_seconds", "Seconds the WAN link needs to carry the encoded bytes"),
            ],
            registry,
        )
        self.memory = VariantGauge(
            "dwcp_hde_memory_bytes", "Peak compressor memory of the variant's current configuration", registry
        )
        self._peak: dict[str, int] = {}
        self._config_of: dict[str, Mapping[str, Any]] = {}
        self._cache: dict[tuple[int, int], tuple[memoryview, memoryview, np.ndarray, np.ndarray]] = {}
        self._pairs: dict[int, object] = {}
        self._addresses: dict[int, tuple[int, int]] = {}

    def units(self) -> Iterator[Unit]:
        for n in itertools.count():
            seed = self.seed + n % self.pool
            for r in range(self.regions):
                yield Unit(f"snapshot-{n}/region-{r}", (seed, r))

    def _views(self, seed: int, chunk: int) -> tuple[memoryview, memoryview, np.ndarray, np.ndarray]:
        """Zero-copy views of a snapshot pair: bytes, and one row of 64-bit words per chunk."""
        key = (seed, chunk)
        views = self._cache.get(key)
        if views is None:
            pair = snapshots(seed, self.pages, self.dirty_fraction)
            self._pairs[seed] = pair  # keeps the buffers alive for the addresses below
            self._addresses[seed] = (_address(pair.prev), _address(pair.new))
            views = (
                memoryview(pair.prev),
                memoryview(pair.new),
                np.frombuffer(pair.prev, dtype=np.uint64).reshape(-1, chunk // 8),
                np.frombuffer(pair.new, dtype=np.uint64).reshape(-1, chunk // 8),
            )
            if len(self._cache) >= 4 * self.pool:
                self._cache.clear()
                self._pairs = {seed: pair}
                self._addresses = {seed: self._addresses[seed]}
            self._cache[key] = views
        return views

    def encode(self, seed: int, region: int, config: Mapping[str, Any]) -> tuple[float, float, float, int]:
        """Encode one region: (bytes out, wall seconds, CPU seconds, peak memory bytes).

        Chunk by chunk what `workloads.hde._compress_chunk` does (same frames, same memory measure), on
        zero-copy views of the snapshots."""
        level, chunk, window = int(config["compression_level"]), int(config["chunk_size"]), int(config["window_size"])
        prev, new, prev_rows, new_rows = self._views(seed, chunk)
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        per_region = REGION // chunk
        first = region * per_region
        if _MEMCMP is not None and chunk >= 4096:  # stops at the first difference: cheaper for large chunks
            p0, n0 = self._addresses[seed]
            base = region * REGION
            changed = [i for i in range(per_region) if _MEMCMP(p0 + base + i * chunk, n0 + base + i * chunk, chunk)]
        else:
            changed = (
                (prev_rows[first : first + per_region] != new_rows[first : first + per_region])
                .any(axis=1)
                .nonzero()[0]
                .tolist()
            )
        out = per_region / 8.0  # the changed-chunk bitmap: one bit per chunk
        peak = 0
        for i in changed:
            index = first + i
            a, b = _window_bounds(index, chunk, window, self.size)
            dictionary = zstandard.ZstdCompressionDict(prev[a:b], dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            compressor = zstandard.ZstdCompressor(
                level=level, dict_data=dictionary, write_checksum=False, write_dict_id=False
            )
            frame = compressor.compress(new[index * chunk : (index + 1) * chunk])
            out += len(frame) + _varint_len(len(frame))
            peak = max(peak, compressor.memory_size() + (b - a) + chunk + len(frame))
        return out, time.perf_counter() - wall0, time.thread_time() - cpu0, peak

    def process(self, unit: Unit, variant: str, config: Mapping[str, Any]) -> None:
        seed, region = unit.payload
        out, wall, cpu, peak = self.encode(seed, region, config)
        self.counters.add(variant, REGION, out, wall, cpu, out / self.link_bytes_per_second)
        if self._config_of.get(variant) is not config:  # the follower hands out one object per configuration
            self._config_of[variant] = config
            self._peak[variant] = 0
        if peak > self._peak.get(variant, 0):
            self._peak[variant] = peak
            self.memory.set(variant, peak)

    def on_change(self, old: VariantState, new: VariantState) -> None:
        for variant in ("stable", "canary"):
            if json.dumps(dict(old.config(variant)), sort_keys=True) != json.dumps(
                dict(new.config(variant)), sort_keys=True
            ) or (variant == "canary" and new.canary is None):
                self.memory.remove(variant)  # a new configuration has a new peak
