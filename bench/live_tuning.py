"""Live tuning quality: how close each method gets to the live optimum in few canaries, and how many canaries hurt.

Every method drives the real controller (`controller.run.reconcile`) with the local adapters (ConfigMaps as
files on tmpfs, metrics from in-process functions) and a simulated clock: each proposal goes through the same
canary (5 → 25 → 50 → 100 %, an analysis of 11 samples per variant every 600 s, promotion only when better at
p < 0.001, rollback when worse or inconclusive), exactly as in a cluster. What differs is only the proposer.

The live system is a twin of the component's real workload (its measured means and single-run noise, as
`bench/tuning_quality.py`'s NoisyObjective draws them): each metric sample of a variant is the mean of the
configuration that variant runs, times (1 + cv × N(0, 1)). `--shift COMPONENT.OPTION=VALUE` measures the live
twin with a workload option changed (e.g. `hde.link_mbps=1000`); the twin prior of `ours_twin_prior` stays
the unshifted twin, measured with other seeds, and, as the operator does, the same twin under the workload's other
conditions (`workloads.twin_conditions`: each condition option from a sixth to six times its default), which the
learned twin weighs by how well they explain the canaries (measured once, then cached).

Methods: `ours` (the learned twin, no prior, with the DQN planning on it), `ours_twin_prior` (the same with the
measured twin as prior), `ours_no_dqn` (the learned twin with a direct acquisition argmax: the ablation),
`previous` (the online DQN the operator used before), `random` (a uniform grid point), `hill_climb` (a random
one-step neighbour), `tpe` and `gp` (Optuna's samplers, told each canary's measured score).

Reported per component and budget (canaries): the fraction of the live optimum reached by the deployed
(stable) configuration, mean and min over seeds, and the harmful canaries: those whose configuration is truly
(noise-free) worse than the stable configuration it challenged. A method that holds (nothing safe and
promising) keeps its last configuration for the larger budgets. For the learned twin's methods, `calib` is how
honest its uncertainty was: the root mean square, over every run, of (measured − predicted) / predicted sd at each
canaried configuration's first measurement (`status.learning[].calibration`; 1 is honest, above 1 overconfident).
With 20 among the budgets, each component ends with the two live-tuning targets at 20 canaries, met or not (`targets`):
without a prior, `ours` against the better of TPE and GP and a third of its harmful canaries; under a shift,
`ours_twin_prior` against 0.95 of the live optimum and one harmful canary in the worst run (`harmful_max`).

    python bench/live_tuning.py --seeds 1,2,3 --budgets 5,10,20,40 --components hde,pba,acp --json out.json
    python bench/live_tuning.py --components hde --shift hde.link_mbps=1000 --methods ours_twin_prior,gp
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from dwcp_autotuner.canary.protocol import CANARY_KEY, ConfigRef, canonical_json
from dwcp_autotuner.cli.arguments import names, wholes
from dwcp_autotuner.controller.context import Ports, RunContext
from dwcp_autotuner.controller.run import reconcile
from dwcp_autotuner.env.twin import Twin, load_or_measure_twin
from dwcp_autotuner.models.builtin import BUILTIN_SPACES
from dwcp_autotuner.models.errors import format_validation_error
from dwcp_autotuner.models.profile import ParameterProfileSpec
from dwcp_autotuner.models.run import OptimizationRunSpec, RunAgentSettings, RunStatus
from dwcp_autotuner.ports.base import RecordingEvents
from dwcp_autotuner.ports.local import FileConfigStore, InProcessMetrics
from dwcp_autotuner.proposers.base import NoProposal, Proposal, Proposer
from dwcp_autotuner.workloads import make_workload, twin_conditions

NS, CM = "live", "target"
INTERVAL = 600.0
METHODS = ("ours", "ours_twin_prior", "ours_no_dqn", "previous", "random", "hill_climb", "tpe", "gp")
# The learned twin as a deep ensemble instead of a GP; the ablation with a twin prior.
EXTRA_METHODS = ("ours_ensemble", "ours_ensemble_twin_prior", "ours_no_dqn_twin_prior")
DEFAULT_OPTIONS = {"hde": {"link_mbps": 100.0}}
LIVE_SEED, PRIOR_SEED = 100, 0  # the live twin and the prior twin are measured with different seeds


# --- the live system -------------------------------------------------------------------------------------
@dataclass
class Live:
    """A component as the canary sees it: every metric sample a noisy draw around its configuration's mean."""

    name: str
    twin: Twin
    store: FileConfigStore
    seed: int

    def profile(self) -> ParameterProfileSpec:
        spec = self.twin.space.dump()
        for metric in spec["metrics"]:
            metric["query"] = f'{self.name}_{metric["name"]}{{variant="{{{{variant}}}}"}}'
        return ParameterProfileSpec.model_validate({**spec, "target": {"name": CM}})

    def config(self, variant: str) -> dict | None:
        data = self.store.read(ConfigRef(NS, CM)).data
        raw = data.get(CANARY_KEY) if variant == "canary" else data.get("config.json")
        return None if raw is None else json.loads(raw)

    def metrics(self) -> InProcessMetrics:
        source = InProcessMetrics()
        names = self.twin.metric_names
        for m, metric in enumerate(names):
            for variant in ("stable", "canary"):
                source.register(f'{self.name}_{metric}{{variant="{variant}"}}', self._sampler(m, metric, variant))
        return source

    def _sampler(self, m: int, metric: str, variant: str) -> Callable[[float], float | None]:
        def sample(t: float) -> float | None:
            config = self.config(variant)
            if config is None:
                return None
            mean = float(self.twin.means[self.twin.index_of(config)][m])
            key = hashlib.sha256(f"{self.seed}/{metric}/{variant}/{t:.0f}".encode()).digest()
            z = np.random.default_rng(int.from_bytes(key[:8], "big")).standard_normal()
            return mean * (1.0 + float(self.twin.noise_cv[m]) * z)

        return sample

    def score(self, config: dict) -> float:
        return float(self.twin.score_grid()[self.twin.index_of(config)])

    def fraction(self, config: dict) -> float:
        return self.twin.fraction_of_optimum(self.score(config))


class JointLive:
    """All three components as one profile of nine parameters (the joint space `tune` trains on).

    Each component's objective terms and penalties are divided by the magnitude of its default score, so the
    joint score is the sum of the three components' scores relative to their defaults; the live optimum is the
    sum of their optima (they do not interact). Its grid (~4 × 10⁸ configurations) cannot be enumerated: this
    is where a planner that walks the twin may matter."""

    def __init__(self, twins: dict[str, Twin], store: FileConfigStore | None, seed: int) -> None:
        from dwcp_autotuner.models.space import TuningSpace

        self.twins, self.store, self.seed, self.name = twins, store, seed, "joint"
        self.weights = {c: 1.0 / abs(float(t.score_grid()[t.baseline_index()])) for c, t in twins.items()}
        parameters, metrics, objective, constraints = [], [], [], []
        for c, twin in twins.items():
            space = twin.space.dump()
            parameters += space["parameters"]
            metrics += space["metrics"]
            objective += [{**t, "weight": t.get("weight", 1.0) * self.weights[c]} for t in space["objective"]]
            constraints += [
                {**k, "penalty": k.get("penalty", 1.0) * self.weights[c]} for k in space.get("constraints", [])
            ]
        self.space = TuningSpace.model_validate(
            {"parameters": parameters, "metrics": metrics, "objective": objective, "constraints": constraints}
        )
        self.owner = {m: (c, twin.metric_names.index(m)) for c, twin in twins.items() for m in twin.metric_names}

    def profile(self) -> ParameterProfileSpec:
        spec = self.space.dump()
        for metric in spec["metrics"]:
            metric["query"] = f'joint_{metric["name"]}{{variant="{{{{variant}}}}"}}'
        return ParameterProfileSpec.model_validate({**spec, "target": {"name": CM}})

    config = Live.config

    def metrics(self) -> InProcessMetrics:
        source = InProcessMetrics()
        for metric, (c, m) in self.owner.items():
            for variant in ("stable", "canary"):
                source.register(f'joint_{metric}{{variant="{variant}"}}', self._sampler(c, m, metric, variant))
        return source

    def _sampler(self, c: str, m: int, metric: str, variant: str):
        twin = self.twins[c]

        def sample(t: float) -> float | None:
            config = self.config(variant)
            if config is None:
                return None
            mean = float(twin.means[twin.index_of(config)][m])
            key = hashlib.sha256(f"{self.seed}/{metric}/{variant}/{t:.0f}".encode()).digest()
            z = np.random.default_rng(int.from_bytes(key[:8], "big")).standard_normal()
            return mean * (1.0 + float(twin.noise_cv[m]) * z)

        return sample

    def score(self, config: dict) -> float:
        return sum(self.weights[c] * float(t.score_grid()[t.index_of(config)]) for c, t in self.twins.items())

    def fraction(self, config: dict) -> float:
        return self.score(config) / sum(self.weights[c] * float(t.score_grid().max()) for c, t in self.twins.items())

    def prior_mean(self, priors: dict[str, Twin]):
        """The three prior twins as one prior mean over the joint grid (indices in the joint parameter order)."""
        grids = {c: t.score_grid() for c, t in priors.items()}
        sizes = [len(t.space.parameters) for t in priors.values()]

        def prior(indices: np.ndarray) -> np.ndarray:
            idx = np.asarray(indices, dtype=int)
            total, start = np.zeros(len(idx)), 0
            for (c, grid), size in zip(grids.items(), sizes):
                total += self.weights[c] * grid[tuple(idx[:, start : start + size].T)]
                start += size
            return total

        return prior


# --- baseline proposers (bench-only) ------------------------------------------------------------------------
def _grid_config(space, index) -> dict:
    return {p.name: p.grid()[i] for p, i in zip(space.parameters, index)}


class RandomSearch(Proposer):
    def __init__(self, seed: int) -> None:
        self.rng, self.tried = np.random.default_rng(seed), set()

    def propose(self, name, profile, stable):
        self.tried.add(canonical_json(stable))
        for _ in range(1000):
            config = _grid_config(profile, [int(self.rng.integers(len(p.grid()))) for p in profile.parameters])
            if canonical_json(config) not in self.tried:
                self.tried.add(canonical_json(config))
                return Proposal(config=config, reason="random")
        return NoProposal("Exhausted", "every configuration was tried")


class HillClimb(Proposer):
    """A random one-step move of one parameter from the stable configuration, not tried before."""

    def __init__(self, seed: int) -> None:
        self.rng, self.tried = np.random.default_rng(seed), set()

    def propose(self, name, profile, stable):
        self.tried.add(canonical_json(stable))
        moves = [(p, d) for p in profile.parameters for d in (-1, 1)]
        self.rng.shuffle(moves)
        for parameter, direction in moves:
            config = dict(stable)
            config[parameter.name] = parameter.move(stable[parameter.name], direction)
            if canonical_json(config) not in self.tried:
                self.tried.add(canonical_json(config))
                return Proposal(config=config, reason="hill climb")
        return NoProposal("LocalOptimum", "every neighbour of the stable configuration was tried")


class OptunaProposer(Proposer):
    """Optuna's ask/tell behind the canary: each canary's measured score (its last analysis) is told."""

    def __init__(self, sampler: str, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler_object = (
            optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.GPSampler(seed=seed)
        )
        self.study = optuna.create_study(direction="maximize", sampler=sampler_object)
        self.pending: dict[str, object] = {}  # candidate json -> trial
        self.measured: dict[str, float] = {}

    def propose(self, name, profile, stable):
        trial = self.study.ask()
        index = [trial.suggest_int(p.name, 0, len(p.grid()) - 1) for p in profile.parameters]
        config = _grid_config(profile, index)
        key = canonical_json(config)
        if key == canonical_json(stable):
            self.study.tell(trial, self.measured.get(key, 0.0))  # proposing the stable one: no canary
            return NoProposal("NoChange", "the sampler proposed the stable configuration")
        self.pending[key] = trial
        return Proposal(config=config, reason=f"optuna {type(self.study.sampler).__name__}")

    def observe(self, name, profile, stable, canary, step):
        if step.canary.score is not None:
            self.measured[canonical_json(canary)] = step.canary.score
        if step.stable.score is not None:
            self.measured[canonical_json(stable)] = step.stable.score

    def learn(self, name, profile, verdict):
        key = canonical_json(verdict.proposed)
        trial = self.pending.pop(key, None)
        if trial is not None:
            self.study.tell(trial, self.measured.get(key, 0.0))


def make_proposer(method: str, seed: int, prior, spec: OptimizationRunSpec) -> Proposer:
    settings, exploration = spec.agent, spec.exploration
    if method == "random":
        return RandomSearch(seed)
    if method == "hill_climb":
        return HillClimb(seed)
    if method in ("tpe", "gp"):
        return OptunaProposer(method, seed)
    if method == "previous":
        from dwcp_autotuner.proposers.pool import AgentPool

        return AgentPool(settings)  # the profile has no twin: the online DQN
    from dwcp_autotuner.proposers.learned import LearnedTwinProposer

    return LearnedTwinProposer(
        settings,
        exploration=exploration,
        prior_twins={"live": prior} if method.endswith("twin_prior") and prior is not None else {},
        planner="none" if "no_dqn" in method or "ensemble" in method else "dqn",
        deterministic=True,
        surrogate="ensemble" if "ensemble" in method else "gp",
        significance=spec.rollout.significance,
        analyses=spec.rollout.max_inconclusive,
    )


# --- one run ----------------------------------------------------------------------------------------------
@dataclass
class Trace:
    fractions: list[float] = field(default_factory=list)  # after each canary
    harmful: list[bool] = field(default_factory=list)
    start_fraction: float = 0.0
    held: str | None = None
    seconds: float = 0.0
    checks: int = 0  # canaried configurations whose first measurement checked the learned twin's prediction
    calibration: float | None = None  # RMS of those checks' errors, in predicted standard deviations


def run_spec(seed: int, budget: int, exploration: dict | None, rollout: dict | None) -> OptimizationRunSpec:
    """The run every method gets: the bench's interval and samples, `--exploration` / `--rollout` over them."""
    settings = RunAgentSettings.model_validate(
        {"seed": seed, "batchSize": 16, "hiddenSizes": [64, 64], "learningStarts": 16, "persistModel": False}
    )
    return OptimizationRunSpec.model_validate(
        {
            "profiles": ["live"],
            "budget": {"maxProposals": budget * 4},
            "agent": settings.model_dump(by_alias=True),
            "rollout": {"analysisIntervalSeconds": INTERVAL, "sampleSeconds": 60, "minSamples": 5, **(rollout or {})},
            "exploration": {"rejectedCooldownSeconds": 10**8, **(exploration or {})},
        }
    )


def run_one(
    component: str,
    method: str,
    seed: int,
    live_twin,
    prior,
    budget: int,
    root: Path,
    exploration: dict | None = None,
    rollout: dict | None = None,
) -> Trace:
    started = time.perf_counter()
    folder = root / f"{component}-{method}-{seed}"
    store = FileConfigStore(folder)
    if component == "joint":  # live_twin: the three live twins; prior: the three prior twins
        live = JointLive(live_twin, store, seed)
        prior = (live.prior_mean(prior), "the three measured twins")
        default = live.space.default_config()
    else:
        live = Live(component, live_twin, store, seed)
        default = live_twin.space.default_config()
    store.put(NS, CM, {"config.json": canonical_json(default)})
    spec = run_spec(seed, budget, exploration, rollout)
    proposer = make_proposer(method, seed, prior, spec)
    profiles = {"live": live.profile()}
    metrics, events = live.metrics(), RecordingEvents()
    status, now = RunStatus(), dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    trace = Trace(start_fraction=live.fraction(default))
    last, idle = 0, 0  # the last proposal number seen; proposals in a row without a canary
    for _ in range(budget * 12 + 40):
        now += dt.timedelta(seconds=INTERVAL + 1)
        ctx = RunContext("tune", NS, "uid", 1, spec, status, profiles, now)
        status = reconcile(ctx, Ports(store, metrics, events, proposer))
        for record in [r for r in status.history if r.number > last]:
            last = record.number
            if record.verdict in ("Promoted", "RolledBack") and record.stable_config is not None:
                trace.harmful.append(live.score(record.config) < live.score(record.stable_config) - 1e-12)
                trace.fractions.append(live.fraction(live.config("stable")))
                idle = 0
            elif record.verdict == "Held":
                trace.held, idle = record.message, idle + 1
        if len(trace.fractions) >= budget or idle >= 10 or status.phase in ("Succeeded", "RolledBack", "Failed"):
            break
    trace.seconds = time.perf_counter() - started
    learning = status.learning.get("live")
    if learning is not None and learning.calibration is not None:
        trace.checks, trace.calibration = learning.prediction_checks, learning.calibration
    proposer.close()
    shutil.rmtree(folder, ignore_errors=True)
    return trace


def summarize(traces: list[Trace], budgets: list[int]) -> dict:
    """Per budget: the mean and least fraction of the optimum, the harmful canaries (mean and most in a run) and the
    canaries made, at full precision: the targets are judged on these, and only the JSON is rounded (judged on
    rounded means, a difference in the fifth digit could read as a tie, and a tie counts as met)."""
    out: dict = {}
    for budget in budgets:
        values = [at_budget(t, budget) for t in traces]
        harmful = [sum(t.harmful[:budget]) for t in traces]
        out[budget] = {
            "fraction_mean": float(np.mean(values)),
            "fraction_min": float(np.min(values)),
            "harmful": float(np.mean(harmful)),
            "canaries": float(np.mean([min(budget, len(t.fractions)) for t in traces])),
            "harmful_max": int(np.max(harmful)),
        }
    return out


JSON_DIGITS = {"fraction_mean": 4, "fraction_min": 4, "harmful": 3, "canaries": 2, "calibration": 3}


def rounded(results: dict) -> dict:
    """`results` as the JSON holds it: each figure to the digits it is read to."""

    def one(key, value):
        if isinstance(value, dict):
            return rounded(value)
        return round(value, JSON_DIGITS[key]) if key in JSON_DIGITS else value

    return {key: one(key, value) for key, value in results.items()}


def pooled_calibration(traces: list[Trace]) -> float | None:
    """The RMS of every run's prediction checks together (each run's RMS weighted by its number of checks)."""
    checked = [(t.checks, t.calibration) for t in traces if t.calibration is not None and t.checks]
    if not checked:
        return None
    return float(np.sqrt(sum(n * c * c for n, c in checked) / sum(n for n, _ in checked)))


def at_budget(trace: Trace, budget: int) -> float:
    if not trace.fractions:
        return trace.start_fraction
    return trace.fractions[min(budget, len(trace.fractions)) - 1]


# --- twins ---------------------------------------------------------------------------------------------------
def twins_for(component: str, shifts: dict, quick: bool, cache: Path | None, family: bool = False):
    """(live twin, prior): the prior is the unshifted twin, measured with another seed; with `family`, the list
    [({}, that twin), (conditions, the twin under them) ...] over `twin_conditions`, as the operator measures it."""
    if component == "joint":
        pairs = {c: twins_for(c, shifts.get(c, {}), quick, cache) for c in ("hde", "pba", "acp")}
        return {c: p[0] for c, p in pairs.items()}, {c: p[1] for c, p in pairs.items()}
    space = BUILTIN_SPACES[component]
    options = dict(DEFAULT_OPTIONS.get(component, {}))
    live_options = {**options, **shifts}
    live, _ = load_or_measure_twin(
        space, make_workload(component, quick=quick, **live_options), seed=LIVE_SEED, cache_dir=cache
    )
    prior, _ = load_or_measure_twin(
        space, make_workload(component, quick=quick, **options), seed=PRIOR_SEED, cache_dir=cache
    )
    if not family:
        return live, prior
    others = []
    for conditions in twin_conditions(component):
        workload = make_workload(component, quick=quick, **{**options, **conditions})
        others.append((conditions, load_or_measure_twin(space, workload, seed=PRIOR_SEED, cache_dir=cache)[0]))
    return live, [({}, prior), *others]


TARGET_BUDGET = 20  # the targets are set at 20 canaries


def targets(component: dict, budget: int, shifted: bool) -> list[str]:
    """The two live-tuning quality targets, judged on one component's results (`results[component]`) at `budget`.

    Without a prior: `ours` at least as close to the optimum as the better of TPE and GP, with at most a third
    of that method's harmful canaries. With the measured twin as prior, under a shift: at least 0.95 of the
    live optimum, with at most one harmful canary in each run. A target whose methods were not run is left out."""
    lines = []
    baselines = [m for m in ("tpe", "gp") if budget in component.get(m, {})]
    if budget in component.get("ours", {}) and baselines:
        ours = component["ours"][budget]
        best = max(baselines, key=lambda m: component[m][budget]["fraction_mean"])
        theirs = component[best][budget]
        close = ours["fraction_mean"] >= theirs["fraction_mean"]
        safe = ours["harmful"] <= theirs["harmful"] / 3.0
        lines.append(
            f"target without a prior: ours {ours['fraction_mean']:.3f} vs {best} (the better of "
            f"{' and '.join(baselines)}) {theirs['fraction_mean']:.3f}, ratio "
            f"{ours['fraction_mean'] / max(theirs['fraction_mean'], 1e-12):.3f}; harmful {ours['harmful']:.2f} per run "
            f"vs a third of {best}'s, {theirs['harmful'] / 3.0:.2f}: {'met' if close and safe else 'not met'}"
        )
    if shifted:
        for method in ("ours_twin_prior", "ours_no_dqn_twin_prior"):
            if budget not in component.get(method, {}):
                continue
            cell = component[method][budget]
            most = cell.get("harmful_max", cell["harmful"])
            met = cell["fraction_mean"] >= 0.95 and most <= 1
            lines.append(
                f"target under the shift: {method} {cell['fraction_mean']:.3f} of the live optimum (0.95 or more), "
                f"at most {most:g} harmful canaries in a run (1 or fewer): {'met' if met else 'not met'}"
            )
    return lines


def progress(text: str) -> None:
    """What the bench is doing now, on one line of a terminal's stderr that the next overwrites (the table on stdout
    stays clean; nothing where stderr is a file, as in CI)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text)
        sys.stderr.flush()


def parse_shifts(values: list[str], components: list[str]) -> dict[str, dict[str, float]]:
    """The --shift flags by component, checked before any twin is measured: each names a workload option of a
    component the run measures, with a value that workload accepts."""
    shifts: dict[str, dict[str, float]] = {}
    for value in values:
        try:
            target, number = value.split("=", 1)
            component, option = target.split(".", 1)
            shifts.setdefault(component, {})[option] = float(number)
        except ValueError:
            raise SystemExit(f"--shift {value!r}: expected COMPONENT.OPTION=VALUE, e.g. hde.link_mbps=1000") from None
    measured = set(BUILTIN_SPACES) if "joint" in components else set(components)
    for component, options in shifts.items():
        if component not in measured:
            raise SystemExit(
                f"--shift {component}.…: {component} is not among the components measured "
                f"({', '.join(sorted(measured))}; see --components)"
            )
        try:  # building one is cheap (its data is made on first run) and checks the values the workload itself checks
            make_workload(component, quick=True, **{**DEFAULT_OPTIONS.get(component, {}), **options})
        except (TypeError, ValueError) as error:
            raise SystemExit(f"--shift: {error}") from None
    return shifts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=wholes(0), default="1,2,3")
    parser.add_argument("--budgets", type=wholes(1), default="5,10,20,40")
    parser.add_argument("--components", type=names([*BUILTIN_SPACES, "joint"]), default="hde,pba,acp")
    parser.add_argument("--methods", type=names(METHODS + EXTRA_METHODS), default=",".join(METHODS))
    parser.add_argument("--shift", action="append", default=[], metavar="COMPONENT.OPTION=VALUE")
    parser.add_argument("--full-twins", action="store_true", help="twins of the full workloads (slower to measure)")
    parser.add_argument("--cache-dir", type=Path, help="where the twins are cached (default: tune's cache)")
    parser.add_argument(
        "--exploration",
        type=json.loads,
        default={},
        help="spec.exploration of every run, as JSON (e.g. '{\"safetyMarginPct\": 10}')",
    )
    parser.add_argument(
        "--rollout",
        type=json.loads,
        default={},
        help="spec.rollout of every run, as JSON, over the bench's interval and samples "
        "(e.g. '{\"promisingExtraAnalyses\": 3}')",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write the convergence curves (PNG) here")
    args = parser.parse_args(argv)
    # The controller logs every transition (rollbacks as warnings): thousands of lines here, none of them news.
    logging.getLogger("dwcp_autotuner").setLevel(logging.ERROR)
    seeds, budgets, components = args.seeds, sorted(set(args.budgets)), list(dict.fromkeys(args.components))
    methods = list(dict.fromkeys(args.methods))
    shifts = parse_shifts(args.shift, components)
    try:  # an invalid --exploration / --rollout is said in one line before any twin is measured
        run_spec(seeds[0], max(budgets), args.exploration, args.rollout)
    except ValidationError as error:
        raise SystemExit(f"--exploration / --rollout: {format_validation_error(error, 'spec')}") from None
    root = Path(tempfile.mkdtemp(prefix="live-tuning-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    results: dict = {}
    curves: dict = {}
    started = time.perf_counter()
    try:
        for component in components:
            scoped = shifts if component == "joint" else shifts.get(component, {})
            family = any(m.endswith("twin_prior") for m in methods) and component != "joint"
            twins = "the live twin and the prior" + (" under each of its workload's other conditions" if family else "")
            progress(f"{component}: measuring {twins} (cached after the first time) …")
            live_twin, prior = twins_for(component, scoped, not args.full_twins, args.cache_dir, family)
            progress("")
            if component == "joint":
                view = JointLive(live_twin, None, 0)
                shape = tuple(n for t in live_twin.values() for n in t.grid_shape)
                shift_text = ", ".join(f"{c}.{k}={v:g}" for c, o in shifts.items() for k, v in o.items()) or "none"
            else:
                view, shape = Live(component, live_twin, None, 0), live_twin.grid_shape
                shift_text = ", ".join(f"{k}={v:g}" for k, v in scoped.items()) or "none"
            print(
                f"\n{component}: grid {shape}, shift {shift_text}, default = "
                f"{view.fraction(view.space.default_config() if component == 'joint' else live_twin.space.default_config()):.3f} "
                "of the live optimum"
            )
            print(
                f"{'method':<16}"
                + "".join(f"{f'@{b}':>22}" for b in budgets)
                + f"{'harmful/canaries':>20}{'s/run':>8}{'calib':>7}"
            )
            results[component] = {}
            for method in methods:
                traces = []
                for k, seed in enumerate(seeds):
                    progress(f"{component} {method}: run {k + 1} of {len(seeds)} (seed {seed}) …")
                    traces.append(
                        run_one(
                            component,
                            method,
                            seed,
                            live_twin,
                            prior,
                            max(budgets),
                            root,
                            args.exploration,
                            args.rollout,
                        )
                    )
                progress("")
                out = summarize(traces, budgets)
                cells = [
                    f"{out[b]['fraction_mean']:.3f} ({out[b]['fraction_min']:.3f}) {out[b]['harmful']:.1f}h"
                    for b in budgets
                ]
                last = out[budgets[-1]]
                harm = f"{last['harmful']:.1f}/{last['canaries']:.1f}"
                seconds = np.mean([t.seconds for t in traces])
                calibration = pooled_calibration(traces)
                if calibration is not None:
                    out["calibration"] = calibration
                print(
                    f"{method:<16}"
                    + "".join(f"{c:>22}" for c in cells)
                    + f"{harm:>20}{seconds:>8.1f}"
                    + ("" if calibration is None else f"{calibration:>7.2f}")
                )
                results[component][method] = out
                curves.setdefault(component, {})[method] = [
                    [at_budget(t, k) for k in range(1, max(budgets) + 1)] for t in traces
                ]
            if TARGET_BUDGET in budgets and component != "joint":
                for line in targets(results[component], TARGET_BUDGET, bool(scoped)):
                    print(line)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n(@N: fraction of the live optimum of the deployed configuration after N canaries, mean (min) over seeds, "
        f"and Nh: canaries among the first N truly worse than the stable configuration they challenged, mean per run; "
        f"calib: the learned twin's prediction errors at each new canary, RMS in its own standard deviations, "
        f"about 1 when its uncertainty is honest; "
        f"{time.perf_counter() - started:.0f} s)"
    )
    if args.json:
        args.json.write_text(json.dumps({"results": rounded(results), "seeds": seeds, "shifts": shifts}, indent=1))
    if args.plot:
        _plot(curves, args.plot)
    return 0


def _plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (component, methods) in zip(axes[0], curves.items()):
        for method, runs in methods.items():
            mean = np.mean(np.array(runs), axis=0)
            ax.plot(range(1, len(mean) + 1), mean, label=method, linewidth=2.2 if method.startswith("ours") else 1.2)
        ax.set_title(component)
        ax.set_xlabel("canaries")
        ax.set_ylabel("fraction of the live optimum")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
