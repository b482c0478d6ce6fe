"""HDE reference workload: delta compression of successive VM memory snapshots with real zstd.

What is generated (deterministic for a seed, cached per seed)
-------------------------------------------------------------
A memory image of `snapshot_mb` MB (8, quick 4) made of 4 KiB pages laid out in runs of one kind
(memory is allocated in regions): zero pages (25 %), text-like pages (20 %: Zipf-distributed words
from a vocabulary), structured pages (35 %: code/heap-like, built from a table of recurring
16-byte fragments with pointer-like 8-byte words sprinkled in) and random pages (20 %: encrypted
or already-compressed data). Between two snapshots the VM writes to `dirty_fraction` of its pages
(0.45 on average: successive snapshots of a write-heavy VM; a few writes, such as zeroing a zero
page, leave a page as it was), clustered in hot 64 KiB regions: 35 % of dirty pages
get small in-page edits (1–8 edits of 4–64 bytes), 45 % are rewritten whole (usually with fresh
content of the same kind, sometimes freed to zero or allocated from zero), 20 % are relocations:
the page now holds the content another page had in the previous snapshot, 4 KiB to 1 MiB away
(compaction, reallocation), half of them edited too.

What is measured (real zstd, real timings)
------------------------------------------
The new snapshot is cut into `chunk_size` chunks. Like every delta-migration scheme (QEMU's
XBZRLE, dirty-page tracking) an unchanged chunk is not compressed: a bitmap marks it (the
comparison against the previous snapshot runs for real over the whole image and is timed).
With `skip_unchanged=False` every chunk is compressed instead. A changed chunk is compressed at
`compression_level` against the previous snapshot's bytes around the same place, as a raw-content
dictionary of `window_size` bytes centred on the chunk's region (`ZstdCompressionDict(...,
DICT_TYPE_RAWCONTENT)`, a fresh compressor per chunk since every chunk has its own dictionary).
The real effects this produces:

* a higher level compresses rewritten pages better but is slower, and loading its dictionary
  (filling the match finder's tables) is much slower;
* a window smaller than the chunk leaves part of the chunk without a reference;
* a larger window finds relocated pages, but every changed chunk pays for loading it, and the
  compressor's tables (memory) grow with it — at low levels a large window even floods the small
  hash table, so matches are lost;
* tiny chunks pay the per-call overhead (dictionary object, compressor context, frame header)
  many times; large chunks drag unchanged neighbours of a dirty page through the compressor.

Sampling. Loading a 1 MiB dictionary at level 9 takes tens of milliseconds, so compressing every
changed chunk of every configuration would make a run far too slow for an exhaustive grid. A run
therefore compresses a deterministic sample: `sample_pages` anchors (32, quick 16) are drawn once
per seed among the changed 1 KiB blocks with probability proportional to a size measure (the
block's own delta, mixed 70/30 with uniform), by systematic sampling over the blocks ordered by
what the generator did to their page (so every kind of change is represented), and a run
compresses the chunks holding the anchors — the same places for every configuration, so that
configurations are compared on the same data. Output bytes are extrapolated with Hansen–Hurwitz
weights (unbiased; against compressing every changed chunk the ratio came out within ±5 % for
most configurations, ±10 % at worst, with 32 anchors — and since every configuration uses the
same anchors, neighbouring configurations share most of that error); time and CPU per chunk,
dominated by dictionary setup, are averaged over the sampled chunks (the slowest 20 % dropped as
likely preemptions) and multiplied by the number of changed chunks. The dirty-chunk detection
is measured over the whole image. Ratios are therefore deterministic for a seed; timings are
real. With `skip_unchanged=False` the population is every block and every chunk is compressed.

Metrics: compression_ratio (snapshot bytes / encoded bytes incl. bitmap and frame lengths),
throughput_mbps (snapshot MB per wall second, detection and dictionary setup included),
cpu_seconds_per_gb (process CPU seconds per GB of snapshot), peak_memory_mb (largest
`ZstdCompressor.memory_size()` + dictionary + input and output buffers of one chunk),
effective_throughput_mbps = min(throughput, link_mbps / 8 × ratio). MB are 10⁶ bytes.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import zstandard

from .base import ConfigValue, as_int, require

PAGE = 4096
BLOCK = 1024  #: granularity of the sample design (the smallest chunk of the built-in space)
KINDS = ("zero", "text", "structured", "random")
KIND_SHARE = np.array([0.25, 0.20, 0.35, 0.20])
#: What happens to a dirty page: small in-page edits, whole-page rewrite, relocation.
EVENT_SHARE = (0.35, 0.45, 0.20)
PARAMS = ("compression_level", "chunk_size", "window_size")
METRICS = ("compression_ratio", "throughput_mbps", "cpu_seconds_per_gb", "peak_memory_mb", "effective_throughput_mbps")
#: The live conditions this workload's options stand for, with their valid range: the twin is also measured under
#: other values of each (`twin_conditions`), so that the learned twin can tell which the live system resembles.
CONDITIONS = {"dirty_fraction": (0.0, 1.0), "link_mbps": (0.0, None)}


class HdeWorkload:
    """Real zstd delta compression of a synthetic VM memory snapshot pair."""

    name = "hde"
    metric_names = METRICS
    parameter_names = PARAMS
    #: Measured with the wall and CPU clocks of this machine (the ratio and memory are not).
    timed_metrics = ("throughput_mbps", "cpu_seconds_per_gb", "effective_throughput_mbps")

    def __init__(
        self,
        *,
        quick: bool = False,
        snapshot_mb: float | None = None,
        dirty_fraction: float = 0.45,
        link_mbps: float = 100.0,
        skip_unchanged: bool = True,
        sample_pages: int | None = None,
    ) -> None:
        self.quick = bool(quick)
        self.snapshot_mb = float(snapshot_mb if snapshot_mb is not None else (4.0 if quick else 8.0))
        if not 0 < dirty_fraction <= 1:
            raise ValueError("dirty_fraction must lie in (0, 1]")
        if link_mbps <= 0:
            raise ValueError("link_mbps must be positive")
        self.dirty_fraction = float(dirty_fraction)
        self.link_mbps = float(link_mbps)
        self.skip_unchanged = bool(skip_unchanged)
        self.sample_pages = int(sample_pages if sample_pages is not None else (16 if quick else 32))
        if self.sample_pages < 1:
            raise ValueError("sample_pages must be at least 1")
        pages = int(round(self.snapshot_mb * 1e6 / PAGE))
        self.pages = max(pages - pages % 16, 64)  # whole 64 KiB regions

    # --- interface -------------------------------------------------------------------------------
    def options(self) -> dict:
        return {
            "quick": self.quick,
            "snapshot_bytes": self.pages * PAGE,
            "dirty_fraction": self.dirty_fraction,
            "link_mbps": self.link_mbps,
            "skip_unchanged": self.skip_unchanged,
            "sample_pages": self.sample_pages,
        }

    def run(self, config: Mapping[str, ConfigValue], seed: int) -> dict[str, float]:
        level, chunk, window = self._config(config)
        pair = snapshots(int(seed), self.pages, self.dirty_fraction)
        design = sample_design(int(seed), self.pages, self.dirty_fraction, self.sample_pages, self.skip_unchanged)
        prev, new = pair.prev, pair.new
        size = len(new)
        n_chunks = -(-size // chunk)

        # Find the changed chunks, for real, over the whole image (timed).
        wall0, cpu0 = time.perf_counter(), time.process_time()
        changed = _changed_words(prev, new, chunk) if self.skip_unchanged else None
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0

        # Compress the chunks holding the anchors. Output bytes are extrapolated with
        # Hansen–Hurwitz weights: an anchor lands in chunk c with probability p_c (the size measure
        # of the population blocks in c over the total), so Σ bytes_c / (k·p_c) over the anchors
        # estimates the bytes of all compressed chunks. Time per chunk hardly depends on the
        # output (dictionary setup dominates), so time is the mean over the distinct sampled
        # chunks × the number of chunks compressed; the slowest 20 % of the sampled chunks are
        # left out of that mean, since on a shared machine they are mostly preemptions.
        out_bytes = 0.0
        peak = 0
        measured: dict[int, tuple[int, float, float]] = {}
        k = len(design.points)
        for point in design.points.tolist():
            index = point // chunk
            if changed is not None and changed[index] == 0:
                continue  # an unchanged chunk: only its bitmap bit is sent
            if index not in measured:
                frame, dt_wall, dt_cpu, mem = _compress_chunk(prev, new, index, chunk, window, level)
                measured[index] = (len(frame) + _varint_len(len(frame)), dt_wall, dt_cpu)
                peak = max(peak, mem)
            out_bytes += measured[index][0] / (k * self._share(design, index, chunk))
        n_compressed = int(np.count_nonzero(changed)) if changed is not None else n_chunks
        if measured:
            wall += n_compressed * _trimmed_mean([m[1] for m in measured.values()])
            cpu += n_compressed * _trimmed_mean([m[2] for m in measured.values()])
        else:  # nothing changed: still report the memory one chunk would need
            peak = _compress_chunk(prev, new, 0, chunk, window, level)[3]
        if self.skip_unchanged:
            out_bytes += -(-n_chunks // 8)  # the changed-chunk bitmap

        ratio = size / max(out_bytes, 1.0)
        throughput = size / 1e6 / max(wall, 1e-9)
        link_rate = self.link_mbps / 8.0 * ratio
        return {
            "compression_ratio": float(ratio),
            "throughput_mbps": float(throughput),
            "cpu_seconds_per_gb": float(cpu / (size / 1e9)),
            "peak_memory_mb": float(peak / 1e6),
            "effective_throughput_mbps": float(min(throughput, link_rate)),
        }

    @staticmethod
    def _share(design: SampleDesign, index: int, chunk: int) -> float:
        """p_c: the sum of the size measures (probabilities) of the blocks in chunk `index`."""
        if chunk <= BLOCK:
            return float(design.size[index * chunk // BLOCK]) * chunk / BLOCK
        return float(design.size[index * chunk // BLOCK : (index + 1) * chunk // BLOCK].sum())

    # --- helpers also used by the tests ----------------------------------------------------------
    def sampled_chunks(self, config: Mapping[str, ConfigValue], seed: int) -> list[int]:
        """Indices of the chunks a run compresses (the changed chunks holding the anchors)."""
        _level, chunk, _window = self._config(config)
        pair = snapshots(int(seed), self.pages, self.dirty_fraction)
        design = sample_design(int(seed), self.pages, self.dirty_fraction, self.sample_pages, self.skip_unchanged)
        changed = _changed_words(pair.prev, pair.new, chunk)
        indices = sorted({p // chunk for p in design.points.tolist()})
        return [i for i in indices if changed[i] or not self.skip_unchanged]

    def encode(
        self, config: Mapping[str, ConfigValue], seed: int, chunks: list[int] | None = None
    ) -> list[tuple[int, bytes]]:
        """Compressed frames of the given chunks (default: those a run compresses)."""
        level, chunk, window = self._config(config)
        pair = snapshots(int(seed), self.pages, self.dirty_fraction)
        if chunks is None:
            chunks = self.sampled_chunks(config, seed)
        return [(i, _compress_chunk(pair.prev, pair.new, i, chunk, window, level)[0]) for i in chunks]

    def decode(self, config: Mapping[str, ConfigValue], seed: int, index: int, frame: bytes) -> bytes:
        """Decompress one chunk's frame against the previous snapshot (what the receiver holds)."""
        _level, chunk, window = self._config(config)
        prev = snapshots(int(seed), self.pages, self.dirty_fraction).prev
        lo, hi = _window_bounds(index, chunk, window, len(prev))
        dictionary = zstandard.ZstdCompressionDict(prev[lo:hi], dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        return zstandard.ZstdDecompressor(dict_data=dictionary).decompress(frame)

    def chunk_bytes(self, config: Mapping[str, ConfigValue], seed: int, index: int) -> bytes:
        """The original bytes of one chunk of the new snapshot."""
        _level, chunk, _window = self._config(config)
        new = snapshots(int(seed), self.pages, self.dirty_fraction).new
        return new[index * chunk : (index + 1) * chunk]

    # --- internals -------------------------------------------------------------------------------
    def _config(self, config: Mapping[str, ConfigValue]) -> tuple[int, int, int]:
        require(config, PARAMS, self.name)
        level = as_int(config, "compression_level", 1)
        if level > 22:
            raise ValueError("compression_level must be at most 22 (zstd's maximum)")
        chunk = as_int(config, "chunk_size", 64)
        window = as_int(config, "window_size", 64)
        if chunk % 8 or (chunk < BLOCK and BLOCK % chunk) or (chunk > BLOCK and chunk % BLOCK):
            raise ValueError("chunk_size must divide 1024 or be a multiple of it (and a multiple of 8)")
        return level, chunk, window


# --- snapshot generation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotPair:
    """Two successive memory snapshots and what the generator did to each page."""

    prev: bytes
    new: bytes
    #: Per page: -1 unchanged, else event*100 + content kind*10 + relocation-distance bucket.
    labels: np.ndarray
    #: Per page: whether any byte differs between the snapshots.
    page_dirty: np.ndarray


@functools.lru_cache(maxsize=4)  # 16 MB per pair at the full size
def snapshots(seed: int, pages: int, dirty_fraction: float) -> SnapshotPair:
    """Previous and new memory snapshots of `pages` 4 KiB pages; deterministic for the seed."""
    rng = np.random.default_rng([0x4DE, seed])
    kinds = _layout(rng, pages)
    gen = _ContentGenerator(rng)
    prev = np.zeros((pages, PAGE), dtype=np.uint8)
    for k in range(1, len(KINDS)):
        rows = np.flatnonzero(kinds == k)
        if len(rows):
            prev[rows] = gen.pages(k, len(rows))
    new = prev.copy()

    # Hot regions: dirty probability varies by 64 KiB region (lognormal hotness), scaled so that
    # `dirty_fraction` of the pages are dirtied on average (hot regions saturate at 1).
    hot = np.repeat(rng.lognormal(0.0, 1.2, pages // 16), 16)
    hot /= hot.mean()
    lo, hi = 0.0, 1.0 / max(hot.min(), 1e-12)
    for _ in range(50):
        scale = (lo + hi) / 2
        lo, hi = (scale, hi) if np.clip(hot * scale, 0.0, 1.0).mean() < dirty_fraction else (lo, scale)
    p_dirty = np.clip(hot * (lo + hi) / 2, 0.0, 1.0)
    dirty_pages = np.flatnonzero(rng.random(pages) < p_dirty)
    action = rng.random(len(dirty_pages))
    labels = np.full(pages, -1, dtype=np.int32)
    for page, a in zip(dirty_pages.tolist(), action.tolist()):
        kind = int(kinds[page])
        if a < EVENT_SHARE[0]:  # small in-page edits
            _edit(rng, gen, new[page], kind)
            labels[page] = kind * 10
        elif a < EVENT_SHARE[0] + EVENT_SHARE[1]:  # whole-page rewrite
            if kind == 0 or rng.random() < 0.3:
                kind = int(rng.choice(len(KINDS), p=KIND_SHARE))  # allocation / reuse / free
            new[page] = gen.pages(kind, 1)[0] if kind else 0
            labels[page] = 100 + kind * 10
        else:  # relocation from 4 KiB … 1 MiB away, sometimes edited
            distance = int(round(2.0 ** rng.uniform(0.0, 8.0)))
            source = page + distance if rng.random() < 0.5 else page - distance
            source = min(max(source, 0), pages - 1)
            if source == page:
                source = page + 1 if page + 1 < pages else page - 1
            new[page] = prev[source]
            if rng.random() < 0.5:
                _edit(rng, gen, new[page], int(kinds[source]))
            bucket = min(int(np.log2(max(abs(source - page), 1)) // 2), 3)
            labels[page] = 200 + int(kinds[source]) * 10 + bucket
    page_dirty = np.any(prev != new, axis=1)
    labels[~page_dirty] = -1
    return SnapshotPair(prev.tobytes(), new.tobytes(), labels, page_dirty)


@dataclass(frozen=True)
class SampleDesign:
    """Where a run samples: anchor blocks drawn with probability proportional to a size measure."""

    points: np.ndarray  #: anchor byte offsets into the snapshot (k of them, one per anchor block)
    size: np.ndarray  #: per 1 KiB block: its probability of holding an anchor (0 outside the population)


@functools.lru_cache(maxsize=8)
def sample_design(seed: int, pages: int, dirty_fraction: float, count: int, dirty_only: bool) -> SampleDesign:
    """The sample design: `count` anchor blocks, drawn with probability proportional to size.

    The population is the changed 1 KiB blocks (every block when unchanged chunks are compressed
    too). A block's size measure is its delta against its own previous version (level 1, the
    block as dictionary; at least 16 bytes): roughly what it costs to send; the probability is
    a 70/30 mixture of size-proportional and uniform. Blocks are ordered by
    the generator's page label (event × content kind × relocation distance) and address, and
    anchors are taken by systematic PPS sampling over the cumulative size measure, so every
    stratum is represented in proportion to the output it makes.
    """
    pair = snapshots(seed, pages, dirty_fraction)
    changed = _changed_words(pair.prev, pair.new, BLOCK)
    population = np.flatnonzero(changed) if dirty_only else np.arange(len(changed))
    size = np.zeros(len(changed))
    if len(population) == 0:
        return SampleDesign(np.zeros(0, dtype=np.int64), size)
    for block in population.tolist():
        base = block * BLOCK
        dictionary = zstandard.ZstdCompressionDict(
            pair.prev[base : base + BLOCK], dict_type=zstandard.DICT_TYPE_RAWCONTENT
        )
        compressor = zstandard.ZstdCompressor(level=1, dict_data=dictionary, write_checksum=False, write_dict_id=False)
        size[block] = max(len(compressor.compress(pair.new[base : base + BLOCK])), 16)
    # Defensive mixture: 70 % by size, 30 % uniform, so that chunks whose output the size measure
    # underrates (a window smaller than the chunk leaves unchanged blocks unreferenced) still
    # get bounded weights.
    size[population] = 0.7 * size[population] / size[population].sum() + 0.3 / len(population)
    label = pair.labels[population * BLOCK // PAGE]
    label = np.where(label < 0, 10_000, label)
    ordered = population[np.lexsort((population, label))]
    cumulative = np.cumsum(size[ordered])
    targets = (np.arange(count) + 0.5) * cumulative[-1] / count
    chosen = ordered[np.minimum(np.searchsorted(cumulative, targets, side="right"), len(ordered) - 1)]
    return SampleDesign(chosen * BLOCK, size)


def _layout(rng: np.random.Generator, pages: int) -> np.ndarray:
    kinds = np.empty(pages, dtype=np.int8)
    pos = 0
    while pos < pages:
        run = int(rng.geometric(1.0 / 12.0))
        kinds[pos : pos + run] = rng.choice(len(KINDS), p=KIND_SHARE)
        pos += run
    return kinds


class _ContentGenerator:
    """Page contents of each kind, vectorised."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        # Text: a vocabulary of 3000 words (lengths 1–12), Zipf-like frequencies, spaces,
        # occasional punctuation and newlines.
        n_vocab = 3000
        lengths = np.clip(rng.geometric(0.22, n_vocab), 1, 12)
        letters = rng.choice(
            np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8), size=int(lengths.sum()), p=_letter_freq()
        )
        seps = rng.choice(np.frombuffer(b"    ,.\n", dtype=np.uint8), size=n_vocab)
        word_lengths = lengths + 1
        flat = np.empty(int(word_lengths.sum()), dtype=np.uint8)
        starts = np.concatenate([[0], np.cumsum(word_lengths)[:-1]])
        letter_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        offsets = np.arange(int(lengths.sum())) - np.repeat(letter_starts, lengths) + np.repeat(starts, lengths)
        flat[offsets] = letters
        flat[starts + lengths] = seps
        self.word_flat, self.word_starts, self.word_lengths = flat, starts, word_lengths
        ranks = np.arange(1, n_vocab + 1, dtype=float)
        self.word_p = 1.0 / (ranks + 2.7) ** 1.07
        self.word_p /= self.word_p.sum()
        # Structured: 512 recurring 16-byte fragments (opcode-like bytes, small integers, pointers).
        frags = np.zeros((512, 16), dtype=np.uint8)
        opcode_p = 1.0 / (np.arange(256) + 1.0) ** 1.3
        opcode_p /= opcode_p.sum()
        perm = rng.permutation(256)
        frags[:200] = perm[rng.choice(256, size=(200, 16), p=opcode_p)]
        small = rng.geometric(0.05, size=(180, 4)).astype(np.uint32)
        frags[200:380] = small.view(np.uint8).reshape(180, 16)
        frags[380:] = self._pointers(132 * 2).view(np.uint8).reshape(132, 16)
        self.frags = frags
        fp = 1.0 / (np.arange(512) + 5.0) ** 1.2
        self.frag_p = fp / fp.sum()
        self.frag_order = rng.permutation(512)

    def _pointers(self, n: int) -> np.ndarray:
        base = np.uint64(0x00007F3A_00000000)
        low = (self.rng.integers(0, 1 << 22, size=n, dtype=np.uint64) * np.uint64(16)).astype(np.uint64)
        return base + low

    def pages(self, kind: int, n: int) -> np.ndarray:
        if kind == 0:
            return np.zeros((n, PAGE), dtype=np.uint8)
        if kind == 1:
            return self.text(n * PAGE).reshape(n, PAGE)
        if kind == 2:
            idx = self.frag_order[self.rng.choice(512, size=(n, PAGE // 16), p=self.frag_p)]
            out = self.frags[idx].reshape(n, PAGE)
            words = out.view(np.uint64)  # (n, 512)
            mask = self.rng.random(words.shape) < 0.10
            words[mask] = self._pointers(int(mask.sum()))
            return out
        return self.rng.integers(0, 256, size=(n, PAGE), dtype=np.uint8)

    def text(self, nbytes: int) -> np.ndarray:
        count = nbytes // 4 + 64
        idx = self.rng.choice(len(self.word_p), size=count, p=self.word_p)
        lens = self.word_lengths[idx]
        total = int(lens.sum())
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        gather = np.arange(total) - np.repeat(starts, lens) + np.repeat(self.word_starts[idx], lens)
        return self.word_flat[gather[:nbytes]]


def _letter_freq() -> np.ndarray:
    f = np.array(
        [
            12.7,
            9.1,
            8.2,
            7.5,
            7.0,
            6.7,
            6.3,
            6.1,
            6.0,
            4.3,
            4.0,
            2.8,
            2.8,
            2.4,
            2.4,
            2.2,
            2.0,
            2.0,
            1.9,
            1.5,
            1.0,
            0.8,
            0.15,
            0.15,
            0.1,
            0.07,
        ]
    )
    return f / f.sum()


def _edit(rng: np.random.Generator, gen: _ContentGenerator, page: np.ndarray, kind: int) -> None:
    for _ in range(int(rng.integers(1, 9))):
        length = int(round(2.0 ** rng.uniform(2.0, 6.0)))
        offset = int(rng.integers(0, PAGE - length + 1))
        if kind == 1:
            page[offset : offset + length] = gen.text(length)
        elif kind == 3:
            page[offset : offset + length] = rng.integers(0, 256, size=length, dtype=np.uint8)
        else:  # structured or zero pages receive small integers / pointers
            page[offset : offset + length] = gen.pages(2, 1)[0, :length]


# --- compression ---------------------------------------------------------------------------------
def _changed_words(prev: bytes, new: bytes, chunk: int) -> np.ndarray:
    """Number of changed 8-byte words per chunk (the last chunk may be short)."""
    a = np.frombuffer(prev, dtype=np.uint64)
    b = np.frombuffer(new, dtype=np.uint64)
    diff = a != b
    per = chunk // 8
    full = len(diff) // per
    counts = np.count_nonzero(diff[: full * per].reshape(full, per), axis=1)
    if full * per < len(diff):
        counts = np.append(counts, np.count_nonzero(diff[full * per :]))
    return counts


def _window_bounds(index: int, chunk: int, window: int, size: int) -> tuple[int, int]:
    if window >= size:
        return 0, size
    centre = index * chunk + chunk // 2
    lo = min(max(centre - window // 2, 0), size - window)
    return lo, lo + window


def _compress_chunk(
    prev: bytes, new: bytes, index: int, chunk: int, window: int, level: int
) -> tuple[bytes, float, float, int]:
    """Compress one chunk against its window of the previous snapshot; (frame, wall s, cpu s, bytes)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    lo, hi = _window_bounds(index, chunk, window, len(prev))
    dictionary = zstandard.ZstdCompressionDict(prev[lo:hi], dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    compressor = zstandard.ZstdCompressor(level=level, dict_data=dictionary, write_checksum=False, write_dict_id=False)
    data = new[index * chunk : (index + 1) * chunk]
    frame = compressor.compress(data)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    memory = compressor.memory_size() + (hi - lo) + len(data) + len(frame)
    return frame, wall, cpu, memory


def _trimmed_mean(values: list[float], cut: float = 0.2) -> float:
    ordered = sorted(values)
    keep = ordered[: max(1, len(ordered) - int(len(ordered) * cut))]
    return sum(keep) / len(keep)


def _varint_len(n: int) -> int:
    return max(1, math.ceil(n.bit_length() / 7))
