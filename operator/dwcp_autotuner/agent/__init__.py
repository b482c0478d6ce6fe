"""The DQN agent layer: replay, Q-network, training loop and checkpoints (settings: `models/agent.py`).

The agent talks to environments only through :class:`~.protocol.Environment`.
"""

from __future__ import annotations

from ..models.agent import AgentSettings
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointMismatch,
    from_bytes,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
    to_bytes,
)
from .dqn import DQNAgent, EpisodeStats, TrainingResult, td_target
from .network import QNetwork
from .protocol import Environment, Transition
from .replay import Batch, ReplayBuffer
from .schedule import epsilon_at

__all__ = [
    "AgentSettings",
    "Batch",
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatch",
    "DQNAgent",
    "Environment",
    "EpisodeStats",
    "QNetwork",
    "ReplayBuffer",
    "TrainingResult",
    "Transition",
    "epsilon_at",
    "from_bytes",
    "load_checkpoint",
    "make_checkpoint",
    "save_checkpoint",
    "td_target",
    "to_bytes",
]
