"""Exploration schedule: epsilon decays geometrically once per *episode*, down to a floor.

This is the original system's schedule. With the defaults (start 1.0, decay 0.995, floor 0.01)
epsilon is about 0.606 after 100 episodes, 0.367 after 200, 0.082 after 500 and reaches the floor
after 919 episodes.
"""

from __future__ import annotations


def epsilon_at(episode: int, start: float = 1.0, decay: float = 0.995, floor: float = 0.01) -> float:
    """Exploration rate for ``episode`` (0-based): ``max(floor, start * decay**episode)``."""
    if episode < 0:
        raise ValueError(f"episode must be >= 0, got {episode}")
    return max(floor, start * decay**episode)
