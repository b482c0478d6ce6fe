"""Strategy: a DQN pretrained on the profile's measured twin, proposing the best configuration its greedy policy visits.

For profiles with a built-in twin (`spec.twin`): the twin of the profile's space is measured with the
real workload (quick data, cached on disk), a DQN is pretrained on it in a background thread (the
operator keeps serving meanwhile; the run shows the episodes), and a proposal is the best configuration
a greedy rollout from the live stable configuration visits that has not been tried yet and that the
twin scores above the stable one. A failed pretraining leaves no agent: the pool falls back to online
learning, visibly.
"""

from __future__ import annotations

import concurrent.futures
import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..agent.checkpoint import Checkpoint, from_bytes
from ..agent.dqn import DQNAgent
from ..canary.protocol import canonical_json
from ..env.rollout import visit
from ..env.tuning_env import Component, TuningEnv
from ..env.twin import Twin, load_or_measure_twin
from ..models.profile import ParameterProfileSpec
from ..models.run import RunAgentSettings, TrainingStatus
from ..workloads import make_workload
from .base import Proposal
from .dqn_policy import DQNPolicy, restore_agent
from .workers import Workers, measure_twin_job, pretrain_job, read_progress

log = logging.getLogger(__name__)


class TwinPolicy(DQNPolicy):
    kind = "twin"

    def __init__(
        self,
        name: str,
        profile: ParameterProfileSpec,
        settings: RunAgentSettings,
        *,
        cache_dir: Path | None,
        quick_twins: bool,
        closed: threading.Event,
        workers: Workers | None = None,
    ) -> None:
        super().__init__(name, profile, settings)
        self.cache_dir, self.quick_twins, self.closed = cache_dir, quick_twins, closed
        self.workers = workers  # worker processes for the twin and the training (None: this thread)
        self.env: TuningEnv | None = None
        self.twin: Twin | None = None
        self.thread: threading.Thread | None = None
        self.progress = TrainingStatus()
        self.warm: Checkpoint | None = None  # a stored model, taken instead of pretraining when it fits
        self.on_trained = lambda: None  # the pool saves the model then

    @property
    def ready(self) -> bool:
        return self.agent is not None and self.env is not None and self.twin is not None

    def observation(self, config: Mapping[str, object]) -> np.ndarray:
        assert self.env is not None
        return self.env.reset_to({self.name: dict(config)})

    # --- pretraining ------------------------------------------------------------------------------------
    def pretrain(self) -> TrainingStatus:
        if self.thread is None:
            self.progress = TrainingStatus(episodes=0, episodes_total=self.settings.episodes)
            self.thread = threading.Thread(target=self._pretrain, name=f"pretrain-{self.name}", daemon=True)
            self.thread.start()
        return self.progress.model_copy()

    def _pretrain(self) -> None:
        if self.workers is not None and self.workers.processes > 0:
            self._pretrain_in_worker()
            return
        started = time.perf_counter()
        settings = self.settings
        try:
            space = self.profile.tuning_space()
            workload = make_workload(self.profile.twin, quick=self.quick_twins)
            twin, _ = load_or_measure_twin(space, workload, seed=settings.seed, cache_dir=self.cache_dir)
            env = self._env(twin)

            def on_episode(stats) -> None:
                self.progress = TrainingStatus(
                    episodes=stats.episode + 1,
                    episodes_total=settings.episodes,
                    env_steps=stats.total_env_steps,
                    last_return=round(float(stats.episode_return), 6),
                    epsilon=round(float(stats.epsilon), 6),
                    wall_seconds=round(time.perf_counter() - started, 3),
                )

            if self.closed.is_set():
                return
            warm = self.warm
            if warm is not None and (warm.observation_size, warm.action_count) == (
                env.observation_size,
                env.action_count,
            ):
                agent = restore_agent(warm, settings)  # the stored model: no pretraining from scratch
                self.progress = self.progress.model_copy(
                    update={"message": f"warm start: {self.learning.warm_start_message}"}
                )
            else:
                agent = DQNAgent(env.observation_size, env.action_count, settings)
                agent.train(env, on_episode=on_episode, should_stop=self.closed.is_set, torch_threads=1)
            self._trained(agent, env, twin, started)
        except Exception as error:
            log.exception("pretraining %s failed", self.name)
            self._failed(error, started)

    def _pretrain_in_worker(self) -> None:
        """The same pretraining in a worker process (proposers/workers.py): this thread only waits and reports."""
        started = time.perf_counter()
        settings = self.settings
        profile = self.profile.model_dump(mode="json", by_alias=True, exclude_none=True)
        cache = str(self.cache_dir) if self.cache_dir else None
        with tempfile.TemporaryDirectory(prefix=f"pretrain-{self.name}-") as tmp:
            progress_path, stop_path = str(Path(tmp) / "progress.json"), str(Path(tmp) / "stop")
            try:
                warm = self.warm
                if warm is not None:
                    twin = self.workers.submit(measure_twin_job, profile, settings.seed, cache, self.quick_twins)
                    twin = self._wait(twin, progress_path, stop_path, started)
                    env = self._env(twin)
                    if (warm.observation_size, warm.action_count) == (env.observation_size, env.action_count):
                        agent = restore_agent(warm, settings)  # the stored model: no pretraining from scratch
                        self.progress = self.progress.model_copy(
                            update={"message": f"warm start: {self.learning.warm_start_message}"}
                        )
                        self._trained(agent, env, twin, started)
                        return
                job = self.workers.submit(
                    pretrain_job,
                    self.name,
                    profile,
                    settings.model_dump(mode="json", by_alias=True),
                    cache,
                    self.quick_twins,
                    progress_path,
                    stop_path,
                )
                if self.closed.is_set():
                    Path(stop_path).touch()
                checkpoint, twin = self._wait(job, progress_path, stop_path, started)
                if self.closed.is_set():
                    return  # the run went: the worker stopped early, and nothing of it is used
                agent = restore_agent(from_bytes(checkpoint, profile_hash=None), settings)
                self._trained(agent, self._env(twin), twin, started)
            except Exception as error:
                log.exception("pretraining %s failed in a worker process", self.name)
                self._failed(error, started)

    def _wait(self, future, progress_path: str, stop_path: str, started: float):
        """Wait for a worker's job, copying its progress into `self.progress`; ask it to stop if the run goes."""
        while True:
            try:
                return future.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                pass
            if self.closed.is_set():
                Path(stop_path).touch()
            progress = read_progress(progress_path)
            if progress:
                self.progress = TrainingStatus(
                    episodes=int(progress.get("episodes", 0)),
                    episodes_total=self.settings.episodes,
                    env_steps=int(progress.get("env_steps", 0)),
                    last_return=progress.get("last_return"),
                    epsilon=progress.get("epsilon"),
                    wall_seconds=round(time.perf_counter() - started, 3),
                    message=progress.get("message"),
                )

    def _env(self, twin: Twin) -> TuningEnv:
        return TuningEnv(
            [Component(self.name, self.profile.tuning_space(), twin)],
            steps_per_episode=self.settings.steps_per_episode,
            seed=self.settings.seed,
        )

    def _trained(self, agent: DQNAgent, env: TuningEnv, twin: Twin, started: float) -> None:
        self.warm = None
        self.agent, self.env, self.twin = agent, env, twin
        self.on_trained()
        self.progress = self.progress.model_copy(
            update={"episodes": self.settings.episodes, "wall_seconds": round(time.perf_counter() - started, 3)}
        )

    def _failed(self, error: Exception, started: float) -> None:
        """A failed pretraining degrades to online learning, visibly (the message and `failed` in status)."""
        self.progress = self.progress.model_copy(
            update={
                "message": f"pretraining failed ({type(error).__name__}: {error}); learning online instead",
                "failed": True,
                "wall_seconds": round(time.perf_counter() - started, 3),
            }
        )

    # --- proposing and judging ------------------------------------------------------------------------
    def suggest(self, stable: Mapping[str, object]) -> Proposal | None:
        env, agent, twin = self.env, self.agent, self.twin
        assert env is not None and agent is not None and twin is not None
        scores = twin.score_grid()
        stable_index = twin.index_of(stable)
        stable_score = float(scores[stable_index])
        visited: dict[tuple[int, ...], float] = {}
        for indices in visit(env, agent.greedy_action, env.reset_to({self.name: dict(stable)})):
            visited[indices[0]] = float(scores[indices[0]])
        ranked = sorted(visited.items(), key=lambda item: -item[1])
        if self.boost > 0 and agent.action_rng.random() < self.boost:
            agent.action_rng.shuffle(ranked)  # raised exploration: any improving configuration, not the best first
        for index, score in ranked:
            config = twin.config_at(index)
            if score <= stable_score or canonical_json(config) in self.tried:
                continue
            expected = None if stable_score == 0 else (score - stable_score) / abs(stable_score) * 100.0
            confidence = twin_confidence(twin, stable_index, index, agent.action_rng)
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

    def evaluate(self, agent: DQNAgent) -> float | None:
        """The best twin score the greedy policy reaches from the default configuration."""
        assert self.env is not None and self.twin is not None
        scores = self.twin.score_grid()
        observation = self.env.reset_to({})
        best = float(scores[self.env.indices()[0]])
        for indices in visit(self.env, agent.greedy_action, observation):
            best = max(best, float(scores[indices[0]]))
        return best


def twin_confidence(
    twin: Twin, stable: tuple[int, ...], candidate: tuple[int, ...], rng: np.random.Generator, draws: int = 200
) -> float:
    """Share of paired noisy twin samples in which the candidate's objective beats the stable one's."""
    space = twin.space

    def objective(index: tuple[int, ...]) -> np.ndarray:
        rows = twin.means[index] * (1.0 + twin.noise_cv * rng.standard_normal((draws, len(twin.metric_names))))
        return np.array([space.objective_value(dict(zip(twin.metric_names, row))) for row in rows])

    return round(float(np.mean(objective(candidate) > objective(stable))), 4)
