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
import os
import platform
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models.space import ParamValue, TuningSpace
from ..workloads.base import Workload

TWIN_FORMAT = 1

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
) -> Twin:
    """Run the real workload at every grid point and repeat a few points for the noise.

    Each grid point's mean is averaged over `repeats` seeds (seed, seed+1, …): a surface measured
    with one seed carries that seed's noise at every point, and those bumps trap an agent that
    moves one step at a time. The noise model stays that of a single run.
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
    total = total_points * repeats + len(noise_indices) * noise_repeats
    done = 0
    means = np.empty((*shape, len(metric_names)))
    for flat in range(total_points):
        index = tuple(int(i) for i in np.unravel_index(flat, shape))
        config = {p.name: p.grid()[i] for p, i in zip(space.parameters, index)}
        runs = []
        for r in range(repeats):
            result = workload.run(config, seed + r)
            runs.append([result[m] for m in metric_names])
            done += 1
            if progress:
                progress(done, total)
        means[index] = np.mean(runs, axis=0)
    # Noise: relative spread across fresh seeds at a few points; the median is robust to one odd point.
    cvs = []
    for index in noise_indices:
        config = {p.name: p.grid()[i] for p, i in zip(space.parameters, index)}
        runs = []
        for r in range(noise_repeats):
            result = workload.run(config, seed + 1000 + r)
            runs.append([result[m] for m in metric_names])
            done += 1
            if progress:
                progress(done, total)
        runs_arr = np.array(runs)
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
        "noise_points": len(noise_indices),
        "noise_repeats": noise_repeats,
    }
    return Twin(space, metric_names, means, noise_cv, provenance)


def load_or_measure_twin(
    space: TuningSpace,
    workload: Workload,
    *,
    seed: int,
    repeats: int = 1,
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
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
    twin = measure_twin(space, workload, seed=seed, repeats=repeats, progress=progress)
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
