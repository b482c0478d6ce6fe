"""Deep Q-Network agent (double DQN by default), readable top to bottom.

The algorithm, in the order the code runs it (see :meth:`DQNAgent.train`):

1. Per episode ``e``: ``epsilon = max(epsilon_min, epsilon_start * epsilon_decay**e)``; reset the
   environment with seed ``settings.seed + e`` (so a resumed run replays the same episodes).
2. Per step: epsilon-greedy action from the online network; step the environment; store the
   transition in the replay buffer.
3. Every ``train_frequency`` environment steps, once the buffer holds ``learning_starts``
   transitions (and at least one batch): sample a uniform mini-batch and take one Adam step on the
   Huber (smooth L1) loss between ``Q_online(s, a)`` and the TD target
   ``r + gamma * (1 - done) * Q_target(s', a*)`` where ``a* = argmax_a Q_online(s', a)`` for double
   DQN (``argmax_a Q_target(s', a)``, i.e. a plain max, otherwise), with the global gradient norm
   clipped to ``max_grad_norm``.
4. Every ``target_update_interval`` gradient updates: ``target <- tau * online + (1 - tau) * target``
   (``tau = 1``: hard copy).

Performance (this runs 500,000 environment steps on a laptop CPU): mini-batches are gathered by
numpy straight into preallocated arrays that are wrapped once as torch tensors; greedy actions are
computed by a numpy evaluator sharing the online network's weights (torch's per-op overhead
dominates single-observation inference on CPU); Adam is the fused CPU kernel where torch has it;
``train`` pins torch to one intra-op thread by default, which is fastest for nets this small.

Interrupts: a ``KeyboardInterrupt`` may arrive at any bytecode. While :meth:`DQNAgent.train` runs
in the main thread it defers SIGINT during the short sections that mutate agent state (storing a
transition, a gradient update with its target sync, the step/episode counters) and re-delivers it
right after, so the exception always propagates with the agent consistent: every stored transition
is complete, every gradient update either happened entirely (weights, Adam moments, counters) or not
at all, and ``episodes_completed`` counts only finished episodes (the interrupted episode's
transitions stay in the buffer and its updates stay applied; a resumed run starts that episode
index again). An interrupt inside ``env.step`` propagates at once; the agent has not seen that
step. Outside the main thread no handler can be installed and no deferral happens.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.agent import AgentSettings
from .network import QNetwork
from .protocol import Environment, Transition
from .replay import ReplayBuffer, empty_batch
from .schedule import epsilon_at


@dataclass(frozen=True)
class EpisodeStats:
    """What ``train`` reports after each finished episode (the CLI's progress/checkpoint hook)."""

    episode: int  # 0-based index of the episode that just finished
    episodes: int  # the run's total (settings.episodes), for progress bars
    episode_return: float  # undiscounted sum of rewards
    mean_loss: float  # mean Huber loss of the episode's gradient updates; NaN if there were none
    epsilon: float
    steps: int  # environment steps in this episode
    wall_time: float  # seconds spent in this episode
    total_env_steps: int  # agent's cumulative counters (survive checkpoints)
    total_gradient_updates: int


@dataclass
class TrainingResult:
    """Per-episode curves and totals of one ``train`` call (only episodes that finished)."""

    episodes: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    mean_losses: list[float] = field(default_factory=list)  # NaN where an episode had no update
    epsilons: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)
    total_env_steps: int = 0  # in this call, including a partial last episode
    gradient_updates: int = 0  # in this call
    wall_time: float = 0.0
    stopped_early: bool = False  # should_stop() ended the run before settings.episodes

    def record(self, stats: EpisodeStats) -> None:
        self.episodes.append(stats.episode)
        self.returns.append(stats.episode_return)
        self.mean_losses.append(stats.mean_loss)
        self.epsilons.append(stats.epsilon)
        self.steps.append(stats.steps)
        self.wall_times.append(stats.wall_time)


def td_target(
    reward: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """One-step TD target ``r + gamma * (1 - done) * V(s')``.

    ``V(s') = Q_target(s', argmax_a Q_online(s', a))`` when ``next_q_online`` is given (double DQN),
    else ``max_a Q_target(s', a)``. Shapes: ``reward``/``done`` ``(B,)``, Q-values ``(B, A)``.
    """
    if next_q_online is None:
        next_value = next_q_target.max(dim=1).values
    else:
        next_action = next_q_online.argmax(dim=1, keepdim=True)
        next_value = next_q_target.gather(1, next_action).squeeze(1)
    return reward + gamma * (1.0 - done) * next_value


def _make_adam(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam, using the fused CPU kernel where this torch has one (one kernel instead of ~10 ops)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


class DQNAgent:
    """Online + target Q-networks, Adam, a replay buffer and the epsilon-greedy policy."""

    def __init__(self, observation_size: int, action_count: int, settings: AgentSettings | None = None) -> None:
        if observation_size < 1 or action_count < 1:
            raise ValueError(f"observation_size and action_count must be >= 1, got {observation_size}, {action_count}")
        self.settings = settings if settings is not None else AgentSettings()
        self.observation_size = observation_size
        self.action_count = action_count
        s = self.settings

        # Networks: seeded without disturbing the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            self.online = QNetwork(observation_size, action_count, s.hidden_sizes)
            self.target = QNetwork(observation_size, action_count, s.hidden_sizes)
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False)
        self._params = list(self.online.parameters())
        self.optimizer = _make_adam(self._params, s.learning_rate)
        self._greedy_q = self.online.numpy_forward()

        # Independent generators for exploration and for replay sampling.
        action_seed, replay_seed = np.random.SeedSequence(s.seed).spawn(2)
        self.action_rng = np.random.default_rng(action_seed)
        self.replay_rng = np.random.default_rng(replay_seed)

        self.replay = ReplayBuffer(s.replay_size, observation_size)
        # Mini-batch arrays, filled in place by the replay buffer; torch views made once.
        self._batch = empty_batch(s.batch_size, observation_size)
        self._obs_t = torch.from_numpy(self._batch.obs)
        self._action_t = torch.from_numpy(self._batch.action).unsqueeze(1)
        self._reward_t = torch.from_numpy(self._batch.reward)
        self._next_obs_t = torch.from_numpy(self._batch.next_obs)
        self._done_t = torch.from_numpy(self._batch.done)

        # Progress counters (persisted by checkpoints).
        self.episodes_completed = 0
        self.epsilon = s.epsilon_start
        self.env_steps = 0
        self.gradient_updates = 0
        self.last_training_result: TrainingResult | None = None

    # --- acting --------------------------------------------------------------------------------

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Online-network Q-values (torch) for one observation or a batch, as float32 numpy."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        with torch.inference_mode():
            return self.online(x).numpy()

    def greedy_action(self, obs: np.ndarray) -> int:
        """``argmax_a Q_online(obs, a)`` for one observation (numpy fast path, same weights)."""
        return int(self._greedy_q(obs).argmax())

    def act(self, obs: np.ndarray, epsilon: float) -> int:
        """Epsilon-greedy: a uniformly random action with probability ``epsilon``, else greedy."""
        if self.action_rng.random() < epsilon:
            return int(self.action_rng.integers(self.action_count))
        return self.greedy_action(obs)

    # --- learning ------------------------------------------------------------------------------

    def observe(self, transition: Transition) -> None:
        """Store one transition in the replay buffer."""
        self.replay.add(*transition)

    def update(self) -> float | None:
        """One gradient step on a uniform mini-batch; returns the loss, or None if the buffer is
        too small (fewer than ``batch_size`` transitions). Syncs the target network on schedule."""
        s = self.settings
        if len(self.replay) < s.batch_size:
            return None
        self.replay.sample(s.batch_size, self.replay_rng, out=self._batch)

        q = self.online(self._obs_t).gather(1, self._action_t).squeeze(1)
        with torch.no_grad():
            next_q_target = self.target(self._next_obs_t)
            next_q_online = self.online(self._next_obs_t) if s.double_dqn else None
            target = td_target(self._reward_t, self._done_t, s.gamma, next_q_target, next_q_online)
        loss = F.smooth_l1_loss(q, target)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self._params, s.max_grad_norm, foreach=True)
        self.optimizer.step()

        self.gradient_updates += 1
        if self.gradient_updates % s.target_update_interval == 0:
            self.update_target()
        return loss.item()

    @torch.no_grad()
    def update_target(self) -> None:
        """``target <- tau * online + (1 - tau) * target`` (hard copy when ``tau == 1``)."""
        tau = self.settings.tau
        for target_param, online_param in zip(self.target.parameters(), self._params, strict=True):
            if tau >= 1.0:
                target_param.copy_(online_param)
            else:
                target_param.lerp_(online_param, tau)

    # --- the training loop ---------------------------------------------------------------------

    def train(
        self,
        env: Environment,
        settings: AgentSettings | None = None,
        *,
        on_episode: Callable[[EpisodeStats], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        torch_threads: int | None = 1,
    ) -> TrainingResult:
        """Run episodes ``episodes_completed .. settings.episodes - 1`` on ``env``.

        ``settings`` (default: the agent's own) supplies the loop schedule: ``episodes``,
        ``steps_per_episode``, ``train_frequency``, ``learning_starts``, the epsilon schedule and
        the reset seed. Network shape, optimiser and the update rule stay as constructed.

        ``on_episode`` is called after every finished episode; ``should_stop`` is polled after every
        step and at each episode start: when it returns true the run ends after that step, with
        ``stopped_early=True`` (a partial episode counts in ``total_env_steps`` but is not
        recorded as an episode). ``torch_threads`` sets torch's intra-op threads for the call and
        restores the previous value after (``None`` leaves it alone). See the module docstring for
        what happens on ``KeyboardInterrupt``; a SIGINT handler the caller installed (say, one that
        sets the flag ``should_stop`` reads) keeps working, only deferred past critical sections.
        ``self.last_training_result`` is the live result, so it holds the finished episodes even
        if an exception ends the run.
        """
        s = settings if settings is not None else self.settings
        if env.observation_size != self.observation_size or env.action_count != self.action_count:
            raise ValueError(
                f"environment has observation_size={env.observation_size}, action_count={env.action_count}; "
                f"agent was built for {self.observation_size}, {self.action_count}"
            )
        warmup = max(s.learning_starts, self.settings.batch_size)
        result = TrainingResult()
        self.last_training_result = result
        previous_threads = torch.get_num_threads()
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        run_start = time.perf_counter()
        critical = _CriticalSection()
        critical.install()
        try:
            for episode in range(self.episodes_completed, s.episodes):
                if should_stop is not None and should_stop():
                    result.stopped_early = True
                    break
                epsilon = epsilon_at(episode, s.epsilon_start, s.epsilon_decay, s.epsilon_min)
                self.epsilon = epsilon
                episode_start = time.perf_counter()
                obs = env.reset(seed=s.seed + episode)
                episode_return, loss_sum, loss_count, steps, done = 0.0, 0.0, 0, 0, False
                stop = False

                while steps < s.steps_per_episode and not done:
                    action = self.act(obs, epsilon)
                    next_obs, reward, done = env.step(action)
                    with critical:
                        self.replay.add(obs, action, reward, next_obs, done)
                        self.env_steps += 1
                        result.total_env_steps += 1
                        if self.env_steps % s.train_frequency == 0 and len(self.replay) >= warmup:
                            loss = self.update()
                            if loss is not None:
                                loss_sum += loss
                                loss_count += 1
                                result.gradient_updates += 1
                    steps += 1
                    episode_return += reward
                    obs = next_obs
                    if should_stop is not None and should_stop():
                        stop = True
                        break

                if steps == s.steps_per_episode or done:  # the episode finished
                    with critical:
                        stats = EpisodeStats(
                            episode=episode,
                            episodes=s.episodes,
                            episode_return=float(episode_return),
                            mean_loss=loss_sum / loss_count if loss_count else math.nan,
                            epsilon=epsilon,
                            steps=steps,
                            wall_time=time.perf_counter() - episode_start,
                            total_env_steps=self.env_steps,
                            total_gradient_updates=self.gradient_updates,
                        )
                        self.episodes_completed = episode + 1
                        result.record(stats)
                    if on_episode is not None:
                        on_episode(stats)
                if stop:
                    result.stopped_early = self.episodes_completed < s.episodes
                    break
        finally:
            critical.uninstall()
            result.wall_time = time.perf_counter() - run_start
            if torch_threads is not None:
                torch.set_num_threads(previous_threads)
        return result


class _CriticalSection:
    """``with section:`` blocks during which SIGINT is held back and re-delivered on exit.

    ``install()`` puts a SIGINT handler in place (main thread only; elsewhere it does nothing) and
    ``uninstall()`` restores the previous one. Outside a ``with`` block a SIGINT goes straight to
    the previous handler (normally: raise ``KeyboardInterrupt``), so Ctrl-C stays responsive during
    long environment steps; inside one it is recorded and delivered when the block ends, once the
    agent's state is consistent again.
    """

    def __init__(self) -> None:
        self._installed = False
        self._previous: Any = None
        self._active = False
        self._pending: tuple[int, FrameType | None] | None = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def __enter__(self) -> None:
        self._active = True

    def __exit__(self, *exc: object) -> None:
        self._active = False
        if self._pending is not None:
            signum, frame = self._pending
            self._pending = None
            self._deliver(signum, frame)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._active:
            self._pending = (signum, frame)
        else:
            self._deliver(signum, frame)

    def _deliver(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous
        if previous is signal.SIG_IGN:
            return
        if callable(previous):
            previous(signum, frame)
        else:  # SIG_DFL, or a handler installed outside Python
            raise KeyboardInterrupt
