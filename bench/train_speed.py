#!/usr/bin/env python
"""How long does a full DQN training run take? (A script, not a test.)

The original system reported 14.7 hours (52,920 s) for its training run: 1000 episodes x 500 steps
= 500,000 environment steps with updates. This script times the same amount of work with
``dwcp_autotuner.agent`` at default settings (one gradient update every 4 steps, batch 64, MLP
128x128) and, in the same run, a deliberately naive DQN as a baseline (per-step tensor creation,
a deque replay sampled with ``random.sample``, per-parameter Adam, an update every step). The
baseline is timed on a short slice and **extrapolated** to the full number of steps; the output
says so on every line where it is.

    python bench/train_speed.py                      # full 500,000 steps (a few minutes)
    python bench/train_speed.py --steps 50000 --episodes 100
    python bench/train_speed.py --no-baseline --json out/train_speed.json

Environments are built by factories in ``ENVIRONMENTS`` (name -> factory(args) -> Environment):
``dwcp`` (default) is the environment ``tune`` trains on, the three DWCP twins together;
``synthetic`` is a grid walk that needs no twin.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dwcp_autotuner.agent import AgentSettings, DQNAgent, Environment, EpisodeStats, epsilon_at
from dwcp_autotuner.cli.arguments import whole

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the tests' synthetic grid
from tests.support.grid import GridBowl

ORIGINAL_SECONDS = 14.7 * 3600  # 52,920 s ...
ORIGINAL_STEPS = 500_000  # ... for 1000 episodes x 500 steps


# --- environments -----------------------------------------------------------------------------


def make_synthetic_env(args: argparse.Namespace) -> Environment:
    # 9 parameters x 21 levels by default: the DWCP action layout (19 actions) on a bowl costing microseconds a step.
    return GridBowl.random_interior(args.parameters, args.levels, args.seed)


def make_dwcp_env(args: argparse.Namespace) -> Environment:
    """The environment `dwcp-autotuner tune` trains on: the three DWCP twins (39-dim state, 19 actions).

    Twins are tune's default ones (3 seeds per grid point), from the cache or measured once (minutes).
    """
    from dwcp_autotuner.env.tuning_env import Component, TuningEnv
    from dwcp_autotuner.env.twin import load_or_measure_twin
    from dwcp_autotuner.models.builtin import BUILTIN_SPACES
    from dwcp_autotuner.workloads import make_workload

    components = []
    for name, space in BUILTIN_SPACES.items():
        options = {"link_mbps": 100.0} if name == "hde" else {}
        twin, _ = load_or_measure_twin(space, make_workload(name, **options), seed=0, repeats=3)
        components.append(Component(name, space, twin))
    return TuningEnv(components, steps_per_episode=max(1, args.steps // args.episodes), seed=args.seed)


ENVIRONMENTS: dict[str, Callable[[argparse.Namespace], Environment]] = {
    "synthetic": make_synthetic_env,
    "dwcp": make_dwcp_env,
}


# --- the naive baseline -------------------------------------------------------------------------


class NaiveDQN:
    """DQN as tutorials write it: correct, but allocating and dispatching as it goes."""

    def __init__(self, observation_size: int, action_count: int, settings: AgentSettings) -> None:
        torch.manual_seed(settings.seed)

        def mlp() -> nn.Module:
            layers: list[nn.Module] = []
            width = observation_size
            for hidden in settings.hidden_sizes:
                layers += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            return nn.Sequential(*layers, nn.Linear(width, action_count))

        self.online, self.target = mlp(), mlp()
        self.target.load_state_dict(self.online.state_dict())
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=settings.learning_rate, foreach=False)
        self.memory: deque = deque(maxlen=settings.replay_size)
        self.settings = settings
        self.action_count = action_count
        self.updates = 0

    def act(self, obs: np.ndarray, epsilon: float) -> int:
        if random.random() < epsilon:
            return random.randrange(self.action_count)
        with torch.no_grad():
            return int(self.online(torch.tensor(obs, dtype=torch.float32).unsqueeze(0)).argmax())

    def update(self) -> float:
        s = self.settings
        batch = random.sample(self.memory, s.batch_size)
        obs, actions, rewards, next_obs, dones = zip(*batch, strict=True)
        obs = torch.tensor(np.array(obs), dtype=torch.float32)
        actions = torch.tensor(actions, dtype=torch.int64)
        rewards = torch.tensor(rewards, dtype=torch.float32)
        next_obs = torch.tensor(np.array(next_obs), dtype=torch.float32)
        dones = torch.tensor(dones, dtype=torch.float32)
        q = self.online(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            best = self.online(next_obs).argmax(1, keepdim=True)
            target = rewards + s.gamma * (1 - dones) * self.target(next_obs).gather(1, best).squeeze(1)
        loss = F.smooth_l1_loss(q, target)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), s.max_grad_norm or float("inf"))
        self.optimizer.step()
        self.updates += 1
        if self.updates % s.target_update_interval == 0:
            self.target.load_state_dict(self.online.state_dict())
        return loss.item()


def time_naive(env: Environment, settings: AgentSettings, steps: int, train_frequency: int, epsilon: float) -> dict:
    """Seconds per environment step of ``NaiveDQN``, measured after the replay warm-up."""
    random.seed(settings.seed)
    agent = NaiveDQN(env.observation_size, env.action_count, settings)
    obs = env.reset(seed=settings.seed)
    warmup = max(settings.learning_starts, settings.batch_size)
    for _ in range(warmup):  # fill the replay buffer (not timed: the full run does this once)
        action = random.randrange(env.action_count)
        next_obs, reward, done = env.step(action)
        agent.memory.append((obs, action, reward, next_obs, done))
        obs = env.reset() if done else next_obs
    start = time.perf_counter()
    for t in range(1, steps + 1):
        action = agent.act(obs, epsilon)
        next_obs, reward, done = env.step(action)
        agent.memory.append((obs, action, reward, next_obs, done))
        if t % train_frequency == 0:
            agent.update()
        obs = env.reset() if done or t % settings.steps_per_episode == 0 else next_obs
    seconds = time.perf_counter() - start
    return {"measured_steps": steps, "measured_seconds": seconds, "seconds_per_step": seconds / steps}


# --- the floor ----------------------------------------------------------------------------------


def time_floor(env: Environment, settings: AgentSettings, updates: int, threads: int) -> dict:
    """The same number of gradient updates of the same network, in a tight loop and nothing else.

    A fresh agent of the same settings, its replay buffer filled with random transitions of the same environment
    (not timed), then `updates` calls of `DQNAgent.update` back to back: what the training would cost if stepping
    the environment, acting and storing transitions were free. Training time / this is the overhead ratio."""
    agent = DQNAgent(env.observation_size, env.action_count, settings)
    rng = np.random.default_rng(settings.seed)
    obs = env.reset(seed=settings.seed)
    for _ in range(min(settings.replay_size, max(10_000, settings.batch_size))):
        action = int(rng.integers(env.action_count))
        next_obs, reward, done = env.step(action)
        agent.observe((obs, action, reward, next_obs, done))
        obs = env.reset() if done else next_obs
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        for _ in range(updates):
            agent.update()
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return {"updates": updates, "seconds": seconds, "ms_per_update": seconds / max(updates, 1) * 1e3}


# --- main ---------------------------------------------------------------------------------------


def greedy_distances(env: GridBowl, agent: DQNAgent, starts: range, steps: int) -> list[int]:
    distances = []
    for seed in starts:
        obs = env.reset(seed=seed)
        for _ in range(steps):
            obs, _, _ = env.step(agent.greedy_action(obs))
        distances.append(env.distance())
    return distances


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--env",
        choices=sorted(ENVIRONMENTS),
        default="dwcp",
        help="dwcp: the three DWCP twins tune trains on (default); synthetic: a grid walk with no twin to measure",
    )
    parser.add_argument("--steps", type=whole(1), default=500_000, help="total environment steps (default 500,000)")
    parser.add_argument(
        "--episodes", type=whole(1), default=1000, help="episodes; steps per episode = steps / episodes"
    )
    parser.add_argument("--parameters", type=whole(1), default=9, help="synthetic env: tunable parameters")
    parser.add_argument("--levels", type=whole(2), default=21, help="synthetic env: grid levels per parameter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=whole(1), default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--baseline-steps", type=whole(1), default=3000, help="steps timed per naive slice")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.steps < args.episodes:
        parser.error("--steps must be at least --episodes")

    settings = AgentSettings(episodes=args.episodes, steps_per_episode=args.steps // args.episodes, seed=args.seed)
    total_steps = settings.episodes * settings.steps_per_episode
    env = ENVIRONMENTS[args.env](args)
    torch.set_num_threads(args.threads)
    print(
        f"env={args.env} observation_size={env.observation_size} action_count={env.action_count} "
        f"| {settings.episodes} episodes x {settings.steps_per_episode} steps = {total_steps:,} steps "
        f"| train_frequency={settings.train_frequency} batch={settings.batch_size} "
        f"hidden={settings.hidden_sizes} | torch {torch.__version__}, {args.threads} thread(s)",
        flush=True,
    )

    agent = DQNAgent(env.observation_size, env.action_count, settings)
    report_every = max(1, settings.episodes // 20)
    start = time.perf_counter()

    def progress(stats: EpisodeStats) -> None:
        if (stats.episode + 1) % report_every == 0 or stats.episode + 1 == stats.episodes:
            elapsed = time.perf_counter() - start
            print(
                f"  episode {stats.episode + 1:5d}/{stats.episodes}  eps={stats.epsilon:.3f}  "
                f"return={stats.episode_return:9.2f}  loss={stats.mean_loss:.4f}  "
                f"{stats.total_env_steps / elapsed:7.0f} steps/s  {elapsed:6.1f} s",
                flush=True,
            )

    result = agent.train(env, on_episode=progress, torch_threads=args.threads)
    wall = result.wall_time
    figures: dict = {
        "env": args.env,
        "steps": result.total_env_steps,
        "episodes": len(result.returns),
        "gradient_updates": result.gradient_updates,
        "wall_seconds": wall,
        "steps_per_second": result.total_env_steps / wall,
        # Scaled to 500,000 steps when the run was shorter (the ratio is then an extrapolation).
        "speedup_vs_original_14_7h": ORIGINAL_SECONDS / (wall * ORIGINAL_STEPS / result.total_env_steps),
        "mean_return_first_10": float(np.mean(result.returns[:10])),
        "mean_return_last_10": float(np.mean(result.returns[-10:])),
    }
    print(
        f"\nagent: {result.total_env_steps:,} steps in {wall:.1f} s = {figures['steps_per_second']:,.0f} steps/s, "
        f"{result.gradient_updates:,} gradient updates ({wall / max(result.gradient_updates, 1) * 1e3:.2f} ms "
        f"per update incl. the steps between)"
    )
    scaled = "" if result.total_env_steps == ORIGINAL_STEPS else " (agent time EXTRAPOLATED to 500,000 steps)"
    print(
        f"agent vs original 14.7 h (52,920 s for 500,000 steps): "
        f"{figures['speedup_vs_original_14_7h']:,.0f}x faster{scaled}"
    )
    print(
        f"learning: mean return first 10 episodes {figures['mean_return_first_10']:.2f}, "
        f"last 10 {figures['mean_return_last_10']:.2f}"
    )
    floor = time_floor(ENVIRONMENTS[args.env](args), settings, result.gradient_updates, args.threads)
    figures["floor"] = floor
    figures["ratio_to_floor"] = wall / floor["seconds"]
    print(
        f"floor: the same {floor['updates']:,} gradient updates in a tight loop: {floor['seconds']:.1f} s "
        f"({floor['ms_per_update']:.3f} ms each) -> training is {figures['ratio_to_floor']:.2f}x the floor "
        f"(measured in this run)"
    )
    if isinstance(env, GridBowl):
        distances = greedy_distances(env, agent, range(10_000, 10_050), steps=env.dims * env.levels)
        figures["greedy_distance_mean"] = float(np.mean(distances))
        figures["greedy_at_optimum"] = sum(d == 0 for d in distances) / len(distances)
        print(
            f"greedy rollouts from 50 unseen starts: mean final distance {figures['greedy_distance_mean']:.2f} "
            f"grid steps, {figures['greedy_at_optimum']:.0%} end at the optimum"
        )

    if not args.no_baseline:
        # Exploration is fixed at the schedule's mean epsilon, so greedy/random acting is mixed as
        # in the full run.
        mean_epsilon = float(
            np.mean(
                [
                    epsilon_at(e, settings.epsilon_start, settings.epsilon_decay, settings.epsilon_min)
                    for e in range(settings.episodes)
                ]
            )
        )
        figures["baseline"] = {}
        slices = (
            ("naive, update every step", 1),
            (f"naive, train_frequency={settings.train_frequency}", settings.train_frequency),
        )
        for label, frequency in slices:
            naive = time_naive(ENVIRONMENTS[args.env](args), settings, args.baseline_steps, frequency, mean_epsilon)
            extrapolated = naive["seconds_per_step"] * total_steps
            naive.update(train_frequency=frequency, epsilon=mean_epsilon, extrapolated_seconds=extrapolated)
            figures["baseline"][label] = naive
            print(
                f"baseline ({label}): measured {naive['measured_steps']:,} steps in {naive['measured_seconds']:.1f} s "
                f"-> EXTRAPOLATED to {total_steps:,} steps: {extrapolated:,.0f} s ({extrapolated / 3600:.2f} h); "
                f"agent is {extrapolated / wall:.1f}x faster"
            )

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
