"""The reinforcement-learning environment: parameter grids of one or more components, stepped one action at a time.

- Actions: 0 is a no-op; then, for each parameter j of each component in order, action 1+2j steps it
  up and 2+2j steps it down (one grid step, clipped at the hard bounds). The three DWCP profiles
  give 9 parameters, so 18 moves + the no-op = 19 actions.
- State: every parameter's position in its bounds (normalised to [0, 1]) followed by the last
  `history` measurements of every metric, each as its relative change against the component's
  default configuration (clipped to ±5, so one outlier cannot dominate the input). The three DWCP
  profiles give 9 + 2 × 15 = 39 dimensions with the default history of 2.
- Episodes: `steps_per_episode` is the length the trainer truncates episodes at and the length
  of a greedy proposal rollout; `step` never reports `done` (no state is terminal).
- Reward per step, summed over components: (objective after − objective before) / |baseline score|
  − change_cost for a move − soft-constraint penalty of the new configuration / |baseline score|.
  The objective changes telescope over an episode, so the return rewards reaching a good
  configuration; the penalty is paid for every step spent in violation; the change cost stops
  pointless churn (each change is a rollout in production).

Measurements come from twins (noisy samples of the measured surface), so a step costs microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.space import ParamValue, TuningSpace
from .twin import Twin

METRIC_CLIP = 5.0


@dataclass(frozen=True)
class Component:
    """One tunable component inside the environment."""

    name: str
    space: TuningSpace
    twin: Twin


@dataclass(frozen=True)
class ActionMeaning:
    component: str | None
    parameter: str | None
    direction: int  # +1 up, -1 down, 0 no-op

    def __str__(self) -> str:
        if self.component is None:
            return "no-op"
        return f"{self.component}.{self.parameter} {'+' if self.direction > 0 else '-'}"


class TuningEnv:
    """Environment over the joint grid of several components (they share one agent)."""

    def __init__(
        self,
        components: list[Component],
        *,
        steps_per_episode: int = 500,
        history: int = 2,
        change_cost: float = 0.002,
        random_start_probability: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not components:
            raise ValueError("at least one component is needed")
        self.components = components
        self.steps_per_episode = steps_per_episode
        self.history = history
        self.change_cost = change_cost
        self.random_start_probability = random_start_probability
        self.rng = np.random.default_rng(seed)

        # Flattened parameter table: (component index, parameter index within component).
        self._params: list[tuple[int, int]] = [
            (ci, pi) for ci, c in enumerate(components) for pi in range(len(c.space.parameters))
        ]
        self._grid_sizes = np.array([len(components[ci].space.parameters[pi].grid()) for ci, pi in self._params])
        # Precomputed normalised position of every grid value, so encoding a state is an index lookup.
        self._norm_tables = [
            np.array(
                [components[ci].space.parameters[pi].normalize(v) for v in components[ci].space.parameters[pi].grid()],
                dtype=np.float32,
            )
            for ci, pi in self._params
        ]
        self._baseline_index = [c.twin.baseline_index() for c in components]
        self._baseline_metrics = [c.twin.means[idx].copy() for c, idx in zip(components, self._baseline_index)]
        self._baseline_scale = np.array(
            [max(abs(float(c.twin.score_grid()[idx])), 1e-9) for c, idx in zip(components, self._baseline_index)]
        )
        self._metric_slices: list[slice] = []
        offset = 0
        for c in components:
            n = len(c.twin.metric_names)
            self._metric_slices.append(slice(offset, offset + n))
            offset += n
        self.metric_count = offset
        # Everything a step computes is linear algebra over one concatenated metric vector:
        # objectives = W @ metrics (one row per component); constraint violations from arrays.
        self._baseline_vector = np.concatenate(self._baseline_metrics)
        self._noise_vector = np.concatenate([c.twin.noise_cv for c in components])
        self._objective_weights = np.zeros((len(components), offset))
        rows: list[tuple] = []
        constraint_component: list[int] = []
        constraint_penalty: list[float] = []
        for ci, c in enumerate(components):
            names, sl = c.twin.metric_names, self._metric_slices[ci]
            for term in c.space.objective:
                sign = 1.0 if term.goal == "maximize" else -1.0
                self._objective_weights[ci, sl.start + names.index(term.metric)] += sign * term.weight / term.scale
            for constraint in c.space.constraints:
                k = len(constraint_component)  # this constraint's id: its limits share one "worst" violation
                constraint_component.append(ci)
                constraint_penalty.append(constraint.penalty)
                m = sl.start + names.index(constraint.metric)
                base = self._baseline_vector[m]
                # Each limit becomes (metric, upper, lower) with the relative-increase limit resolved
                # against the baseline once; violation = excess / |limit| (or / |baseline|), as in SoftConstraint.
                if constraint.max is not None:
                    rows.append((k, m, constraint.max, None, abs(constraint.max)))
                if constraint.min is not None:
                    rows.append((k, m, None, constraint.min, abs(constraint.min)))
                if constraint.max_increase_pct is not None:
                    rows.append((k, m, base * (1 + constraint.max_increase_pct / 100.0), None, abs(base)))
        self._constraint_rows = rows
        self._c_row_constraint = np.array([r[0] for r in rows], dtype=int)
        self._c_metric = np.array([r[1] for r in rows], dtype=int)
        self._c_upper = np.array([np.inf if r[2] is None else r[2] for r in rows])
        self._c_lower = np.array([-np.inf if r[3] is None else r[3] for r in rows])
        self._c_norm = np.maximum(np.array([r[4] for r in rows]), 1e-12)
        self._c_component = np.array(constraint_component, dtype=int)
        self._c_penalty = np.array(constraint_penalty)
        self._abs_baseline = np.maximum(np.abs(self._baseline_vector), 1e-9)
        # A step runs hundreds of thousands of times: the constraint bookkeeping as dense arrays instead of
        # ufunc.at (slow per call): each constraint's rows padded to one width (-inf never wins the max), and
        # penalties = (components × constraints) @ (penalty × worst violation).
        width = max((int(np.sum(self._c_row_constraint == k)) for k in range(len(constraint_component))), default=0)
        self._c_rows_of = np.full((len(constraint_component), max(width, 1)), len(rows), dtype=int)
        for k in range(len(constraint_component)):
            mine = np.flatnonzero(self._c_row_constraint == k)
            self._c_rows_of[k, : len(mine)] = mine
        self._c_matrix = np.zeros((len(components), len(constraint_component)))
        for k, ci in enumerate(constraint_component):
            self._c_matrix[ci, k] = self._c_penalty[k]
        self._excess = np.full(len(rows) + 1, -np.inf)  # the last slot is the padding
        self._c_single_row = width <= 1 and list(self._c_row_constraint) == list(range(len(rows)))
        # Each component's measured means flattened, read by one flat index per component.
        self._flat_means = [c.twin.means.reshape(-1, len(c.twin.metric_names)) for c in components]
        self._grid_shapes = [c.twin.grid_shape for c in components]
        self._mean = np.zeros(self.metric_count)
        # The normalised position of every grid value, padded into one table: the state's first part is one lookup.
        self._norm_table = np.zeros((len(self._params), int(self._grid_sizes.max())), dtype=np.float32)
        for j, table in enumerate(self._norm_tables):
            self._norm_table[j, : len(table)] = table
        self._param_rows = np.arange(len(self._params))
        self._flat_position = np.zeros(len(self._params), dtype=int)

        self.action_count = 1 + 2 * len(self._params)
        self.observation_size = len(self._params) + history * self.metric_count
        self._obs = np.zeros(self.observation_size, dtype=np.float32)
        self._indices: list[list[int]] = []
        self._history = np.zeros((history, self.metric_count), dtype=np.float32)
        self._last_objective = np.zeros(len(components))
        self._t = 0

    # --- helpers ----------------------------------------------------------------------------------
    def action_meaning(self, action: int) -> ActionMeaning:
        if action == 0:
            return ActionMeaning(None, None, 0)
        j, down = divmod(action - 1, 2)
        ci, pi = self._params[j]
        return ActionMeaning(
            self.components[ci].name, self.components[ci].space.parameters[pi].name, -1 if down else +1
        )

    def configs(self) -> dict[str, dict[str, ParamValue]]:
        """The current configuration of every component."""
        return {
            c.name: {p.name: p.grid()[i] for p, i in zip(c.space.parameters, self._indices[ci])}
            for ci, c in enumerate(self.components)
        }

    def indices(self) -> list[tuple[int, ...]]:
        return [tuple(ix) for ix in self._indices]

    # --- measurement --------------------------------------------------------------------------------
    def _set_mean(self, ci: int) -> None:
        """The measured mean metrics of component `ci`'s current configuration, into the step's mean vector."""
        flat_index = np.ravel_multi_index(self._indices[ci], self._grid_shapes[ci])
        self._mean[self._metric_slices[ci]] = self._flat_means[ci][flat_index]

    def _measure(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Noisy metrics of the current configuration; returns (metric vector, objectives, penalties).

        The mean vector is kept up to date by `step` and `reset` (only a move changes it)."""
        vector = self._mean * (1.0 + self._noise_vector * self.rng.standard_normal(self.metric_count))
        objectives = self._objective_weights @ vector
        if not self._constraint_rows:
            return vector, objectives, np.zeros(len(self.components))
        values = vector[self._c_metric]
        excess = (np.maximum(values - self._c_upper, 0.0) + np.maximum(self._c_lower - values, 0.0)) / self._c_norm
        if self._c_single_row:  # one limit per constraint (the built-in spaces): the worst is the one
            return vector, objectives, self._c_matrix @ excess
        self._excess[:-1] = excess
        worst = np.maximum(self._excess[self._c_rows_of].max(axis=1), 0.0)
        return vector, objectives, self._c_matrix @ worst

    def _relative(self, vector: np.ndarray) -> np.ndarray:
        out = (vector - self._baseline_vector) / self._abs_baseline
        return np.clip(out, -METRIC_CLIP, METRIC_CLIP, out=out).astype(np.float32)

    def _positions_from_indices(self) -> None:
        for j, (ci, pi) in enumerate(self._params):
            self._flat_position[j] = self._indices[ci][pi]

    def _observation(self) -> np.ndarray:
        obs = self._obs
        obs[: len(self._params)] = self._norm_table[self._param_rows, self._flat_position]
        obs[len(self._params) :] = self._history.reshape(-1)
        return obs.copy()

    # --- the Environment protocol -------------------------------------------------------------------
    def reset(self, seed: int | None = None, *, start: str | None = None) -> np.ndarray:
        """Start an episode at the default configuration or, for exploration, at a random grid point.

        `start` forces "default" or "random"; otherwise random_start_probability decides.
        """
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        use_random = start == "random" or (start is None and self.rng.random() < self.random_start_probability)
        self._indices = []
        for ci, c in enumerate(self.components):
            if use_random:
                self._indices.append([int(self.rng.integers(len(p.grid()))) for p in c.space.parameters])
            else:
                self._indices.append(list(self._baseline_index[ci]))
        self._t = 0
        self._positions_from_indices()
        for ci in range(len(self.components)):
            self._set_mean(ci)
        vector, objectives, _ = self._measure()
        self._history[:] = self._relative(vector)
        self._last_objective = objectives
        return self._observation()

    def reset_to(self, configs: dict[str, dict[str, ParamValue]]) -> np.ndarray:
        """Start an episode at given configurations (e.g. a live component's stable config); others at default."""
        self._indices = []
        for ci, c in enumerate(self.components):
            config = configs.get(c.name)
            self._indices.append(list(c.twin.index_of(config) if config else self._baseline_index[ci]))
        self._t = 0
        self._positions_from_indices()
        for ci in range(len(self.components)):
            self._set_mean(ci)
        vector, objectives, _ = self._measure()
        self._history[:] = self._relative(vector)
        self._last_objective = objectives
        return self._observation()

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        if not 0 <= action < self.action_count:
            raise ValueError(f"action {action} outside [0, {self.action_count})")
        moved = False
        if action:
            j, down = divmod(action - 1, 2)
            ci, pi = self._params[j]
            old = self._indices[ci][pi]
            new = min(max(old + (-1 if down else 1), 0), int(self._grid_sizes[j]) - 1)
            self._indices[ci][pi] = new
            self._flat_position[j] = new
            moved = new != old
            if moved:
                self._set_mean(ci)
        vector, objectives, penalties = self._measure()
        reward = float(np.sum((objectives - self._last_objective - penalties) / self._baseline_scale))
        if moved:
            reward -= self.change_cost
        self._last_objective = objectives
        if self.history > 1:
            self._history[1:] = self._history[:-1]
        self._history[0] = self._relative(vector)
        self._t += 1
        # Tuning has no terminal state: an episode only ends by truncation, which the trainer does
        # itself (and keeps bootstrapping through). Reporting the time limit as `done` would teach
        # the agent that the last step of every episode has no future.
        return self._observation(), reward, False
