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
    twin_repeats: int  # seeds averaged per grid point of a twin


# The default is the original system's budget: 1000 episodes x 500 steps, epsilon x0.995 per
# episode with floor 0.01 (it reported 14.7 h for this; here it takes minutes, see bench/).
DEFAULT = Budget(
    episodes=1000, steps_per_episode=500, epsilon_decay=0.995, verify_samples=20, quick_workloads=False, twin_repeats=3
)
# --quick: fewer, shorter episodes, a faster decay so exploration still ends, smaller workload data.
QUICK = Budget(
    episodes=150, steps_per_episode=120, epsilon_decay=0.97, verify_samples=10, quick_workloads=True, twin_repeats=1
)
