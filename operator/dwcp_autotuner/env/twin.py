"""A twin of a workload: its response surface measured once from the real workload, plus its noise.

Training a DQN needs hundreds of thousands of evaluations; the real workloads cost milliseconds to
tens of milliseconds each, which would make 500,000 steps take hours. So every grid point of the
parameter space is measured once with the real workload, a few points are measured repeatedly
with fresh seeds to estimate the noise, and the agent trains against mean × (1 + noise).

Twins are cached on disk (`.npz` arrays + `.json` provenance: machine, seed, date, workload
options, space hash), so the measurement is paid once per machine and space.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import multiprocessing
import os
import platform
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models.space import ParamValue, TuningSpace
from ..workloads.base import Workload

TWIN_FORMAT = 2  # 2: timed surfaces are the median of shuffled passes (`TIMING_PASSES`)
#: Passes over the grid when the space scores a timing: each point's value is the median of its passes.
TIMING_PASSES = 3
#: At most this many processes measure a twin (unset: every core this process may run on).
TWIN_PROCESSES_ENV = "DWCP_AUTOTUNER_TWIN_PROCESSES"

#: Called after each measured run with (done, total).
ProgressCallback = Callable[[int, int], None]


@dataclass
class Twin:
    """Measured metrics for every point of a space's grid, with per-metric relative noise."""

    space: TuningSpace
    metric_names: tuple[str, ...]
    means: np.ndarray  # shape (*grid_shape, n_metrics)
    noise_cv: np.ndarray  # shape (n_metrics,): relative standard deviation of a single run
    provenance: dict = field(default_factory=dict)

    # --- indexing ---------------------------------------------------------------------------------
    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(len(p.grid()) for p in self.space.parameters)

    def index_of(self, config: Mapping[str, ParamValue]) -> tuple[int, ...]:
        return tuple(p.index_of(config[p.name]) for p in self.space.parameters)

    def config_at(self, index: tuple[int, ...]) -> dict[str, ParamValue]:
        return {p.name: p.grid()[i] for p, i in zip(self.space.parameters, index)}

    def metrics_at(self, index: tuple[int, ...]) -> dict[str, float]:
        return dict(zip(self.metric_names, map(float, self.means[index])))

    def sample(self, index: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """One noisy 'measurement' at a grid point, as a metric vector."""
        mean = self.means[index]
        return mean * (1.0 + self.noise_cv * rng.standard_normal(mean.shape[-1]))

    # --- scores -----------------------------------------------------------------------------------
    def baseline_index(self) -> tuple[int, ...]:
        return self.index_of(self.space.default_config())

    def score_grid(self) -> np.ndarray:
        """The space's score (objective − penalties) at every grid point, against the default's metrics."""
        cached = getattr(self, "_score_grid", None)
        if cached is None:
            baseline = self.metrics_at(self.baseline_index())
            flat = self.means.reshape(-1, len(self.metric_names))
            scores = np.array([self.space.score(dict(zip(self.metric_names, row)), baseline) for row in flat])
            cached = scores.reshape(self.grid_shape)
            self._score_grid = cached
        return cached

    def optimum(self) -> tuple[tuple[int, ...], float]:
        """Exhaustive search over the grid: the best point and its score."""
        grid = self.score_grid()
        flat = int(np.argmax(grid))
        index = tuple(int(i) for i in np.unravel_index(flat, grid.shape))
        return index, float(grid[index])

    def fraction_of_optimum(self, score: float) -> float:
        """`score` as a fraction of the grid's optimum: score / optimum, negative for a score below zero.

        Monotone in the score, so a better configuration never reads as a smaller fraction (a score that rises
        through zero, as ACP's does under heavy message loss, reads as rising). Only where the optimum itself is
        not positive (a custom objective) does the ratio mean nothing: then it is taken between the grid's worst
        and best points."""
        grid = self.score_grid()
        best = float(grid.max())
        if best > 0:
            return score / best
        worst = float(grid.min())
        return 1.0 if best <= worst else (score - worst) / (best - worst)

    # --- persistence ------------------------------------------------------------------------------
    def save(self, path_stem: Path) -> None:
        path_stem.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": TWIN_FORMAT,
            "metric_names": list(self.metric_names),
            "provenance": self.provenance,
        }
        _atomic_write(
            path_stem.with_suffix(".npz"), lambda f: np.savez_compressed(f, means=self.means, noise_cv=self.noise_cv)
        )
        _atomic_write(path_stem.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=2).encode()))

    def to_bytes(self) -> bytes:
        """The twin as one compressed .npz (arrays and a JSON entry of names and provenance): what a worker in
        a Kubernetes Job hands back through a ConfigMap."""
        buffer = io.BytesIO()
        meta = json.dumps(
            {"format": TWIN_FORMAT, "metric_names": list(self.metric_names), "provenance": self.provenance}
        )
        np.savez_compressed(
            buffer, means=self.means, noise_cv=self.noise_cv, meta=np.frombuffer(meta.encode(), np.uint8)
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, space: TuningSpace, data: bytes) -> Twin:
        with np.load(io.BytesIO(data)) as arrays:
            means, noise, meta = arrays["means"], arrays["noise_cv"], json.loads(arrays["meta"].tobytes().decode())
        if meta.get("format") != TWIN_FORMAT:
            raise ValueError(f"a twin of format {meta.get('format')}, expected {TWIN_FORMAT}")
        twin = cls(space, tuple(meta["metric_names"]), means, noise, meta["provenance"])
        if means.shape[:-1] != twin.grid_shape:
            raise ValueError(f"a twin of grid {means.shape[:-1]}, the space needs {twin.grid_shape}")
        return twin

    @classmethod
    def load(cls, space: TuningSpace, path_stem: Path) -> Twin:
        meta = json.loads(path_stem.with_suffix(".json").read_text())
        if meta.get("format") != TWIN_FORMAT:
            raise ValueError(f"twin cache {path_stem} has format {meta.get('format')}, expected {TWIN_FORMAT}")
        with np.load(path_stem.with_suffix(".npz")) as arrays:
            means, noise = arrays["means"], arrays["noise_cv"]
        twin = cls(space, tuple(meta["metric_names"]), means, noise, meta["provenance"])
        if means.shape[:-1] != twin.grid_shape:
            raise ValueError(f"twin cache {path_stem} has grid {means.shape[:-1]}, space needs {twin.grid_shape}")
        return twin


def cache_key(space: TuningSpace, workload: Workload, seed: int, repeats: int = 1) -> str:
    """Everything that changes the measured surface: the space's grid, the workload's options, seed, repeats."""
    blob = json.dumps(
        {
            "space": space.space_hash(),
            "workload": workload.name,
            "options": workload.options(),
            "seed": seed,
            "repeats": repeats,
            "format": TWIN_FORMAT,
        },
        sort_keys=True,
    )
    return f"{workload.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def default_cache_dir() -> Path:
    base = os.environ.get("DWCP_AUTOTUNER_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    root = Path(base)
    return root if os.environ.get("DWCP_AUTOTUNER_CACHE") else root / "dwcp-autotuner"


def measure_twin(
    space: TuningSpace,
    workload: Workload,
    *,
    seed: int,
    repeats: int = 1,
    noise_points: int = 6,
    noise_repeats: int = 4,
    progress: ProgressCallback | None = None,
    processes: int | None = None,
    passes: int | None = None,
) -> Twin:
    """Run the real workload at every grid point and repeat a few points for the noise.

    Each grid point's mean is averaged over `repeats` seeds (seed, seed+1, …): a surface measured
    with one seed carries that seed's noise at every point, and those bumps trap an agent that
    moves one step at a time. The noise model stays that of a single run.

    The runs are spread over `processes` worker processes (None: `twin_processes` decides). Every
    metric that is not a timing is a pure function of (config, seed), so the twin is the same
    whichever process ran each point.

    Timings are measured one run at a time, and a machine's slow spells (another process, a lower clock)
    last longer than a run: measured in grid order, a dozen neighbouring points came out 20–25 % slow
    together, a bump an agent takes for an effect (HDE on a 1 Gbit/s link: two such measurements a minute
    apart differed by 18 % per point, and their best points by as much). So where the space scores a
    timing, the grid is measured in `passes` passes (None: `TIMING_PASSES`), each in its own shuffled
    order, and each metric of a point is the median of its passes: a slow spell hits scattered points
    once, and the median drops it (per-point spread 10 % → 6 % on that link, quiet machine).
    """
    missing = [t.metric for t in space.objective if t.metric not in workload.metric_names]
    missing += [c.metric for c in space.constraints if c.metric not in workload.metric_names]
    if missing:
        raise ValueError(f"workload {workload.name!r} does not measure {', '.join(sorted(set(missing)))}")
    metric_names = tuple(workload.metric_names)
    shape = tuple(len(p.grid()) for p in space.parameters)
    total_points = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    noise_indices = [
        tuple(int(i) for i in np.unravel_index(k, shape))
        for k in rng.choice(total_points, size=min(noise_points, total_points), replace=False)
    ]
    grid_indices = [tuple(int(i) for i in np.unravel_index(flat, shape)) for flat in range(total_points)]

    def config_at(index: tuple[int, ...]) -> dict[str, ParamValue]:
        return {p.name: p.grid()[i] for p, i in zip(space.parameters, index)}

    # Every run as (config, seed): the grid's (once per pass), then the noise points' with fresh seeds.
    grid_runs = [(config_at(index), seed + r) for index in grid_indices for r in range(repeats)]
    noise_runs = [(config_at(index), seed + 1000 + r) for index in noise_indices for r in range(noise_repeats)]
    timed = _scores_a_timing(space, workload)
    passes = timing_passes(space, workload) if passes is None else max(1, passes)
    orders = [rng.permutation(len(grid_runs)) if timed else np.arange(len(grid_runs)) for _ in range(passes)]
    runs = [grid_runs[i] for order in orders for i in order] + noise_runs
    processes = twin_processes(space, workload) if processes is None else max(1, processes)
    values = np.array(_run_all(workload, runs, metric_names, processes, progress))

    passed = np.empty((passes, len(grid_runs), len(metric_names)))
    for k, order in enumerate(orders):
        passed[k, order] = values[k * len(grid_runs) : (k + 1) * len(grid_runs)]
    grid_values = np.median(passed, axis=0).reshape(total_points, repeats, len(metric_names))
    means = grid_values.mean(axis=1).reshape(*shape, len(metric_names))
    # Noise: relative spread across fresh seeds at a few points; the median is robust to one odd point.
    cvs = []
    for runs_arr in values[passes * len(grid_runs) :].reshape(len(noise_indices), noise_repeats, len(metric_names)):
        mean = np.abs(runs_arr.mean(axis=0))
        cvs.append(np.where(mean > 1e-12, runs_arr.std(axis=0, ddof=1) / np.maximum(mean, 1e-12), 0.0))
    noise_cv = np.median(np.array(cvs), axis=0) if cvs else np.zeros(len(metric_names))
    provenance = {
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()})",
        "seed": seed,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "workload": workload.name,
        "options": workload.options(),
        "space_hash": space.space_hash(),
        "grid_points": total_points,
        "repeats": repeats,
        "passes": passes,
        "noise_points": len(noise_indices),
        "noise_repeats": noise_repeats,
        "processes": processes,
    }
    return Twin(space, metric_names, means, noise_cv, provenance)


def twin_processes(space: TuningSpace, workload: Workload) -> int:
    """How many processes measure this twin: every core when the space reads no timing, else one.

    Timings (throughput, CPU seconds, latency: a workload's `timed_metrics`) measured side by side
    would measure each other's contention, so a space whose objective or constraints read one is
    measured in this process, one run at a time. A workload that does not say which of its metrics
    are timings is taken to time them all. `$DWCP_AUTOTUNER_TWIN_PROCESSES` caps the count. A
    daemonic process (a worker of the operator's pool) cannot start processes of its own, and
    measures serially too."""
    if _scores_a_timing(space, workload) or multiprocessing.current_process().daemon:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # A container sees every core of its node; its CPU share is set from outside (a worker Job: its CPU request).
    limit = os.environ.get(TWIN_PROCESSES_ENV, "").strip()
    if limit.isdigit() and int(limit) > 0:
        cores = min(cores or 1, int(limit))
    return max(1, cores or 1)


def timing_passes(space: TuningSpace, workload: Workload) -> int:
    """How many passes over the grid measure this twin: `TIMING_PASSES` where the space scores a timing, else 1."""
    return TIMING_PASSES if _scores_a_timing(space, workload) else 1


def _scores_a_timing(space: TuningSpace, workload: Workload) -> bool:
    """Whether the space's objective or constraints read a timing (a workload that does not say which of its
    metrics are timings is taken to time them all)."""
    timed = set(getattr(workload, "timed_metrics", workload.metric_names))
    used = {t.metric for t in space.objective} | {c.metric for c in space.constraints}
    return bool(timed & used)


def _run_all(
    workload: Workload,
    runs: list[tuple[dict[str, ParamValue], int]],
    metric_names: tuple[str, ...],
    processes: int,
    progress: ProgressCallback | None,
) -> list[list[float]]:
    """The metric vectors of `runs`, in order: here one at a time, or in chunks over a process pool."""
    if processes <= 1:
        values = []
        for done, run in enumerate(runs, 1):
            values += _run_chunk(workload, [run], metric_names)
            if progress:
                progress(done, len(runs))
        return values
    # Chunks of a few dozen runs: few enough round trips, small enough for a steady progress bar and balance.
    size = max(1, min(64, len(runs) // (processes * 8)))
    chunks = [runs[i : i + size] for i in range(0, len(runs), size)]
    results: list[list[list[float]] | None] = [None] * len(chunks)
    done = 0
    # `spawn`: the caller may hold threads (the operator, torch), which `fork` would copy mid-flight.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_chunk, workload, chunk, metric_names): k for k, chunk in enumerate(chunks)}
        for future in as_completed(futures):
            k = futures[future]
            results[k] = future.result()
            done += len(chunks[k])
            if progress:
                progress(done, len(runs))
    return [row for chunk in results for row in chunk or []]


def _run_chunk(
    workload: Workload, chunk: list[tuple[dict[str, ParamValue], int]], metric_names: tuple[str, ...]
) -> list[list[float]]:
    """One chunk of runs in a worker process (top level, so it pickles)."""
    values = []
    for config, run_seed in chunk:
        result = workload.run(config, run_seed)
        values.append([result[m] for m in metric_names])
    return values


def load_or_measure_twin(
    space: TuningSpace,
    workload: Workload,
    *,
    seed: int,
    repeats: int = 1,
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    processes: int | None = None,
) -> tuple[Twin, bool]:
    """The cached twin when one matches (space, workload options, seed); otherwise measure and cache it.

    Returns (twin, loaded_from_cache).
    """
    stem = (cache_dir or default_cache_dir()) / "twins" / cache_key(space, workload, seed, repeats)
    if stem.with_suffix(".json").exists() and stem.with_suffix(".npz").exists():
        try:
            return Twin.load(space, stem), True
        except (ValueError, KeyError, OSError):
            pass  # a stale or damaged cache is re-measured, never trusted
    twin = measure_twin(space, workload, seed=seed, repeats=repeats, progress=progress, processes=processes)
    twin.save(stem)
    return twin, False


def _atomic_write(path: Path, write: Callable) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
