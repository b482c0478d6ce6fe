"""What the two DQN strategies share: the agent, the configurations tried, learning from production.

Learning from production: every verdict is a transition (promotion: +improvement; rollback: a
penalty) from the stable configuration's observation, with the first one-parameter move towards the
proposal as the action. One in five production transitions is held out of the replay buffer, to judge
fine-tunings. `fine_tune` trains a copy of the agent and deploys it only when it is better by more than
`agent.fineTuneMinGainPct` (`evaluate`: on the twin, or on the held-out production samples).
Configurations already tried in this run (this cycle, for continuous runs) are not proposed again: those
canaried to a verdict and those the controller declined (`decline`). A proposal whose tick was lost before its
canary started is not tried: asked again, the policy may give the same one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..agent.checkpoint import Checkpoint, CheckpointMismatch, make_checkpoint
from ..agent.dqn import DQNAgent
from ..agent.protocol import Transition
from ..canary.protocol import canonical_json
from ..models.agent import AgentSettings
from ..models.profile import ParameterProfileSpec
from ..models.run import LearningStatus, RunAgentSettings, TrainingStatus
from .base import NoProposal, Proposal, ProposalVerdict

HOLDOUT_EVERY = 5  # one production transition in five is held out of the replay buffer
PRODUCTION_LIMIT = 500
LEARNED_LIMIT = 200  # verdict keys remembered (in the stored model too), so a verdict is learned once


class DQNPolicy:
    """One profile's DQN strategy; subclasses say how a configuration is observed and what they propose."""

    kind = "dqn"

    def __init__(self, name: str, profile: ParameterProfileSpec, settings: RunAgentSettings) -> None:
        self.name, self.profile, self.settings = name, profile, settings
        self.space_hash = profile.space_hash()
        self.agent: DQNAgent | None = None
        self.proposals = 0
        self.tried: set[str] = set()
        self.learning = LearningStatus()
        self.holdout: list[Transition] = []
        self.boost = 0.0  # raised exploration rate (0: none)
        self.learned: list[str] = []  # verdict keys already learned from (a retried verdict is learned once)

    # --- the strategy's own parts -------------------------------------------------------------------
    def observation(self, config: Mapping[str, object]) -> np.ndarray:
        raise NotImplementedError

    def action_for(self, stable: Mapping[str, object], proposed: Mapping[str, object]) -> int | None:
        return first_move(self.profile, stable, proposed)

    def evaluate(self, agent: DQNAgent) -> float | None:
        """Larger is better; None when there is nothing to judge a policy on."""
        raise NotImplementedError

    def suggest(self, stable: Mapping[str, object]) -> Proposal | NoProposal | None:
        raise NotImplementedError

    def pretrain(self) -> TrainingStatus | None:
        return None

    # --- shared ---------------------------------------------------------------------------------------
    def restore(self, checkpoint: Checkpoint, meta: Mapping[str, object]) -> None:
        """Counters of a stored model (the weights are taken where the strategy's observation fits)."""
        self.proposals = int(meta.get("proposals", 0))
        for counter in ("samples", "model_updates", "deployed_updates"):
            setattr(self.learning, counter, int(meta.get(counter, 0)))
        self.holdout = transitions_from(meta.get("holdout"))
        self.learned = [str(k) for k in meta.get("learned") or []][-LEARNED_LIMIT:]

    def meta(self) -> dict:
        return {
            "kind": self.kind,
            "proposals": self.proposals,
            "samples": self.learning.samples,
            "model_updates": self.learning.model_updates,
            "deployed_updates": self.learning.deployed_updates,
            "holdout": transitions_to(self.holdout),
            "learned": list(self.learned),
        }

    def propose(self, stable: Mapping[str, object]) -> Proposal | NoProposal | None:
        self.tried.add(canonical_json(stable))
        self.proposals += 1
        return self.suggest(stable)

    def decline(self, config: Mapping[str, object]) -> None:
        self.tried.add(canonical_json(config))

    def learn(self, verdict: ProposalVerdict) -> bool:
        """Turn the verdict into a transition; False when nothing was learned (still pretraining, a repeat)."""
        self.tried.add(canonical_json(verdict.proposed))
        action = self.action_for(verdict.stable, verdict.proposed)
        key = verdict.key or f"#{verdict.number}"
        if self.agent is None or action is None or key in self.learned:
            return False
        self.learned = (self.learned + [key])[-LEARNED_LIMIT:]
        transition = Transition(
            self.observation(verdict.stable), action, float(verdict.reward), self.observation(verdict.proposed), True
        )
        self.learning.samples += 1
        if self.learning.samples % HOLDOUT_EVERY == 0:
            self.holdout = (self.holdout + [transition])[-PRODUCTION_LIMIT:]
        else:
            self.agent.observe(transition)
            if len(self.agent.replay) >= self.settings.batch_size:
                self.agent.update()
        return True

    def fine_tune(self) -> str:
        """Train a copy on the collected samples; deploy it only if measurably better. Returns the outcome."""
        agent = self.agent
        if agent is None or len(agent.replay) < self.settings.batch_size:
            outcome = "skipped: too few samples"
        else:
            candidate = restore_agent(
                make_checkpoint(agent, profile_hash=self.space_hash, replay_sample=len(agent.replay)), agent.settings
            )
            for _ in range(self.settings.fine_tune_updates):
                candidate.update()
            self.learning.model_updates += 1
            current, new = self.evaluate(agent), self.evaluate(candidate)
            if current is None or new is None:
                outcome, better = "kept: no held-out production samples to judge it", False
            else:
                what = "twin score" if self.kind == "twin" else "held-out accuracy"
                gain = (new - current) / max(abs(current), 1e-9) * 100.0
                better = gain > self.settings.fine_tune_min_gain_pct
                outcome = f"{'deployed' if better else 'kept'}: {what} {current:.4g} -> {new:.4g} ({gain:+.1f} %)"
            if better:
                self.agent = candidate
                self.learning.deployed_updates += 1
        self.learning.last_fine_tune = outcome
        return outcome

    def status(self) -> LearningStatus:
        if self.agent is not None:
            self.learning.gradient_updates = self.agent.gradient_updates
        return self.learning.model_copy()

    def holdout_error(self, agent: DQNAgent) -> float | None:
        """−MSE of the Q-value against the verdict on held-out production transitions."""
        if not self.holdout:
            return None
        q = agent.q_values(np.stack([t.obs for t in self.holdout]))
        predicted = q[np.arange(len(self.holdout)), [t.action for t in self.holdout]]
        return -float(np.mean((predicted - np.array([t.reward for t in self.holdout])) ** 2))


def normalised(profile: ParameterProfileSpec, config: Mapping[str, object]) -> np.ndarray:
    return np.array([p.normalize(config[p.name]) for p in profile.parameters], dtype=np.float32)


def first_move(
    profile: ParameterProfileSpec, stable: Mapping[str, object], proposed: Mapping[str, object]
) -> int | None:
    """The action (1 + 2j + down) of the largest normalised change from `stable` to `proposed`."""
    best, action = 0.0, None
    for j, p in enumerate(profile.parameters):
        if p.name not in stable or p.name not in proposed:
            continue
        delta = float(p.normalize(proposed[p.name])) - float(p.normalize(stable[p.name]))
        if abs(delta) > best:
            best, action = abs(delta), 1 + 2 * j + (1 if delta < 0 else 0)
    return action


def restore_agent(checkpoint: Checkpoint, settings: AgentSettings) -> DQNAgent:
    agent = DQNAgent(checkpoint.observation_size, checkpoint.action_count, settings)
    try:
        checkpoint.restore(agent)
    except CheckpointMismatch:  # other hidden sizes: keep the stored network's settings
        agent = checkpoint.to_agent()
    return agent


def transitions_to(transitions: list[Transition]) -> dict | None:
    if not transitions:
        return None
    return {
        "obs": np.stack([t.obs for t in transitions]).astype(np.float32),
        "action": np.array([t.action for t in transitions], dtype=np.int64),
        "reward": np.array([t.reward for t in transitions], dtype=np.float64),
        "next_obs": np.stack([t.next_obs for t in transitions]).astype(np.float32),
    }


def transitions_from(data) -> list[Transition]:
    if not data:
        return []
    return [
        Transition(o, int(a), float(r), n, True)
        for o, a, r, n in zip(data["obs"], data["action"], data["reward"], data["next_obs"])
    ]
