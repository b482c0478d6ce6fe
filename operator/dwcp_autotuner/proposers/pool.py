"""The run's proposer: one strategy per profile, chosen by what the profile has, warm-started and saved by a keeper.

- A profile with a built-in twin (`spec.twin`): `TwinPolicy` (pretrained on the measured twin);
  until its pretraining produced an agent (or if it failed), proposals come from online learning.
- A profile without a twin: `OnlineDQN`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..models.profile import ParameterProfileSpec
from ..models.run import LearningStatus, RunAgentSettings, TrainingStatus
from .base import NoProposal, Proposal, ProposalVerdict, Proposer
from .dqn_policy import DQNPolicy
from .keeper import ModelKeeper
from .online_dqn import OnlineDQN
from .store import ModelStore
from .twin_policy import TwinPolicy
from .workers import Workers


@dataclass
class _Entry:
    space_hash: str
    policy: DQNPolicy  # the profile's strategy
    online: OnlineDQN | None = None  # stands in while a twin policy has no agent


class AgentPool(Proposer):
    def __init__(
        self,
        settings: RunAgentSettings,
        *,
        cache_dir: Path | None = None,
        quick_twins: bool = True,
        models: ModelStore | None = None,
        workers: Workers | None = None,
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.keeper = ModelKeeper(models, settings)
        self.cache_dir, self.quick_twins = cache_dir, quick_twins
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def close(self) -> None:
        """Stop pretraining threads (after their current step): the run was deleted."""
        self._closed.set()

    def _entry(self, name: str, profile: ParameterProfileSpec) -> _Entry:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.space_hash != profile.space_hash():
                if profile.twin is not None:
                    policy: DQNPolicy = TwinPolicy(
                        name,
                        profile,
                        self.settings,
                        cache_dir=self.cache_dir,
                        quick_twins=self.quick_twins,
                        closed=self._closed,
                        workers=self.workers,
                    )
                    policy.on_trained = lambda p=policy: self.keeper.save(p)
                else:
                    policy = OnlineDQN(name, profile, self.settings)
                self.keeper.warm_start(policy)
                entry = _Entry(profile.space_hash(), policy)
                self._entries[name] = entry
            return entry

    def _acting(self, entry: _Entry) -> DQNPolicy:
        """The strategy that proposes and learns now: a twin policy once it has an agent, else online learning."""
        policy = entry.policy
        if isinstance(policy, TwinPolicy) and not policy.ready:
            if entry.online is None:
                entry.online = OnlineDQN(policy.name, policy.profile, self.settings)
                entry.online.learning = policy.learning
                entry.online.proposals, entry.online.tried, entry.online.holdout = (
                    policy.proposals,
                    policy.tried,
                    policy.holdout,
                )
            return entry.online
        return policy

    # --- the Proposer hooks ----------------------------------------------------------------------------
    def pretrain(self, profile_name: str, profile: ParameterProfileSpec) -> TrainingStatus | None:
        policy = self._entry(profile_name, profile).policy
        return policy.pretrain() if isinstance(policy, TwinPolicy) else None

    def propose(
        self, profile_name: str, profile: ParameterProfileSpec, stable: Mapping[str, object]
    ) -> Proposal | NoProposal | None:
        entry = self._entry(profile_name, profile)
        policy = self._acting(entry)
        if policy is not entry.policy:
            entry.policy.proposals += 1
        return policy.propose(stable)

    def decline(self, profile_name: str, profile: ParameterProfileSpec, config: Mapping[str, object]) -> None:
        self._acting(self._entry(profile_name, profile)).decline(config)

    def learn(self, profile_name: str, profile: ParameterProfileSpec, verdict: ProposalVerdict) -> None:
        entry = self._entry(profile_name, profile)
        policy = self._acting(entry)
        if policy.learn(verdict):
            self.keeper.save(policy)

    def learning_status(self, profile_name: str, profile: ParameterProfileSpec) -> LearningStatus:
        entry = self._entry(profile_name, profile)
        return self._acting(entry).status()

    def fine_tune(self, profile_name: str, profile: ParameterProfileSpec) -> str:
        policy = self._acting(self._entry(profile_name, profile))
        outcome = policy.fine_tune()
        if policy.agent is not None and not outcome.startswith("skipped"):
            self.keeper.save(policy)
        return outcome

    def set_exploration(self, profile_name: str, profile: ParameterProfileSpec, rate: float) -> None:
        """Raise (rate > 0) or restore (0) exploration: no proposal improved for a while."""
        entry = self._entry(profile_name, profile)
        entry.policy.boost = rate
        if entry.online is not None:
            entry.online.boost = rate

    def new_cycle(self, profile_name: str, profile: ParameterProfileSpec) -> None:
        """A re-optimization: configurations tried before may be good now (rolled-back ones stay blocked by the status)."""
        self._entry(profile_name, profile).policy.tried.clear()
