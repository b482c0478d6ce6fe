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

from ..agent.checkpoint import Checkpoint, CheckpointError, CheckpointMismatch, make_checkpoint
from ..models.agent import AgentSettings
from ..models.run import RunAgentSettings
from ..ports.base import Foreign, NotFound, Unavailable
from .dqn_policy import DQNPolicy, restore_agent
from .store import ModelIndex, ModelStore, model_configmap_name, parameter_signature
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


class LearnedKeeper:
    """Keeps a learned-twin proposer's state: the twin's observations, its trust region and the planning DQN.

    Stored as one checkpoint of the planner's DQN whose metadata carries the learned twin (plain JSON), so the
    operator's model ConfigMaps hold both, and the index (`ModelIndex`) lets a profile with the same parameter
    names and types start from it (transfer across components and clusters)."""

    KIND = "learned-twin"

    def __init__(self, models: ModelStore | None, settings: RunAgentSettings) -> None:
        self.models, self.settings = models, settings
        self.index = None if models is None else ModelIndex(models.configs, models.namespace)

    def load(self, name: str, profile, learning) -> tuple[dict, Checkpoint] | None:
        """The stored state of this profile's own model, if it fits; `learning` says what happened either way."""
        if self.models is None:
            return None
        target = self.settings.warm_start or model_configmap_name(name)
        learning.model = model_configmap_name(name)
        try:
            checkpoint = self.models.load(target, profile_hash=profile.space_hash())
        except NotFound:
            learning.warm_start, learning.warm_start_message = "None", f"no stored model {target}; starting fresh"
            return None
        except CheckpointMismatch as error:
            learning.warm_start, learning.warm_start_message = "Incompatible", f"{error}; starting fresh"
            return None
        except (CheckpointError, Unavailable) as error:
            learning.warm_start, learning.warm_start_message = "Unreadable", f"{error}; starting fresh"
            return None
        meta = checkpoint.normalisation
        if meta.get("kind") != self.KIND:
            learning.warm_start = "Incompatible"
            learning.warm_start_message = (
                f"model {target} is a {meta.get('kind')} DQN of the previous strategy; starting fresh"
            )
            return None
        learning.warm_start = "Loaded"
        learning.warm_start_message = (
            f"model {target}: a learned twin of {len(meta.get('twin', {}).get('observations') or [])} observations, "
            f"its planner after {checkpoint.gradient_updates} updates"
        )
        return meta, checkpoint

    def similar(self, name: str, profile) -> tuple[dict, str] | None:
        """The stored learned twin of a profile with the same parameter names and types, and what it is."""
        if self.models is None or self.index is None:
            return None
        signature = parameter_signature(profile.parameters)
        candidates = [(None, {"model": self.settings.warm_start or model_configmap_name(name)})]
        try:
            candidates += self.index.similar(name, signature)
        except Unavailable:
            pass
        for other, entry in candidates:
            try:
                checkpoint = self.models.load(entry["model"], profile_hash=None)
            except (NotFound, CheckpointError, Unavailable, KeyError):
                continue
            meta = checkpoint.normalisation
            if meta.get("kind") == self.KIND and meta.get("signature") == signature and meta.get("space"):
                who = "this profile's model of an earlier parameter space" if other is None else f"profile {other}"
                count = len(meta.get("twin", {}).get("observations") or [])
                return meta, f"similar model {entry['model']} ({who}, {count} observations)"
        return None

    def save(self, name: str, profile, meta: dict, agent, learning) -> None:
        if self.models is None or not self.settings.persist_model or agent is None:
            return
        meta = {
            **meta,
            "kind": self.KIND,
            "signature": parameter_signature(profile.parameters),
            "space": [p.dump() for p in profile.parameters],
        }
        checkpoint = make_checkpoint(agent, profile_hash=profile.space_hash(), normalisation=meta, replay_sample=500)
        base = AgentSettings.model_validate(agent.settings.model_dump(include=set(AgentSettings.model_fields)))
        try:
            learning.model = self.models.save(name, dataclasses.replace(checkpoint, settings=base))
            learning.saved_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            learning.save_error = None
            if self.index is not None:
                self.index.record(
                    name, meta["signature"], learning.model, len(meta.get("twin", {}).get("observations") or [])
                )
        except (Unavailable, NotFound, Foreign) as error:
            if learning.save_error != str(error):
                log.warning("could not store the model of %s: %s", name, error)
            learning.save_error = str(error)
