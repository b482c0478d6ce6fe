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

Configurations already tried in this run (this cycle, for continuous runs) are not proposed again.

Learning from production (both kinds of agents): every verdict is a transition (promotion:
+improvement; rollback: a penalty) from the stable configuration's observation, with the first
one-parameter move towards the proposal as the action. One in five production transitions is held
out of the replay buffer, to judge fine-tunings. `fine_tune` (the controller calls it every
`agent.fineTuneIntervalSeconds`) trains a copy of the agent and deploys it only when it is better by
more than `agent.fineTuneMinGainPct` on the twin (best score reached by the greedy policy) or, without
a twin, on the held-out production samples (squared error of the Q-value against the verdict).

With a ModelStore (controller/persistence.py) the model is saved after every learning step, the
end of pretraining and every fine-tuning, and the stored model of the profile (or
`agent.warmStart`) is the warm start of the next agent: an operator restart or a new run goes on
from where the last one left. A stored model of another parameter space is refused, visibly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
import dataclasses
from pathlib import Path

import numpy as np

from ..agent.checkpoint import Checkpoint, CheckpointError, CheckpointMismatch, make_checkpoint
from ..agent.config import AgentSettings
from ..agent.dqn import DQNAgent
from ..agent.protocol import Transition
from ..agent.schedule import epsilon_at
from ..env.tuning_env import Component, TuningEnv
from ..env.twin import Twin, load_or_measure_twin
from ..models.profile import ParameterProfileSpec
from ..models.run import LearningStatus, RunAgentSettings, TrainingStatus
from ..ports.base import NotFound, Unavailable
from ..workloads import make_workload
from .persistence import ModelStore, model_configmap_name
from .run import Proposal, canonical_json

REPLAY_SAMPLE = 1000  # transitions kept in a stored model (39 observations: ~330 KB before compression)
HOLDOUT_EVERY = 5  # one production transition in five is held out of the replay buffer
PRODUCTION_LIMIT = 500

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
    checkpoint: Checkpoint | None = None  # the warm start, until an agent takes it
    learning: LearningStatus = field(default_factory=LearningStatus)
    holdout: list[Transition] = field(default_factory=list)
    boost: float = 0.0  # raised exploration rate (0: none)


class AgentPool:
    """Implements the controller's Proposer for one run."""

    def __init__(
        self, settings: RunAgentSettings, *, cache_dir: Path | None = None, quick_twins: bool = True, models: ModelStore | None = None
    ) -> None:
        self.settings = settings
        self.models = models
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
                self._warm_start(name, profile, entry)
            return entry

    # --- persistence ------------------------------------------------------------------------------
    def _warm_start(self, name: str, profile: ParameterProfileSpec, entry: _ProfileAgent) -> None:
        if self.models is None:
            return
        target = self.settings.warm_start or model_configmap_name(name)
        entry.learning.model = model_configmap_name(name)
        try:
            checkpoint = self.models.load(target, profile_hash=entry.space_hash)
        except NotFound:
            entry.learning.warm_start, entry.learning.warm_start_message = "None", f"no stored model {target}; starting fresh"
            return
        except CheckpointMismatch as error:
            entry.learning.warm_start, entry.learning.warm_start_message = "Incompatible", f"{error}; starting fresh"
            return
        except (CheckpointError, Unavailable) as error:
            entry.learning.warm_start, entry.learning.warm_start_message = "Unreadable", f"{error}; starting fresh"
            return
        meta = checkpoint.normalisation
        entry.checkpoint = checkpoint
        entry.proposals = int(meta.get("proposals", 0))
        for counter in ("samples", "model_updates", "deployed_updates"):
            setattr(entry.learning, counter, int(meta.get(counter, 0)))
        entry.holdout = _transitions_from(meta.get("holdout"))
        if meta.get("kind") == "online" and profile.twin is None:
            entry.agent = _restore(checkpoint, self.settings)
            entry.checkpoint = None
        entry.learning.warm_start = "Loaded"
        entry.learning.warm_start_message = (
            f"model {target} ({meta.get('kind')}, {checkpoint.gradient_updates} updates, {entry.learning.samples} production samples)"
        )

    def _save(self, name: str, entry: _ProfileAgent) -> None:
        if self.models is None or not self.settings.persist_model or entry.agent is None:
            return
        meta = {
            "kind": "twin" if entry.twin is not None else "online",
            "proposals": entry.proposals,
            "samples": entry.learning.samples,
            "model_updates": entry.learning.model_updates,
            "deployed_updates": entry.learning.deployed_updates,
            "holdout": _transitions_to(entry.holdout),
        }
        checkpoint = make_checkpoint(entry.agent, profile_hash=entry.space_hash, normalisation=meta, replay_sample=REPLAY_SAMPLE)
        # The run's settings carry run-only fields (episodes, warmStart, …) a checkpoint does not know.
        base = AgentSettings.model_validate(entry.agent.settings.model_dump(include=set(AgentSettings.model_fields)))
        try:
            entry.learning.model = self.models.save(name, dataclasses.replace(checkpoint, settings=base))
            entry.learning.saved_at = _utc_now()
        except (Unavailable, NotFound) as error:  # learning goes on; the next save retries
            log.warning("could not store the model of %s: %s", name, error)

    def learning_status(self, profile_name: str, profile: ParameterProfileSpec) -> LearningStatus:
        entry = self._entry(profile_name, profile)
        if entry.agent is not None:
            entry.learning.gradient_updates = entry.agent.gradient_updates
        return entry.learning.model_copy()

    def set_exploration(self, profile_name: str, profile: ParameterProfileSpec, rate: float) -> None:
        """Raise (rate > 0) or restore (0) exploration: no proposal improved for a while."""
        self._entry(profile_name, profile).boost = rate

    def new_cycle(self, profile_name: str, profile: ParameterProfileSpec) -> None:
        """A re-optimization: configurations tried before may be good now (rolled-back ones stay blocked by the status)."""
        self._entry(profile_name, profile).tried.clear()

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
            warm = entry.checkpoint
            if warm is not None and (warm.observation_size, warm.action_count) == (env.observation_size, env.action_count):
                agent = _restore(warm, self.settings)  # the stored model: no pretraining from scratch
                entry.progress = entry.progress.model_copy(update={"message": f"warm start: {entry.learning.warm_start_message}"})
            else:
                agent.train(env, on_episode=on_episode, should_stop=self._closed.is_set, torch_threads=1)
            entry.checkpoint = None
            entry.agent, entry.env, entry.twin = agent, env, twin
            self._save(name, entry)
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
        ranked = sorted(visited.items(), key=lambda item: -item[1])
        if entry.boost > 0 and agent.action_rng.random() < entry.boost:
            agent.action_rng.shuffle(ranked)  # raised exploration: any improving configuration, not the best first
        for index, score in ranked:
            config = twin.config_at(index)
            if score <= stable_score or canonical_json(config) in entry.tried:
                continue
            entry.tried.add(canonical_json(config))
            expected = None if stable_score == 0 else (score - stable_score) / abs(stable_score) * 100.0
            confidence = _twin_confidence(twin, stable_index, index, agent.action_rng)
            return Proposal(
                config=config,
                expected_improvement_pct=None if expected is None else round(expected, 3),
                confidence=confidence,
                reason=(
                    f"greedy policy on the {twin.provenance.get('workload')} twin: score {score:.4g} vs stable {stable_score:.4g}; "
                    f"better in {confidence:.0%} of noisy twin samples"
                ),
            )
        return None

    def _propose_online(self, profile: ParameterProfileSpec, entry: _ProfileAgent, stable: Mapping[str, object]) -> Proposal | None:
        params = profile.parameters
        if entry.agent is None:
            entry.agent = DQNAgent(len(params), 1 + 2 * len(params), self.settings)
        agent = entry.agent
        observation = _normalised(profile, stable)
        s = self.settings
        epsilon = max(epsilon_at(entry.proposals - 1, s.epsilon_start, s.epsilon_decay, s.epsilon_min), entry.boost)
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
            expected, confidence = _q_estimate(q_values, action, entry.learning.samples)
            return Proposal(
                config=config,
                expected_improvement_pct=expected,
                confidence=confidence,
                reason=f"{parameter.name} {'−' if down else '+'}1 step ({'explore' if epsilon > 0.5 else 'exploit'}, ε={epsilon:.2f})",
            )
        return None

    # --- learning -----------------------------------------------------------------------------------
    def learn(self, profile_name: str, profile: ParameterProfileSpec, stable: Mapping[str, object], proposed: Mapping[str, object], reward: float) -> None:
        entry = self._entry(profile_name, profile)
        key = canonical_json(proposed)
        entry.tried.add(key)
        action = entry.last_action.get(key) or _first_move(profile, stable, proposed)
        if entry.agent is None or action is None:
            return  # still pretraining, or the proposal is not a move of the tuned parameters
        agent = entry.agent
        if entry.twin is not None and entry.env is not None:
            obs, next_obs = entry.env.reset_to({profile_name: dict(stable)}), entry.env.reset_to({profile_name: dict(proposed)})
        else:
            obs, next_obs = _normalised(profile, stable), _normalised(profile, proposed)
        transition = Transition(obs, action, float(reward), next_obs, True)
        entry.learning.samples += 1
        if entry.learning.samples % HOLDOUT_EVERY == 0:
            entry.holdout = (entry.holdout + [transition])[-PRODUCTION_LIMIT:]
        else:
            agent.observe(transition)
            if len(agent.replay) >= self.settings.batch_size:
                agent.update()
        self._save(profile_name, entry)

    def fine_tune(self, profile_name: str, profile: ParameterProfileSpec) -> str:
        """Train a copy of the agent on the collected samples; deploy it only if measurably better. Returns the outcome."""
        entry = self._entry(profile_name, profile)
        agent = entry.agent
        if agent is None or len(agent.replay) < self.settings.batch_size:
            outcome = "skipped: too few samples"
        else:
            candidate = _restore(make_checkpoint(agent, profile_hash=entry.space_hash, replay_sample=len(agent.replay)), agent.settings)
            for _ in range(self.settings.fine_tune_updates):
                candidate.update()
            entry.learning.model_updates += 1
            current, new, what = self._evaluate(profile_name, entry, agent), self._evaluate(profile_name, entry, candidate), ""
            if current is None or new is None:
                outcome, better = "kept: no held-out production samples to judge it", False
            else:
                what = "twin score" if entry.twin is not None else "held-out accuracy"
                gain = (new - current) / max(abs(current), 1e-9) * 100.0
                better = gain > self.settings.fine_tune_min_gain_pct
                outcome = f"{'deployed' if better else 'kept'}: {what} {current:.4g} -> {new:.4g} ({gain:+.1f} %)"
            if better:
                entry.agent = candidate
                entry.learning.deployed_updates += 1
            self._save(profile_name, entry)
        entry.learning.last_fine_tune = outcome
        return outcome

    def _evaluate(self, name: str, entry: _ProfileAgent, agent: DQNAgent) -> float | None:
        """Larger is better: the best twin score the greedy policy reaches, or −MSE on held-out verdicts."""
        if entry.twin is not None and entry.env is not None:
            scores = entry.twin.score_grid()
            observation = entry.env.reset_to({})
            best = float(scores[entry.env.indices()[0]])
            for _ in range(entry.env.steps_per_episode):
                observation, _, _ = entry.env.step(agent.greedy_action(observation))
                best = max(best, float(scores[entry.env.indices()[0]]))
            return best
        if not entry.holdout:
            return None
        q = agent.q_values(np.stack([t.obs for t in entry.holdout]))
        predicted = q[np.arange(len(entry.holdout)), [t.action for t in entry.holdout]]
        return -float(np.mean((predicted - np.array([t.reward for t in entry.holdout])) ** 2))


def _normalised(profile: ParameterProfileSpec, config: Mapping[str, object]) -> np.ndarray:
    return np.array([p.normalize(config[p.name]) for p in profile.parameters], dtype=np.float32)


def _first_move(profile: ParameterProfileSpec, stable: Mapping[str, object], proposed: Mapping[str, object]) -> int | None:
    """The action (1 + 2j + down) of the largest normalised change from `stable` to `proposed`."""
    best, action = 0.0, None
    for j, p in enumerate(profile.parameters):
        if p.name not in stable or p.name not in proposed:
            continue
        delta = float(p.normalize(proposed[p.name])) - float(p.normalize(stable[p.name]))
        if abs(delta) > best:
            best, action = abs(delta), 1 + 2 * j + (1 if delta < 0 else 0)
    return action


def _restore(checkpoint: Checkpoint, settings: AgentSettings) -> DQNAgent:
    agent = DQNAgent(checkpoint.observation_size, checkpoint.action_count, settings)
    try:
        checkpoint.restore(agent)
    except CheckpointMismatch:  # other hidden sizes: keep the stored network's settings
        agent = checkpoint.to_agent()
    return agent


def _q_estimate(q_values: np.ndarray, action: int, samples: int) -> tuple[float, float]:
    """Expected improvement (Q predicts the verdict's reward, a fraction) and a confidence in [0, 1].

    The confidence is the Q-margin of the action over the no-op, in units of the spread of the
    Q-values, squashed to (0, 1) and discounted by how few production verdicts the agent has seen.
    """
    q = np.asarray(q_values, dtype=np.float64)
    spread = float(np.std(q)) + 1e-9
    margin = (float(q[action]) - float(q[0])) / spread
    certainty = 1.0 / (1.0 + np.exp(-margin))
    evidence = 1.0 - np.exp(-samples / 5.0)
    return round(float(q[action]) * 100.0, 3), round(float(certainty * evidence), 4)


def _twin_confidence(twin: Twin, stable: tuple[int, ...], candidate: tuple[int, ...], rng: np.random.Generator, draws: int = 200) -> float:
    """Share of paired noisy twin samples in which the candidate's objective beats the stable one's."""
    space = twin.space

    def objective(index: tuple[int, ...]) -> np.ndarray:
        rows = twin.means[index] * (1.0 + twin.noise_cv * rng.standard_normal((draws, len(twin.metric_names))))
        return np.array([space.objective_value(dict(zip(twin.metric_names, row))) for row in rows])

    return round(float(np.mean(objective(candidate) > objective(stable))), 4)


def _transitions_to(transitions: list[Transition]) -> dict | None:
    if not transitions:
        return None
    return {
        "obs": np.stack([t.obs for t in transitions]).astype(np.float32),
        "action": np.array([t.action for t in transitions], dtype=np.int64),
        "reward": np.array([t.reward for t in transitions], dtype=np.float64),
        "next_obs": np.stack([t.next_obs for t in transitions]).astype(np.float32),
    }


def _transitions_from(data: dict | None) -> list[Transition]:
    if not data:
        return []
    return [Transition(o, int(a), float(r), n, True) for o, a, r, n in zip(data["obs"], data["action"], data["reward"], data["next_obs"])]


def _utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
