"""Keeping a profile's DQN model across runs and restarts: the warm start, and saving after every learning step.

Persistence is kept apart from proposing: a strategy knows nothing of ConfigMaps; the keeper loads the
stored model (`<profile>-model`, or `agent.warmStart`) into a fresh strategy and saves the strategy's
agent with its counters (`proposers/store.py` holds the storage format). A stored model of another
parameter space is refused, visibly (`status.learning[p].warmStart`, the WarmStarted condition).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from ..agent.checkpoint import CheckpointError, CheckpointMismatch, make_checkpoint
from ..models.agent import AgentSettings
from ..models.run import RunAgentSettings
from ..ports.base import Foreign, NotFound, Unavailable
from .dqn_policy import DQNPolicy, restore_agent
from .store import ModelStore, model_configmap_name
from .twin_policy import TwinPolicy

REPLAY_SAMPLE = 1000  # transitions kept in a stored model (39 observations: ~330 KB before compression)

log = logging.getLogger(__name__)


class ModelKeeper:
    def __init__(self, models: ModelStore | None, settings: RunAgentSettings) -> None:
        self.models, self.settings = models, settings

    def warm_start(self, policy: DQNPolicy) -> None:
        """Load the stored model into `policy` (its counters always; its weights where the observation fits)."""
        if self.models is None:
            return
        learning = policy.learning
        target = self.settings.warm_start or model_configmap_name(policy.name)
        learning.model = model_configmap_name(policy.name)
        try:
            checkpoint = self.models.load(target, profile_hash=policy.space_hash)
        except NotFound:
            learning.warm_start, learning.warm_start_message = "None", f"no stored model {target}; starting fresh"
            return
        except CheckpointMismatch as error:
            learning.warm_start, learning.warm_start_message = "Incompatible", f"{error}; starting fresh"
            return
        except (CheckpointError, Unavailable) as error:
            learning.warm_start, learning.warm_start_message = "Unreadable", f"{error}; starting fresh"
            return
        meta = checkpoint.normalisation
        policy.restore(checkpoint, meta)
        if isinstance(policy, TwinPolicy):
            policy.warm = checkpoint  # taken by pretraining when the twin's observation fits
        elif meta.get("kind") == policy.kind:
            policy.agent = restore_agent(checkpoint, self.settings)
        learning.warm_start = "Loaded"
        learning.warm_start_message = (
            f"model {target} ({meta.get('kind')}, {checkpoint.gradient_updates} updates, "
            f"{learning.samples} production samples)"
        )

    def save(self, policy: DQNPolicy) -> None:
        if self.models is None or not self.settings.persist_model or policy.agent is None:
            return
        checkpoint = make_checkpoint(
            policy.agent, profile_hash=policy.space_hash, normalisation=policy.meta(), replay_sample=REPLAY_SAMPLE
        )
        # The run's settings carry run-only fields (episodes, warmStart, …) a checkpoint does not know.
        base = AgentSettings.model_validate(policy.agent.settings.model_dump(include=set(AgentSettings.model_fields)))
        try:
            policy.learning.model = self.models.save(policy.name, dataclasses.replace(checkpoint, settings=base))
            policy.learning.saved_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            policy.learning.save_error = None
        except (Unavailable, NotFound, Foreign) as error:  # learning goes on; the next save retries
            if policy.learning.save_error != str(error):
                log.warning("could not store the model of %s: %s", policy.name, error)
            policy.learning.save_error = str(error)
