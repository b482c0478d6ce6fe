"""Tuning quality: DQN vs random search vs Optuna TPE at equal numbers of evaluations.

An evaluation is one noisy measurement of one configuration on a component's twin (the measured
response surface plus its measured noise): exactly what each method sees. Every method then names
its best configuration, and we report that configuration's TRUE twin score (the noise-free mean)
as a fraction of the exhaustive-search optimum. Methods:

- dqn: trained for `budget` environment steps (episodes × steps, each step one evaluation), then
  its greedy rollout from the default (also counted) proposes the best configuration it saw, by
  its own noisy measurements — the same rule as `dwcp-autotuner tune`, but without peeking at the
  twin's noise-free means;
- random: `budget` uniformly random grid points, the best by noisy measurement;
- tpe: Optuna's TPE sampler over the same grid (categorical per parameter), `budget` trials.

Seeds 1000+ were never used during development. Run as a script:

    python bench/tuning_quality.py --components hde,pba,acp --budgets 200,1000,5000,20000 --seeds 3
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from dwcp_autotuner.agent.dqn import DQNAgent
from dwcp_autotuner.cli.arguments import names, whole, wholes
from dwcp_autotuner.env.tuning_env import Component, TuningEnv
from dwcp_autotuner.env.twin import Twin, load_or_measure_twin
from dwcp_autotuner.models.agent import AgentSettings
from dwcp_autotuner.models.builtin import BUILTIN_SPACES
from dwcp_autotuner.workloads import make_workload


class NoisyObjective:
    """Counts evaluations; returns the penalised score of one noisy twin sample."""

    def __init__(self, twin: Twin, rng: np.random.Generator) -> None:
        self.twin, self.rng, self.count = twin, rng, 0
        self.baseline = twin.metrics_at(twin.baseline_index())

    def __call__(self, index: tuple[int, ...]) -> float:
        self.count += 1
        sample = self.twin.sample(index, self.rng)
        return self.twin.space.score(dict(zip(self.twin.metric_names, sample)), self.baseline)


def fraction(twin: Twin, index: tuple[int, ...]) -> float:
    return twin.fraction_of_optimum(float(twin.score_grid()[index]))


def run_random(twin: Twin, budget: int, seed: int) -> tuple[int, ...]:
    rng = np.random.default_rng(seed)
    objective = NoisyObjective(twin, np.random.default_rng(seed + 1))
    shape = twin.grid_shape
    best, best_value = twin.baseline_index(), -math.inf
    for _ in range(budget):
        index = tuple(int(rng.integers(n)) for n in shape)
        value = objective(index)
        if value > best_value:
            best, best_value = index, value
    return best


def run_tpe(twin: Twin, budget: int, seed: int) -> tuple[int, ...] | None:
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = NoisyObjective(twin, np.random.default_rng(seed + 1))
    params = twin.space.parameters

    def trial_objective(trial) -> float:
        index = tuple(trial.suggest_categorical(p.name, list(range(len(p.grid())))) for p in params)
        return objective(index)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(trial_objective, n_trials=budget)
    return tuple(study.best_params[p.name] for p in params)


def run_dqn(twin: Twin, name: str, budget: int, seed: int) -> tuple[int, ...]:
    steps = max(20, min(200, budget // 25))
    rollout = steps
    episodes = max(1, (budget - rollout) // steps)
    settings = AgentSettings(
        episodes=episodes,
        steps_per_episode=steps,
        epsilon_decay=max(0.9, min(0.995, 0.01 ** (1.0 / max(episodes * 0.8, 1)))),  # reach ~0.01 at 80 % of training
        learning_starts=min(1000, budget // 10),
        seed=seed,
    )
    env = TuningEnv([Component(name, twin.space, twin)], steps_per_episode=steps, seed=seed)
    agent = DQNAgent(env.observation_size, env.action_count, settings)
    agent.train(env)
    # Greedy rollout: pick the best configuration by its own noisy measurements (no peeking).
    objective = NoisyObjective(twin, np.random.default_rng(seed + 1))
    observation = env.reset(start="default")
    best, best_value = env.indices()[0], objective(env.indices()[0])
    for _ in range(rollout):
        observation, _, _ = env.step(agent.greedy_action(observation))
        index = env.indices()[0]
        value = objective(index)
        if value > best_value:
            best, best_value = index, value
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--components", type=names(BUILTIN_SPACES), default="hde,pba,acp")
    parser.add_argument("--budgets", type=wholes(1), default="200,1000,5000,20000", help="evaluations per method")
    parser.add_argument("--seeds", type=whole(1), default=3, help="seeds per point (1000, 1001, …)")
    parser.add_argument("--quick-twins", action="store_true", help="twins of the quick workloads (faster to measure)")
    parser.add_argument(
        "--repeats", type=whole(1), default=3, help="seeds averaged per twin grid point (tune's default: 3)"
    )
    parser.add_argument("--methods", type=names(("dqn", "random", "tpe")), default="dqn,random,tpe")
    parser.add_argument(
        "--tpe-max", type=whole(1), default=2000, help="largest budget given to TPE (its time grows with trials)"
    )
    args = parser.parse_args()
    budgets, methods = args.budgets, args.methods
    print(
        f"tuning quality: fraction of the twin's exhaustive optimum (mean ± sd over {args.seeds} seeds) vs evaluations"
    )
    for name in args.components:
        space = BUILTIN_SPACES[name]
        started = time.perf_counter()
        options = {"link_mbps": 100.0} if name == "hde" else {}
        twin, cached = load_or_measure_twin(
            space, make_workload(name, quick=args.quick_twins, **options), seed=0, repeats=args.repeats
        )
        default_fraction = fraction(twin, twin.baseline_index())
        print(
            f"\n{name}: {twin.grid_shape} grid = {int(np.prod(twin.grid_shape))} configurations, "
            f"twin {'cached' if cached else f'measured in {time.perf_counter() - started:.0f} s'}; "
            f"default = {default_fraction:.3f} of optimum"
        )
        header = f"{'evaluations':>12}" + "".join(f"{m:>18}" for m in methods)
        print(header)
        for budget in budgets:
            cells = []
            for method in methods:
                if method == "tpe" and budget > args.tpe_max:
                    cells.append("skipped")  # TPE's cost grows with trials; see --tpe-max
                    continue
                values, seconds = [], 0.0
                for k in range(args.seeds):
                    seed = 1000 + k
                    t0 = time.perf_counter()
                    if method == "random":
                        best = run_random(twin, budget, seed)
                    elif method == "tpe":
                        best = run_tpe(twin, budget, seed)
                    else:
                        best = run_dqn(twin, name, budget, seed)
                    seconds += time.perf_counter() - t0
                    if best is not None:
                        values.append(fraction(twin, best))
                cells.append(
                    "n/a"
                    if not values
                    else f"{np.mean(values):.3f}±{np.std(values):.3f} ({seconds / max(len(values), 1):.0f}s)"
                )
            print(f"{budget:>12}" + "".join(f"{c:>18}" for c in cells))
    print(
        "\n(each cell: fraction of optimum ± sd, and seconds per seed; ratios are against the same twin's exhaustive optimum)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
