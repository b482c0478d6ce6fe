"""The DQN that plans on the learned twin (Dyna style): it is trained on the twin's surface, never on live traffic.

After every verdict the planner takes a bounded number of gradient updates (and at most a bounded time) on
episodes simulated on the learned twin: an episode starts at the stable configuration (or a random point of
the trust region), one action moves one parameter one grid step up or down (or does nothing), and the reward
is the change of the optimistic score (the twin's upper confidence bound, relative to the stable score) minus a
small cost per move; a move out of the trust region, or onto a configuration whose pessimistic bound is not
safe, is refused and costs a penalty. The state is the seed's: every parameter's position plus the last two
optimistic scores relative to the stable one, so a twin that learns of a workload shift changes what the
agent sees. Real verdicts are transitions too (the first move towards the canary, its measured reward).

A proposal is the greedy policy's rollout from the stable configuration: the configurations it visits, of
which the proposer keeps the best that is safe and promising. The agent is warm-started across verdicts (the
same network keeps learning), and its gradient updates are counted in the run's status and the stored model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..agent.dqn import DQNAgent
from ..agent.protocol import Transition
from ..models.agent import AgentSettings

HISTORY = 2
MOVE_COST = 0.002
REFUSED_PENALTY = 0.05


@dataclass
class Surface:
    """What the planner sees of the learned twin at one moment (evaluated lazily, cached per grid point)."""

    sizes: np.ndarray
    stable: tuple[int, ...]
    radius: int
    evaluate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # indices (N, d) -> (optimistic, safe?)
    scale: float

    def __post_init__(self) -> None:
        self._cache: dict[tuple[int, ...], tuple[float, bool]] = {}

    def at(self, index: tuple[int, ...]) -> tuple[float, bool]:
        hit = self._cache.get(index)
        if hit is None:
            optimistic, safe = self.evaluate(np.array([index]))
            hit = (float(optimistic[0]), bool(safe[0]))
            self._cache[index] = hit
        return hit

    def preload(self, indices: np.ndarray) -> None:
        optimistic, safe = self.evaluate(indices)
        for index, o, s in zip(map(tuple, indices.astype(int)), optimistic, safe):
            self._cache[index] = (float(o), bool(s))

    def inside(self, index: tuple[int, ...]) -> bool:
        return all(0 <= i < n and abs(i - s) <= self.radius for i, n, s in zip(index, self.sizes, self.stable))


class PlanningEnv:
    """The learned twin as an environment (the agent's `Environment` protocol)."""

    def __init__(self, surface: Surface, rng: np.random.Generator) -> None:
        self.surface, self.rng = surface, rng
        self.d = len(surface.sizes)
        self.observation_size = self.d + HISTORY
        self.action_count = 1 + 2 * self.d
        self.base = surface.at(surface.stable)[0]
        self.index: tuple[int, ...] = surface.stable
        self.history = np.zeros(HISTORY, dtype=np.float32)

    def _relative(self, value: float) -> float:
        return float(np.clip((value - self.base) / max(abs(self.surface.scale), 1e-12), -5.0, 5.0))

    def observe(self) -> np.ndarray:
        position = np.asarray(self.index, dtype=np.float32) / np.maximum(self.surface.sizes - 1, 1)
        return np.concatenate([position, self.history]).astype(np.float32)

    def reset_to(self, index: tuple[int, ...]) -> np.ndarray:
        self.index = tuple(int(i) for i in index)
        self.history[:] = self._relative(self.surface.at(self.index)[0])
        return self.observe()

    def reset(self, seed: int | None = None) -> np.ndarray:
        if self.rng.random() < 0.3:  # sometimes start elsewhere in the trust region: see more of it
            low = np.maximum(np.array(self.surface.stable) - self.surface.radius, 0)
            high = np.minimum(np.array(self.surface.stable) + self.surface.radius, self.surface.sizes - 1)
            start = tuple(int(self.rng.integers(lo, hi + 1)) for lo, hi in zip(low, high))
            if self.surface.at(start)[1]:
                return self.reset_to(start)
        return self.reset_to(self.surface.stable)

    def move(self, action: int) -> tuple[int, ...]:
        if action == 0:
            return self.index
        j, down = divmod(action - 1, 2)
        index = list(self.index)
        index[j] += -1 if down else 1
        return tuple(index)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        before = self.surface.at(self.index)[0]
        target = self.move(action)
        reward = 0.0
        if target != self.index:
            if self.surface.inside(target) and self.surface.at(target)[1]:
                self.index = target
                reward -= MOVE_COST
            else:
                reward -= REFUSED_PENALTY  # out of the trust region, or not safe: refused, stays
        after = self.surface.at(self.index)[0]
        reward += (after - before) / max(abs(self.surface.scale), 1e-12)
        self.history[1:] = self.history[:-1]
        self.history[0] = self._relative(after)
        return self.observe(), float(reward), False


class Planner:
    def __init__(self, dimensions: int, settings: AgentSettings) -> None:
        self.settings = AgentSettings.model_validate(
            {
                **settings.model_dump(include=set(AgentSettings.model_fields)),
                "learning_starts": 0,
                "epsilon_start": 1.0,
                "epsilon_min": 0.1,
            }
        )
        self.agent = DQNAgent(dimensions + HISTORY, 1 + 2 * dimensions, self.settings)
        self.rng = np.random.default_rng(self.settings.seed + 17)

    @property
    def gradient_updates(self) -> int:
        return self.agent.gradient_updates

    def restore(self, checkpoint) -> None:
        """The stored planner's weights, optimiser and replay (a network of other shapes is left fresh)."""
        from ..agent.checkpoint import CheckpointMismatch

        try:
            checkpoint.restore(self.agent)
        except CheckpointMismatch:
            pass

    def remember(
        self, surface: Surface, stable: tuple[int, ...], action: int | None, reward: float, proposed: tuple[int, ...]
    ) -> None:
        """A real verdict as a transition: the first move from the stable configuration towards the canary."""
        if action is None:
            return
        env = PlanningEnv(surface, self.rng)
        obs = env.reset_to(stable)
        next_obs = env.reset_to(proposed)
        self.agent.observe(Transition(obs, action, float(reward), next_obs, True))

    def train(self, surface: Surface, updates: int, seconds: float | None = None, episode_steps: int = 12) -> int:
        """Dyna: simulated episodes on the surface, one gradient update every `train_frequency` steps; returns updates."""
        env = PlanningEnv(surface, self.rng)
        deadline = None if seconds is None else time.monotonic() + seconds
        done, steps, episode = 0, 0, 0
        batch = self.settings.batch_size
        while done < updates and (deadline is None or time.monotonic() < deadline):
            obs = env.reset()
            epsilon = max(0.1, 0.6 * 0.97**episode)
            for _ in range(episode_steps):
                action = self.agent.act(obs, epsilon)
                next_obs, reward, _ = env.step(action)
                self.agent.observe(Transition(obs, action, reward, next_obs, False))
                obs = next_obs
                steps += 1
                if len(self.agent.replay) >= batch and steps % self.settings.train_frequency == 0:
                    self.agent.update()
                    done += 1
                    if done >= updates:
                        break
            episode += 1
        return done

    def rollout(self, surface: Surface, steps: int) -> list[tuple[int, ...]]:
        """The greedy policy's path from the stable configuration: the configurations it visits."""
        env = PlanningEnv(surface, self.rng)
        obs = env.reset_to(surface.stable)
        visited = []
        for _ in range(steps):
            obs, _, _ = env.step(self.agent.greedy_action(obs))
            if env.index not in visited:
                visited.append(env.index)
        return visited
