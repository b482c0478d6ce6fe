"""The only things the agent knows about an environment.

The agent never imports an environment implementation. Anything with these attributes and
methods can be trained on: the real tuning environment (``dwcp_autotuner.env``), the synthetic
grid walks used by the tests and the speed benchmark, or a recorded replay of production data.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Environment(Protocol):
    """A discrete-action environment with a flat float32 observation.

    ``done`` means the episode *terminated* (no bootstrapping from the next observation).
    Episode length limits are imposed by the trainer (``AgentSettings.steps_per_episode``), which
    treats hitting the limit as a truncation and still bootstraps; an environment should therefore
    not report ``done`` merely because a step budget ran out. Observations must be new arrays on
    every call (the agent keeps the previous one while stepping).
    """

    observation_size: int
    action_count: int

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode and return the first observation (float32, shape ``(observation_size,)``)."""
        ...

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        """Apply ``action`` (``0 <= action < action_count``); return observation, reward, done."""
        ...


class Transition(NamedTuple):
    """One environment step, as stored in the replay buffer."""

    obs: np.ndarray
    action: int
    reward: float
    next_obs: np.ndarray
    done: bool
