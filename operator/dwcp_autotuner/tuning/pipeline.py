"""`dwcp-autotuner tune`: tune the reference components on this machine, with no cluster and no Prometheus.

Phases, each visible as a progress bar:
1. twins   — measure (or load from cache) each component's response surface with the real workload;
2. train   — pretrain one DQN agent on the joint environment of all selected components;
3. propose — roll the greedy policy out from the default configuration and keep, per component,
             the best configuration it visits (as the operator would: propose, then verify);
4. search  — exhaustive search over each twin's grid, the yardstick for the proposal;
5. verify  — fresh real workload runs (seeds the twin never saw), default vs tuned, interleaved,
             judged by the canary statistics shared with the operator.

A KeyboardInterrupt at any point stops the phase in progress; whatever was finished is reported
(status "interrupted") and the agent's checkpoint is saved, so no work is lost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..agent.checkpoint import make_checkpoint, save_checkpoint
from ..agent.dqn import DQNAgent
from ..env.rollout import visit
from ..env.tuning_env import Component, TuningEnv
from ..env.twin import Twin, load_or_measure_twin, timing_passes, twin_processes
from ..models.agent import AgentSettings
from ..models.builtin import BUILTIN_SPACES
from ..models.space import ParamValue, TuningSpace
from ..rollout.statistics import AnalysisSettings, MetricSamples, Verdict, analyse
from ..workloads import make_workload
from .published import measure_published


@dataclass
class TuneOptions:
    spaces: dict[str, TuningSpace]  # component name -> space (built-in or from a profile file)
    agent: AgentSettings
    seed: int = 0
    quick: bool = False
    link_mbps: float = 100.0
    verify_samples: int = 20
    twin_repeats: int = 1
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    output: Path = Path("tune-report")
    cache_dir: Path | None = None
    checkpoint_every: int = 50  # episodes


@dataclass
class ComponentResult:
    name: str
    space: TuningSpace
    twin: Twin | None = None
    twin_from_cache: bool = False
    twin_seconds: float = 0.0
    tuned_config: dict[str, ParamValue] | None = None
    tuned_twin_score: float | None = None
    baseline_twin_score: float | None = None
    optimum_config: dict[str, ParamValue] | None = None
    optimum_score: float | None = None
    baseline_runs: list[dict[str, float]] = field(default_factory=list)
    published: list[dict] = field(default_factory=list)  # the original document's figures beside ours (published.py)
    tuned_runs: list[dict[str, float]] = field(default_factory=list)
    verdict: Verdict | None = None
    verify_seconds: float = 0.0
    sensitivity: dict[str, list[tuple[ParamValue, float]]] = field(default_factory=dict)

    def local_optimum_note(self) -> str | None:
        """When the proposal is a local optimum of the grid: why one-step moves stop there, in words."""
        if self.twin is None or self.tuned_config is None or self.optimum_config is None:
            return None
        grid = self.twin.score_grid()
        index = self.twin.index_of(self.tuned_config)
        best = self.twin.index_of(self.optimum_config)
        if index == best:
            return None
        neighbours = []
        for axis in range(len(index)):
            for delta in (-1, 1):
                moved = list(index)
                moved[axis] += delta
                if 0 <= moved[axis] < grid.shape[axis]:
                    neighbours.append(float(grid[tuple(moved)]))
        if max(neighbours, default=-np.inf) > grid[index]:
            return None
        distance = sum(abs(a - b) for a, b in zip(index, best))
        return (
            f"The tuned configuration is a local optimum of the twin's grid: every one-step move from it scores lower, "
            f"and the exhaustive optimum lies {distance} steps away across lower-scoring configurations."
        )

    @property
    def fraction_of_optimum(self) -> float | None:
        """Tuned score as a fraction of the optimum on the twin (`Twin.fraction_of_optimum`)."""
        if self.tuned_twin_score is None or self.optimum_score is None or self.twin is None:
            return None
        return self.twin.fraction_of_optimum(self.tuned_twin_score)


@dataclass
class TuneResult:
    options: TuneOptions
    components: dict[str, ComponentResult]
    status: str = "running"  # running | complete | interrupted
    phase: str = "twins"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    training: dict = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=lambda: {"return": [], "epsilon": [], "loss": []})
    checkpoint: Path | None = None
    environment: dict = field(default_factory=dict)


class Progress:
    """What the pipeline tells its caller; the CLI implements it with rich progress bars."""

    def start(self, task: str, description: str, total: int) -> None: ...
    def advance(self, task: str, completed: int, info: str = "", total: int | None = None) -> None: ...
    def finish(self, task: str) -> None: ...
    def log(self, message: str) -> None: ...


def run_tune(options: TuneOptions, progress: Progress | None = None) -> TuneResult:
    """Run all phases; on KeyboardInterrupt, return the partial result with status 'interrupted'."""
    progress = progress or Progress()
    result = TuneResult(options, {name: ComponentResult(name, space) for name, space in options.spaces.items()})
    agent: DQNAgent | None = None
    env: TuningEnv | None = None
    try:
        _measure_twins(options, result, progress)
        result.phase = "train"
        env, agent = _train(options, result, progress)
        result.phase = "propose"
        _propose(env, agent, result)
        _search_and_sensitivity(result)
        result.phase = "verify"
        _verify(options, result, progress)
        result.status = "complete"
    except KeyboardInterrupt:
        result.status = "interrupted"
        progress.log(f"interrupted during {result.phase}: saving what is done")
    finally:
        if agent is not None and env is not None:
            result.checkpoint = _save(agent, env, options, result)
        result.finished = time.time()
    return result


# --- phases -------------------------------------------------------------------------------------
def _measure_twins(options: TuneOptions, result: TuneResult, progress: Progress) -> None:
    for name, comp in result.components.items():
        workload_options = {"link_mbps": options.link_mbps} if name == "hde" else {}
        workload = make_workload(name, quick=options.quick, **workload_options)
        task = f"twin-{name}"
        started = time.perf_counter()
        progress.start(
            task,
            f"twin {name}: measuring {comp.space.grid_size()} configurations"
            + (f" × {options.twin_repeats} seeds" if options.twin_repeats > 1 else "")
            + (f" × {passes} shuffled passes (timings)" if (passes := timing_passes(comp.space, workload)) > 1 else "")
            + (f" on {processes} processes" if (processes := twin_processes(comp.space, workload)) > 1 else ""),
            comp.space.grid_size() * options.twin_repeats * passes,
        )

        def on_run(done: int, total: int, task: str = task) -> None:
            progress.advance(task, done, f"{done}/{total} runs", total=total)

        comp.twin, comp.twin_from_cache = load_or_measure_twin(
            comp.space,
            workload,
            seed=options.seed,
            repeats=options.twin_repeats,
            cache_dir=options.cache_dir,
            progress=on_run,
        )
        comp.twin_seconds = time.perf_counter() - started
        progress.finish(task)
        if comp.twin_from_cache:
            progress.log(f"twin {name}: loaded from cache (measured {comp.twin.provenance.get('date')})")


def _make_env(result: TuneResult, settings: AgentSettings, seed: int) -> TuningEnv:
    components = [Component(name, c.space, c.twin) for name, c in result.components.items() if c.twin is not None]
    return TuningEnv(components, steps_per_episode=settings.steps_per_episode, seed=seed)


def _train(options: TuneOptions, result: TuneResult, progress: Progress) -> tuple[TuningEnv, DQNAgent]:
    settings = options.agent
    env = _make_env(result, settings, options.seed)
    agent = DQNAgent(env.observation_size, env.action_count, settings)
    result.environment = {
        "observation_size": env.observation_size,
        "action_count": env.action_count,
        "parameters": sum(len(c.space.parameters) for c in env.components),
        "metrics": env.metric_count,
        "history": env.history,
    }
    progress.start(
        "train", f"training DQN ({env.observation_size}-dim state, {env.action_count} actions)", settings.episodes
    )
    started = time.perf_counter()
    last_checkpoint = [0]

    def on_episode(stats) -> None:
        result.history["return"].append(float(stats.episode_return))
        result.history["epsilon"].append(float(stats.epsilon))
        result.history["loss"].append(float(stats.mean_loss))
        loss = "-" if math.isnan(stats.mean_loss) else f"{stats.mean_loss:.4f}"
        progress.advance(
            "train", stats.episode + 1, f"return {stats.episode_return:+.3f}  ε {stats.epsilon:.3f}  loss {loss}"
        )
        if stats.episode + 1 - last_checkpoint[0] >= options.checkpoint_every:
            last_checkpoint[0] = stats.episode + 1
            _save(agent, env, options, result)

    try:
        training = agent.train(env, on_episode=on_episode)
        result.training = {
            "episodes": agent.episodes_completed,
            "env_steps": training.total_env_steps,
            "gradient_updates": training.gradient_updates,
            "wall_seconds": time.perf_counter() - started,
        }
    except KeyboardInterrupt:
        result.training = {
            "episodes": len(result.history["return"]),
            "wall_seconds": time.perf_counter() - started,
            "interrupted": True,
        }
        raise
    finally:
        progress.finish("train")
    return env, agent


def _propose(env: TuningEnv, agent: DQNAgent, result: TuneResult, *, rollouts: int = 12, epsilon: float = 0.1) -> None:
    """Roll the learned policy out and keep, per component, the best configuration it visits.

    One greedy rollout from the default configuration, ten with a little exploration (epsilon 0.1)
    from the default, and a last greedy rollout from the best point found so far, as an operator
    would keep proposing from its new stable configuration. All on the twin: well under a second.
    """
    comps = list(result.components.values())
    grids = [c.twin.score_grid() for c in comps]
    default = env.reset(start="default")
    best = [(float(g[idx]), idx) for g, idx in zip(grids, env.indices())]
    for comp, (score, _) in zip(comps, best):
        comp.baseline_twin_score = score

    def rollout(observation, eps: float) -> None:
        act = agent.greedy_action if eps == 0 else (lambda obs: agent.act(obs, eps))
        for indices in visit(env, act, observation):
            for k, (grid, idx) in enumerate(zip(grids, indices)):
                if float(grid[idx]) > best[k][0]:
                    best[k] = (float(grid[idx]), idx)

    rollout(default, 0.0)
    for _ in range(rollouts - 2):
        rollout(env.reset(start="default"), epsilon)
    rollout(env.reset_to({c.name: c.twin.config_at(idx) for c, (_, idx) in zip(comps, best)}), 0.0)
    for comp, (score, idx) in zip(comps, best):
        comp.tuned_config = comp.twin.config_at(idx)
        comp.tuned_twin_score = score


def _search_and_sensitivity(result: TuneResult) -> None:
    for comp in result.components.values():
        twin = comp.twin
        index, score = twin.optimum()
        comp.optimum_config, comp.optimum_score = twin.config_at(index), score
        # Sensitivity: vary one parameter over its whole grid, the others held at the tuned values.
        tuned_index = twin.index_of(comp.tuned_config)
        grid = twin.score_grid()
        for axis, parameter in enumerate(comp.space.parameters):
            points = []
            for i, value in enumerate(parameter.grid()):
                idx = list(tuned_index)
                idx[axis] = i
                points.append((value, float(grid[tuple(idx)])))
            comp.sensitivity[parameter.name] = points


def _verify(options: TuneOptions, result: TuneResult, progress: Progress) -> None:
    """Default vs tuned on fresh real runs, interleaved so drifts in machine load hit both alike."""
    n = options.verify_samples
    for name, comp in result.components.items():
        workload_options = {"link_mbps": options.link_mbps} if name == "hde" else {}
        workload = make_workload(name, quick=options.quick, **workload_options)
        default = comp.space.default_config()
        task = f"verify-{name}"
        progress.start(task, f"verify {name}: {n} real runs each, default vs tuned", 2 * n)
        started = time.perf_counter()
        base_seed = options.seed + 1_000_000  # never a seed the twin measured
        for i in range(n):
            # Alternate which variant runs first, so neither always gets the warm cache.
            order = [(default, comp.baseline_runs), (comp.tuned_config, comp.tuned_runs)]
            if i % 2:
                order.reverse()
            for config, sink in order:
                sink.append(workload.run(config, base_seed + i))
            progress.advance(task, 2 * (i + 1))
        if name in BUILTIN_SPACES and default == BUILTIN_SPACES[name].default_config():
            # The defaults are the original system's "before" configuration: its published figures compare.
            comp.published = measure_published(name, workload, default, base_seed)
        comp.verify_seconds = time.perf_counter() - started
        progress.finish(task)
        baseline_means = {m: float(np.mean([r[m] for r in comp.baseline_runs])) for m in comp.baseline_runs[0]}
        samples = MetricSamples(
            metric="score",
            goal="maximize",
            baseline=[comp.space.score(r, baseline_means) for r in comp.baseline_runs],
            candidate=[comp.space.score(r, baseline_means) for r in comp.tuned_runs],
        )
        comp.verdict = analyse(samples, settings=options.analysis)


def _save(agent: DQNAgent, env: TuningEnv, options: TuneOptions, result: TuneResult) -> Path:
    path = options.output / "checkpoint.pt"
    options.output.mkdir(parents=True, exist_ok=True)
    profile_hash = "+".join(f"{c.name}:{c.space.space_hash()}" for c in env.components)
    checkpoint = make_checkpoint(
        agent,
        profile_hash=profile_hash,
        normalisation={
            "components": [c.name for c in env.components],
            "baseline_metrics": {c.name: c.twin.metrics_at(c.twin.baseline_index()) for c in env.components},
            "history": env.history,
        },
    )
    return save_checkpoint(path, checkpoint)


def mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([r[m] for r in runs])) for m in runs[0]} if runs else {}


def pct(new: float, old: float) -> float | None:
    if old == 0 or not math.isfinite(old) or not math.isfinite(new):
        return None
    return (new - old) / abs(old) * 100.0


ProgressFactory = Callable[[], Progress]
