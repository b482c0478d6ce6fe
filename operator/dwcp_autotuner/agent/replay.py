"""Experience replay: a preallocated numpy ring buffer with uniform sampling.

Storage is five flat arrays (no per-transition Python objects). ``sample`` can gather straight
into caller-owned batch arrays (``out=``), which the agent wraps once as torch tensors; a gradient
update then allocates nothing for its inputs.

State dicts describe a ring: arrays of length ``size`` plus ``capacity`` and ``position`` (the slot
the next write goes to). Chronological order is ``[position, size) + [0, position)`` when
``size == capacity`` and ``[0, size)`` otherwise. A state dict can be loaded into a buffer of a
different capacity: the newest transitions that fit are kept, in order.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

REPLAY_KEYS = ("obs", "action", "reward", "next_obs", "done")


class Batch(NamedTuple):
    """A sampled mini-batch (``done`` and ``reward`` are float32 so they enter arithmetic as-is)."""

    obs: np.ndarray  # (B, observation_size) float32
    action: np.ndarray  # (B,) int64
    reward: np.ndarray  # (B,) float32
    next_obs: np.ndarray  # (B, observation_size) float32
    done: np.ndarray  # (B,) float32, 1.0 where the episode terminated


def empty_batch(batch_size: int, observation_size: int) -> Batch:
    """Preallocated arrays for ``ReplayBuffer.sample(..., out=...)``."""
    return Batch(
        obs=np.zeros((batch_size, observation_size), dtype=np.float32),
        action=np.zeros(batch_size, dtype=np.int64),
        reward=np.zeros(batch_size, dtype=np.float32),
        next_obs=np.zeros((batch_size, observation_size), dtype=np.float32),
        done=np.zeros(batch_size, dtype=np.float32),
    )


class ReplayBuffer:
    """Fixed-capacity FIFO of transitions; the oldest is overwritten once full."""

    def __init__(self, capacity: int, observation_size: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if observation_size < 1:
            raise ValueError(f"observation_size must be >= 1, got {observation_size}")
        self.capacity = capacity
        self.observation_size = observation_size
        self.obs = np.zeros((capacity, observation_size), dtype=np.float32)
        self.action = np.zeros(capacity, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.next_obs = np.zeros((capacity, observation_size), dtype=np.float32)
        self.done = np.zeros(capacity, dtype=np.float32)
        self.position = 0  # slot of the next write
        self.size = 0  # transitions held

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, done: bool) -> None:
        """Store one transition. The counters move only after every field is written."""
        i = self.position
        self.obs[i] = obs
        self.action[i] = action
        self.reward[i] = reward
        self.next_obs[i] = next_obs
        self.done[i] = done
        self.position = i + 1 if i + 1 < self.capacity else 0
        if self.size < self.capacity:
            self.size += 1

    def sample(self, batch_size: int, rng: np.random.Generator, out: Batch | None = None) -> Batch:
        """Uniformly sample ``batch_size`` transitions (with replacement).

        With ``out`` the rows are gathered into those arrays (no allocation) and ``out`` is returned.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=batch_size)
        if out is None:
            return Batch(self.obs[idx], self.action[idx], self.reward[idx], self.next_obs[idx], self.done[idx])
        np.take(self.obs, idx, axis=0, out=out.obs)
        np.take(self.action, idx, out=out.action)
        np.take(self.reward, idx, out=out.reward)
        np.take(self.next_obs, idx, axis=0, out=out.next_obs)
        np.take(self.done, idx, out=out.done)
        return out

    # --- persistence ---------------------------------------------------------------------------

    def _chronological(self) -> np.ndarray:
        """Slot indices from oldest to newest."""
        if self.size < self.capacity:
            return np.arange(self.size)
        return (np.arange(self.capacity) + self.position) % self.capacity

    def state_dict(self) -> dict[str, Any]:
        """Exact copy of the buffer (same slots, so sampling after a reload is reproducible)."""
        n = self.size
        state: dict[str, Any] = {key: getattr(self, key)[:n].copy() for key in REPLAY_KEYS}
        state.update(capacity=self.capacity, position=self.position, size=n)
        return state

    def sample_for_checkpoint(self, k: int) -> dict[str, Any]:
        """The newest ``min(k, len(self))`` transitions, oldest first, as a state dict.

        This is what checkpoints persist: bounded (a ConfigMap holds about 1 MiB), and recent
        experience is what a resumed run needs to keep its updates stable.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        idx = self._chronological()[max(0, self.size - k) :]
        n = len(idx)
        state: dict[str, Any] = {key: getattr(self, key)[idx] for key in REPLAY_KEYS}
        state.update(capacity=n, position=0, size=n)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with ``state`` (from ``state_dict`` or ``sample_for_checkpoint``)."""
        size, capacity, position = int(state["size"]), int(state["capacity"]), int(state["position"])
        arrays = {key: np.asarray(state[key]) for key in REPLAY_KEYS}
        for key, array in arrays.items():
            if len(array) != size:
                raise ValueError(f"replay state {key!r} has {len(array)} rows, expected size={size}")
        for key in ("obs", "next_obs"):
            if size and arrays[key].shape[1:] != (self.observation_size,):
                raise ValueError(
                    f"replay state {key!r} has observation size {arrays[key].shape[1:]}, "
                    f"this buffer expects ({self.observation_size},)"
                )
        if capacity == self.capacity:  # exact restore: same slots, same write position
            for key, array in arrays.items():
                getattr(self, key)[:size] = array
            self.size, self.position = size, position
            return
        # Different capacity: keep the newest transitions that fit, oldest first.
        order = np.arange(size) if size < capacity else (np.arange(size) + position) % size
        order = order[max(0, size - self.capacity) :]
        n = len(order)
        for key, array in arrays.items():
            getattr(self, key)[:n] = array[order]
        self.size, self.position = n, n % self.capacity
