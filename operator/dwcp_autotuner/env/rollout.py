"""Rolling a policy out on an environment: the configurations it visits, for proposals and evaluations."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .tuning_env import TuningEnv


def visit(
    env: TuningEnv, act: Callable[[np.ndarray], int], observation: np.ndarray, steps: int | None = None
) -> Iterator[list[tuple[int, ...]]]:
    """Step `act`'s choices from `observation` for `steps` steps (default: an episode).

    Yields each component's grid index after every step."""
    for _ in range(env.steps_per_episode if steps is None else steps):
        observation, _, _ = env.step(act(observation))
        yield env.indices()
