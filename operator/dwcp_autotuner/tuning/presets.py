"""Training budgets for `tune`: the default fits in 15 minutes on 2 cores, --quick in 2 (see bench/ and the README)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    episodes: int
    steps_per_episode: int
    epsilon_decay: float
    verify_samples: int
    quick_workloads: bool


# The default keeps the original system's epsilon schedule (×0.995 per episode, floor 0.01).
DEFAULT = Budget(episodes=600, steps_per_episode=300, epsilon_decay=0.995, verify_samples=20, quick_workloads=False)
# --quick: fewer, shorter episodes, a faster decay so exploration still ends, smaller workload data.
QUICK = Budget(episodes=150, steps_per_episode=120, epsilon_decay=0.97, verify_samples=10, quick_workloads=True)
