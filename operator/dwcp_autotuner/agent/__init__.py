"""The DQN agent layer: settings, replay, Q-network, training loop and checkpoints.

The agent talks to environments only through :class:`~.protocol.Environment`.

Names are imported lazily: `models` embeds AgentSettings in the CRDs, and importing the models must
not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AgentSettings": "config",
    "Batch": "replay",
    "Checkpoint": "checkpoint",
    "CheckpointError": "checkpoint",
    "CheckpointMismatch": "checkpoint",
    "DQNAgent": "dqn",
    "Environment": "protocol",
    "EpisodeStats": "dqn",
    "QNetwork": "network",
    "ReplayBuffer": "replay",
    "TrainingResult": "dqn",
    "Transition": "protocol",
    "epsilon_at": "schedule",
    "from_bytes": "checkpoint",
    "load_checkpoint": "checkpoint",
    "make_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "td_target": "dqn",
    "to_bytes": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
