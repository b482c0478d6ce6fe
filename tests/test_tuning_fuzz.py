"""Tuning random profiles: the learned twin drives the real controller on generated parameter spaces and landscapes.

Most users' components have no twin, and their profiles look nothing like the three built-in ones: one parameter
or seven, choices, floats with odd bounds, scores that are negative, near zero, constant or 10¹². Each case here is
a generated profile and a landscape over it, tuned through `reconcile` (the local adapters: the ConfigMap as files,
metrics from in-process functions, a simulated clock) with the learned twin and its DQN planner, with an operator
restart half-way (a new proposer from the stored model). Whatever the case, no tick may raise (under Kopf that is a
run Degraded for good), every configuration written must be within the profile's bounds, and the run must end or
hold with its reason. This found four bugs: a proposer crash in a trust region too large to screen every point
(seven parameters), a crash where the stable score was exactly zero, step records that rounded a score of 3e-7 to
0, and grid values rounded past a bound with more than ten decimals.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math

import numpy as np
import pytest

from dwcp_autotuner.canary.protocol import CANARY_KEY, ConfigRef, canonical_json
from dwcp_autotuner.controller.context import Ports, RunContext
from dwcp_autotuner.controller.run import reconcile
from dwcp_autotuner.models.profile import ParameterProfileSpec
from dwcp_autotuner.models.run import OptimizationRunSpec, RunStatus
from dwcp_autotuner.ports.base import RecordingEvents
from dwcp_autotuner.ports.local import FileConfigStore, InProcessMetrics
from dwcp_autotuner.proposers.learned import LearnedTwinProposer
from dwcp_autotuner.proposers.store import ModelStore

pytestmark = pytest.mark.slow
NS, CM = "live", "target"
CASES = 24
BUDGET = 8  # canaries per run
SCALES = ("positive", "negative", "signed", "tiny", "constant", "huge")


def _parameter(rng: np.random.Generator, name: str) -> dict:
    kind = str(rng.choice(["int", "int-log2", "float", "float-log2", "choice", "choice-number", "wide"]))
    if kind == "int":
        low = int(rng.integers(-50, 50))
        high = low + int(rng.integers(1, 30))
        return {"name": name, "min": low, "max": high, "default": int(rng.integers(low, high + 1)), "step": 2}
    if kind == "int-log2":
        low = int(rng.integers(1, 8))
        high = low * 2 ** int(rng.integers(1, 9))
        return {"name": name, "min": low, "max": high, "default": low * 2, "scale": "log2"}
    if kind == "float":  # bounds with sixteen significant digits, a step that does not divide the range
        low = float(rng.uniform(-1, 1))
        high = low + float(rng.uniform(0.01, 5))
        step = (high - low) / float(rng.uniform(1.5, 40))
        return {"name": name, "type": "float", "min": low, "max": high, "default": low, "step": step}
    if kind == "float-log2":
        low = float(10 ** rng.uniform(-12, 0))
        return {"name": name, "type": "float", "min": low, "max": low * float(rng.uniform(1.5, 1000)), "default": low}
    if kind == "wide":
        return {"name": name, "min": 0, "max": 3000, "default": 1500}
    if kind == "choice-number":
        values = sorted({int(v) for v in rng.integers(0, 100, size=int(rng.integers(1, 6)))})
        return {"name": name, "type": "choice", "choices": values, "default": values[-1]}
    values = [f"v{k}" for k in range(int(rng.integers(1, 6)))]
    return {"name": name, "type": "choice", "choices": values, "default": values[0]}


def _case(seed: int):
    """A profile (one to seven parameters, a guard or not), its landscape and its noise."""
    rng = np.random.default_rng(seed)
    parameters = [_parameter(rng, f"p{i}") for i in range(int(rng.integers(1, 8)))]
    for p in parameters:
        if p.get("type") == "float" and "step" not in p:
            p["scale"] = "log2"
    spec = {
        "target": {"name": CM},
        "parameters": parameters,
        "metrics": [
            {"name": "score", "query": 'score{variant="{{variant}}"}'},
            {"name": "latency", "query": 'latency{variant="{{variant}}"}'},
        ],
        "objective": [{"metric": "score", "goal": "maximize"}],
    }
    if rng.integers(0, 2):
        spec["guards"] = [{"metric": "latency", "goal": "minimize", "maxDegradationPct": float(rng.uniform(0, 30))}]
    profile = ParameterProfileSpec.model_validate(spec)
    grid = profile.tuning_space().parameters
    top, width, roughness = rng.uniform(0, 1, len(grid)), rng.uniform(0.2, 1.5, len(grid)), rng.uniform(0, 0.5)

    def position(p, value) -> float:  # where a value lies, for this profile and for an edited one alike
        if p.type == "choice":
            return int.from_bytes(hashlib.sha256(str(value).encode()).digest()[:2], "big") / 2**16
        return p.normalize(value)

    scale, cv = SCALES[seed % len(SCALES)], float(rng.choice([0.0, 0.01, 0.1, 0.3]))

    def score(config: dict) -> float:
        x = np.array([position(p, config[p.name]) for p in grid])
        bump = int.from_bytes(hashlib.sha256(canonical_json(config).encode()).digest()[:4], "big") / 2**32 - 0.5
        v = math.exp(-float(np.sum(((x - top) / width) ** 2))) + roughness * bump
        return {
            "positive": 10 + 100 * v,
            "negative": -1000 + 100 * v,
            "signed": 100 * (v - 0.5),
            "tiny": 3e-7 * (1 + v),
            "constant": 5.0,
            "huge": 1e12 * (1 + v),
        }[scale]

    return profile, score, cv


def _variant(profile: ParameterProfileSpec, seed: int) -> ParameterProfileSpec:
    """The profile as its user edits it: other bounds, a choice gained or dropped; the same names and types, so the
    first run's stored model is a similar one, the learned twin's prior."""
    rng = np.random.default_rng([seed, 1])
    parameters = []
    for p in profile.dump()["parameters"]:
        if p["type"] == "choice":
            choices = list(p["choices"])
            if rng.integers(0, 2) and len(choices) > 1:
                choices = [c for c in choices if c != choices[-1] or c == p["default"]]
            else:
                choices.append(f"new{seed}" if isinstance(choices[0], str) else max(choices) + 1)
            p = {**p, "choices": choices}
        elif p.get("scale") == "log2":
            p = {**p, "max": p["max"] * 2}
        else:
            p = {**p, "min": p["min"] - p["step"] * int(rng.integers(0, 3))}
        parameters.append(p)
    return ParameterProfileSpec.model_validate({**profile.dump(), "parameters": parameters})


def _tune(seed: int, profile: ParameterProfileSpec, score, cv: float, store: FileConfigStore):
    store.put(NS, CM, {"config.json": canonical_json(profile.default_config())})
    written: list[dict] = []

    def config(variant: str) -> dict | None:
        data = store.read(ConfigRef(NS, CM)).data
        raw = data.get(CANARY_KEY) if variant == "canary" else data.get("config.json")
        if raw is None:
            return None
        written.append(json.loads(raw))
        return written[-1]

    metrics = InProcessMetrics()
    for variant in ("stable", "canary"):

        def sample(t: float, variant=variant) -> float | None:
            c = config(variant)
            z = np.random.default_rng([seed, int(t), variant == "canary"]).standard_normal()
            return None if c is None else score(c) + cv * abs(score(c)) * z

        def latency(t: float, variant=variant) -> float | None:
            c = config(variant)
            return None if c is None else 100.0 + len(canonical_json(c)) % 7

        metrics.register(f'score{{variant="{variant}"}}', sample)
        metrics.register(f'latency{{variant="{variant}"}}', latency)
    spec = OptimizationRunSpec.model_validate(
        {
            "profiles": ["live"],
            "budget": {"maxProposals": BUDGET},
            "agent": {"seed": seed, "batchSize": 16, "hiddenSizes": [32], "learningStarts": 16, "persistModel": True},
            "rollout": {"analysisIntervalSeconds": 600, "sampleSeconds": 60, "minSamples": 5},
        }
    )

    def proposer() -> LearnedTwinProposer:
        return LearnedTwinProposer(
            spec.agent, exploration=spec.exploration, models=ModelStore(store, NS), deterministic=True
        )

    current, status, now = proposer(), RunStatus(), dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    for tick in range(BUDGET * 8 + 20):
        now += dt.timedelta(seconds=601)
        if tick == BUDGET * 3:  # an operator restart: the new process's proposer loads the stored model
            current.close()
            current = proposer()
        status = reconcile(
            RunContext("run", NS, "uid", 1, spec, status, {"live": profile}, now),
            Ports(store, metrics, RecordingEvents(), current),
        )
        if status.phase in ("Succeeded", "RolledBack", "Failed"):
            break
    current.close()
    return status, written


@pytest.mark.parametrize("seed", range(CASES))
def test_a_generated_profile_is_tuned_without_an_error_within_its_bounds_and_ends_or_holds_with_a_reason(
    seed, tmp_path
):
    """Then the same profile as its user edits it, with the first run's stored model as the prior."""
    profile, score, cv = _case(seed)
    store = FileConfigStore(tmp_path)
    for tuned in (profile, _variant(profile, seed)):
        status, written = _tune(seed, tuned, score, cv, store)
        assert written, "nothing was ever read from the ConfigMap"
        for config in written:
            assert tuned.coerce_config(config) == config  # within the bounds, as the ConfigMap's check sees it
        ready = next(c for c in status.conditions if c.type == "Ready")
        assert ready.status == "True", ready.message
        assert not [c for c in status.conditions if c.type == "Degraded" and c.status == "True"]
        if status.phase not in ("Succeeded", "RolledBack"):
            assert status.phase == "Proposing" and "(NothingSafe)" in (status.message or ""), status.message
        assert sum(1 for r in status.history if r.verdict in ("Promoted", "RolledBack")) >= 1, status.message
