"""A synthetic environment with a known optimum, for the agent's tests and the training-speed benchmark.

Not a DWCP workload: a grid walk on a bowl that costs microseconds per step, so that what is measured
or tested is the agent (does it learn to walk straight to the optimum; how fast are its updates).
"""

from __future__ import annotations

import numpy as np


class GridBowl:
    """Walk a grid one step per action towards the interior optimum of a bowl.

    Action 0 is a no-op; action 1 + 2j moves parameter j up, 2 + 2j down (clipped at the edges), the
    same action layout as the DWCP tuning environment. Observation: positions normalised to [0, 1].
    Reward: minus the grid (L1) distance to the optimum, normalised by the grid width, so the best
    policy walks straight there and stays. (A squared distance flattens near the optimum; the last
    step then needs far longer training.) Never `done`, like the tuning environment.
    """

    def __init__(self, dims: int = 3, levels: int = 9, optimum: tuple[int, ...] | np.ndarray | None = None) -> None:
        self.dims, self.levels = dims, levels
        self.optimum = np.array(optimum if optimum is not None else [levels // 2 + (j % 3) - 1 for j in range(dims)])
        if self.optimum.shape != (dims,) or self.optimum.min() < 0 or self.optimum.max() >= levels:
            raise ValueError(f"optimum must be {dims} grid indices in [0, {levels - 1}]")
        self.observation_size = dims
        self.action_count = 1 + 2 * dims
        self.position = np.zeros(dims, dtype=np.int64)

    @classmethod
    def random_interior(cls, dims: int, levels: int, seed: int) -> GridBowl:
        """A bowl whose optimum is drawn from the middle half of every axis."""
        rng = np.random.default_rng(seed)
        return cls(dims, levels, rng.integers(levels // 4, levels - levels // 4, size=dims))

    def _observe(self) -> np.ndarray:
        return (self.position / (self.levels - 1)).astype(np.float32)

    def distance(self) -> int:
        return int(np.abs(self.position - self.optimum).sum())

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.position[:] = np.random.default_rng(seed).integers(0, self.levels, self.dims)
        return self._observe()

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        if action:
            j, down = divmod(action - 1, 2)
            self.position[j] = min(max(self.position[j] + (-1 if down else 1), 0), self.levels - 1)
        return self._observe(), -self.distance() / (self.levels - 1), False
