"""The operator's agents: one per (run, profile), pretrained on the profile's twin when it has one.

Pretraining is heavy, so it runs in a background thread and the run's status shows its progress;
the operator's event loop keeps serving other runs and profiles meanwhile.

- A profile with a built-in twin (`spec.twin`) gets the twin of ITS space measured with the real
  workload (quick data, cached on disk), a DQN pretrained on it, and proposals made by a greedy
  rollout from the live stable configuration: the best configuration visited that has not been
  tried yet and that the twin scores above the stable one.
- A profile without a twin learns online: the state is the normalised stable configuration, one
  action moves one parameter by one step (epsilon-greedy, the epsilon schedule advancing per
  proposal), and every verdict is a transition (promotion: +improvement; rollback: a penalty).

Configurations already tried in this run are not proposed again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..agent.dqn import DQNAgent
from ..agent.protocol import Transition
from ..agent.schedule import epsilon_at
from ..env.tuning_env import Component, TuningEnv
from ..env.twin import Twin, load_or_measure_twin
from ..models.profile import ParameterProfileSpec
from ..models.run import RunAgentSettings, TrainingStatus
from ..workloads import make_workload
from .run import Proposal, canonical_json

log = logging.getLogger(__name__)


@dataclass
class _ProfileAgent:
    space_hash: str
    agent: DQNAgent | None = None
    env: TuningEnv | None = None
    twin: Twin | None = None
    thread: threading.Thread | None = None
    progress: TrainingStatus = field(default_factory=TrainingStatus)
    proposals: int = 0
    tried: set[str] = field(default_factory=set)
    last_action: dict[str, int] = field(default_factory=dict)  # candidate json -> action (online agents)


class AgentPool:
    """Implements the controller's Proposer for one run."""

    def __init__(self, settings: RunAgentSettings, *, cache_dir: Path | None = None, quick_twins: bool = True) -> None:
        self.settings = settings
        self.cache_dir = cache_dir
        self.quick_twins = quick_twins
        self._agents: dict[str, _ProfileAgent] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def close(self) -> None:
        """Stop pretraining threads (after their current step): the run was deleted."""
        self._closed.set()

    def _entry(self, name: str, profile: ParameterProfileSpec) -> _ProfileAgent:
        with self._lock:
            entry = self._agents.get(name)
            if entry is None or entry.space_hash != profile.space_hash():
                entry = _ProfileAgent(space_hash=profile.space_hash())
                self._agents[name] = entry
            return entry

    # --- pretraining ------------------------------------------------------------------------------
    def pretrain(self, profile_name: str, profile: ParameterProfileSpec) -> TrainingStatus | None:
        if profile.twin is None:
            return None
        entry = self._entry(profile_name, profile)
        if entry.thread is None:
            entry.progress = TrainingStatus(episodes=0, episodes_total=self.settings.episodes)
            entry.thread = threading.Thread(
                target=self._pretrain, args=(profile_name, profile, entry), name=f"pretrain-{profile_name}", daemon=True
            )
            entry.thread.start()
        return entry.progress.model_copy()

    def _pretrain(self, name: str, profile: ParameterProfileSpec, entry: _ProfileAgent) -> None:
        started = time.perf_counter()
        try:
            space = profile.tuning_space()
            workload = make_workload(profile.twin, quick=self.quick_twins)
            twin, _ = load_or_measure_twin(space, workload, seed=self.settings.seed, cache_dir=self.cache_dir)
            env = TuningEnv([Component(name, space, twin)], steps_per_episode=self.settings.steps_per_episode, seed=self.settings.seed)
            agent = DQNAgent(env.observation_size, env.action_count, self.settings)

            def on_episode(stats) -> None:
                entry.progress = TrainingStatus(
                    episodes=stats.episode + 1,
                    episodes_total=self.settings.episodes,
                    env_steps=stats.total_env_steps,
                    last_return=round(float(stats.episode_return), 6),
                    epsilon=round(float(stats.epsilon), 6),
                    wall_seconds=round(time.perf_counter() - started, 3),
                )

            if self._closed.is_set():
                return
            agent.train(env, on_episode=on_episode, should_stop=self._closed.is_set, torch_threads=1)
            entry.agent, entry.env, entry.twin = agent, env, twin
        except Exception as error:  # noqa: BLE001 — a failed pretraining degrades to online learning, visibly
            log.exception("pretraining %s failed", name)
            entry.progress = entry.progress.model_copy(update={"message": f"pretraining failed ({error}); learning online instead"})
        finally:
            entry.progress = entry.progress.model_copy(
                update={"episodes": self.settings.episodes, "wall_seconds": round(time.perf_counter() - started, 3)}
            )

    # --- proposals ----------------------------------------------------------------------------------
    def propose(self, profile_name: str, profile: ParameterProfileSpec, stable: Mapping[str, object]) -> Proposal | None:
        entry = self._entry(profile_name, profile)
        entry.tried.add(canonical_json(stable))
        entry.proposals += 1
        if entry.agent is not None and entry.env is not None and entry.twin is not None:
            return self._propose_from_twin(profile_name, entry, stable)
        return self._propose_online(profile, entry, stable)

    def _propose_from_twin(self, name: str, entry: _ProfileAgent, stable: Mapping[str, object]) -> Proposal | None:
        env, agent, twin = entry.env, entry.agent, entry.twin
        assert env is not None and agent is not None and twin is not None
        scores = twin.score_grid()
        stable_index = twin.index_of(stable)
        stable_score = float(scores[stable_index])
        observation = env.reset_to({name: dict(stable)})
        visited: dict[tuple[int, ...], float] = {}
        for _ in range(env.steps_per_episode):
            observation, _, _ = env.step(agent.greedy_action(observation))
            index = env.indices()[0]
            visited[index] = float(scores[index])
        for index, score in sorted(visited.items(), key=lambda item: -item[1]):
            config = twin.config_at(index)
            if score <= stable_score or canonical_json(config) in entry.tried:
                continue
            entry.tried.add(canonical_json(config))
            expected = None if stable_score == 0 else (score - stable_score) / abs(stable_score) * 100.0
            return Proposal(
                config=config,
                expected_improvement_pct=None if expected is None else round(expected, 3),
                reason=f"greedy policy on the {twin.provenance.get('workload')} twin: score {score:.4g} vs stable {stable_score:.4g}",
            )
        return None

    def _propose_online(self, profile: ParameterProfileSpec, entry: _ProfileAgent, stable: Mapping[str, object]) -> Proposal | None:
        params = profile.parameters
        if entry.agent is None:
            entry.agent = DQNAgent(len(params), 1 + 2 * len(params), self.settings)
        agent = entry.agent
        observation = _normalised(profile, stable)
        s = self.settings
        epsilon = epsilon_at(entry.proposals - 1, s.epsilon_start, s.epsilon_decay, s.epsilon_min)
        # Moves that change the configuration and were not tried, in the agent's order of preference.
        q_values = agent.q_values(observation)
        order = [int(a) for a in np.argsort(-q_values) if a != 0]
        if agent.action_rng.random() < epsilon:
            agent.action_rng.shuffle(order)
        for action in order:
            j, down = divmod(action - 1, 2)
            parameter = params[j]
            moved = parameter.move(stable[parameter.name], -1 if down else +1)
            if moved == stable[parameter.name]:
                continue
            config = dict(stable)
            config[parameter.name] = moved
            key = canonical_json(config)
            if key in entry.tried:
                continue
            entry.tried.add(key)
            entry.last_action[key] = action
            return Proposal(
                config=config,
                reason=f"{parameter.name} {'−' if down else '+'}1 step ({'explore' if epsilon > 0.5 else 'exploit'}, ε={epsilon:.2f})",
            )
        return None

    # --- learning -----------------------------------------------------------------------------------
    def learn(self, profile_name: str, profile: ParameterProfileSpec, stable: Mapping[str, object], proposed: Mapping[str, object], reward: float) -> None:
        entry = self._entry(profile_name, profile)
        entry.tried.add(canonical_json(proposed))
        action = entry.last_action.get(canonical_json(proposed))
        if entry.twin is not None or entry.agent is None or action is None:
            return  # twin-pretrained agents learn from production in a later step (see issue: continuous learning)
        agent = entry.agent
        agent.observe(Transition(_normalised(profile, stable), action, float(reward), _normalised(profile, proposed), True))
        if len(agent.replay) >= self.settings.batch_size:
            agent.update()


def _normalised(profile: ParameterProfileSpec, config: Mapping[str, object]) -> np.ndarray:
    return np.array([p.normalize(config[p.name]) for p in profile.parameters], dtype=np.float32)
