"""Continuous reoptimization and learning from production, at the state-machine level.

File-backed ConfigMaps, in-process metrics whose values depend on the configuration each variant
runs (read from the ConfigMap), the real AgentPool (online DQN, small network) and a simulated clock.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re

import numpy as np
import pytest
import torch

from dwcp_autotuner.agent.checkpoint import make_checkpoint
from dwcp_autotuner.agent.dqn import DQNAgent
from dwcp_autotuner.agent.protocol import Transition
from dwcp_autotuner.canary.protocol import CANARY_KEY, ConfigRef, canonical_json
from dwcp_autotuner.controller.context import Ports, RunContext
from dwcp_autotuner.controller.continuous import frozen
from dwcp_autotuner.controller.profiles import validate_profile
from dwcp_autotuner.controller.run import reconcile
from dwcp_autotuner.models.agent import AgentSettings
from dwcp_autotuner.models.profile import ParameterProfileSpec
from dwcp_autotuner.models.run import OptimizationRunSpec, RunAgentSettings, RunStatus
from dwcp_autotuner.ports.base import Foreign, OwnerRef, RecordingEvents
from dwcp_autotuner.ports.local import FileConfigStore, InProcessMetrics
from dwcp_autotuner.proposers.base import Proposal, ProposalVerdict, Proposer
from dwcp_autotuner.proposers.pool import AgentPool
from dwcp_autotuner.proposers.store import ModelStore, model_configmap_name
from tests.support.profiles import tiny_twin_spec

NS = "tuning"
STABLE = {"batch": 10, "timeout": 1000}


def make_profile(batch_max: int = 100) -> ParameterProfileSpec:
    return ParameterProfileSpec.model_validate(
        {
            "target": {"name": "svc-config"},
            "parameters": [
                {"name": "batch", "min": 1, "max": batch_max, "default": 10, "scale": "log2"},
                {"name": "timeout", "min": 100, "max": 5000, "default": 1000, "scale": "log2"},
            ],
            "metrics": [
                {"name": "throughput", "query": 'svc_throughput{variant="{{variant}}"}'},
                {"name": "errors", "query": 'svc_errors{variant="{{variant}}"}'},
            ],
            "objective": [{"metric": "throughput", "goal": "maximize"}],
        }
    )


_numbers = itertools.count(1)


def verdict(stable, proposed, reward) -> ProposalVerdict:
    """A verdict as the controller hands it to `learn`: each with a proposal number of its own."""
    return ProposalVerdict(
        number=next(_numbers),
        stable=dict(stable),
        proposed=dict(proposed),
        promoted=reward > 0,
        reason="CanaryBetter" if reward > 0 else "CanaryWorse",
        reward=reward,
    )


def agent_settings(**extra) -> RunAgentSettings:
    return RunAgentSettings.model_validate(
        {"batchSize": 4, "hiddenSizes": [16], "replaySize": 1000, "seed": 0, **extra}
    )


class World:
    """A component whose throughput peaks at `optimum_batch`; each variant runs the config in the ConfigMap."""

    def __init__(self, tmp_path, *, spec: dict, proposer=None, optimum_batch: int = 20) -> None:
        self.store = FileConfigStore(tmp_path / "configmaps")
        self.store.put(NS, "svc-config", {"config.json": canonical_json(STABLE)})
        self.optimum_batch = optimum_batch
        self.rng = np.random.default_rng(1)
        self.metrics = InProcessMetrics()
        for variant in ("stable", "canary"):
            self.metrics.register(f'svc_throughput{{variant="{variant}"}}', lambda t, v=variant: self.throughput(v))
            self.metrics.register(
                f'svc_errors{{variant="{variant}"}}', lambda t: 1.0 + 0.01 * self.rng.standard_normal()
            )
        self.spec = OptimizationRunSpec.model_validate(spec)
        self.profile = make_profile()
        self.models = ModelStore(
            self.store, NS, owner_of=lambda p: OwnerRef("autotune.dwcp.io/v1alpha1", "ParameterProfile", p, "uid-p")
        )
        self.proposer = proposer or AgentPool(self.spec.agent, models=self.models)
        self.events = RecordingEvents()
        self.status = RunStatus()
        self.now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

    def config(self, variant: str) -> dict | None:
        data = self.store.read(ConfigRef(NS, "svc-config")).data
        raw = data.get(CANARY_KEY) if variant == "canary" else data.get("config.json")
        return None if raw is None else json.loads(raw)

    def throughput(self, variant: str) -> float | None:
        config = self.config(variant)
        if config is None:
            return None
        value = (
            100.0
            - 10.0 * abs(math.log2(config["batch"] / self.optimum_batch))
            - 5.0 * abs(math.log2(config["timeout"] / 1000))
        )
        return value * (1 + 0.01 * self.rng.standard_normal())

    def tick(self, seconds: float = 61) -> RunStatus:
        self.now += dt.timedelta(seconds=seconds)
        ports = Ports(self.store, self.metrics, self.events, self.proposer)
        ctx = RunContext("run1", NS, "uid-1", 1, self.spec, self.status, {"svc": self.profile}, self.now)
        self.status = reconcile(ctx, ports)
        return self.status

    def run_until(self, predicate, limit: int = 200) -> RunStatus:
        for _ in range(limit):
            if predicate(self.tick()):
                return self.status
        raise AssertionError(f"stuck in {self.status.phase}: {self.status.message}")


def condition(status: RunStatus, type_: str):
    return next(c for c in status.conditions if c.type == type_)


ROLLOUT = {"steps": [50, 100], "analysisIntervalSeconds": 60, "minSamples": 5}


# --- 1. model persistence ----------------------------------------------------------------------------
def _trained_agent(observation_size: int = 39) -> DQNAgent:
    agent = DQNAgent(observation_size, 7, AgentSettings(batch_size=8, hidden_sizes=[32, 32], seed=3))
    rng = np.random.default_rng(0)
    for _ in range(50):
        agent.observe(
            Transition(
                rng.random(observation_size, dtype=np.float32),
                int(rng.integers(7)),
                float(rng.random()),
                rng.random(observation_size, dtype=np.float32),
                bool(rng.random() < 0.2),
            )
        )
        agent.update()
    return agent


def test_checkpoint_round_trip_through_the_store_is_exact_and_split_into_parts(tmp_path):
    agent = _trained_agent()
    store = FileConfigStore(tmp_path)
    owner = OwnerRef("autotune.dwcp.io/v1alpha1", "ParameterProfile", "svc", "uid-p")
    models = ModelStore(store, NS, owner_of=lambda p: owner, part_bytes=8 * 1024)
    checkpoint = make_checkpoint(agent, profile_hash="abc", normalisation={"kind": "online"}, replay_sample=1000)
    name = models.save("svc", checkpoint)
    assert name == model_configmap_name("svc") == "svc-model"
    stored = json.loads(store.path(NS, "svc-model-1").read_text())  # more than one part, each owned by the profile
    assert stored["owner"]["kind"] == "ParameterProfile" and stored["binaryData"]["model.zst"]
    loaded = models.load(name, profile_hash="abc")
    for mine, theirs in (
        (checkpoint.online_state, loaded.online_state),
        (checkpoint.target_state, loaded.target_state),
    ):
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    opt_a, opt_b = checkpoint.optimizer_state["state"], loaded.optimizer_state["state"]
    assert opt_a.keys() == opt_b.keys()
    assert all(torch.equal(opt_a[k][f], opt_b[k][f]) for k in opt_a for f in ("exp_avg", "exp_avg_sq", "step"))
    assert np.array_equal(checkpoint.replay["obs"], loaded.replay["obs"])
    restored = loaded.to_agent()
    obs = np.random.default_rng(5).random((4, 39), dtype=np.float32)
    assert np.array_equal(agent.q_values(obs), restored.q_values(obs))
    # A torn save (a part missing) is detected, not loaded.
    store.path(NS, "svc-model-1").unlink()
    with pytest.raises(Exception, match="part 1"):
        models.load(name, profile_hash="abc")


def test_a_changed_parameter_space_refuses_the_stored_model_with_a_condition(tmp_path):
    world = World(
        tmp_path, spec={"profiles": ["svc"], "agent": agent_settings().model_dump(by_alias=True), "rollout": ROLLOUT}
    )
    old = make_profile(batch_max=64)
    assert old.space_hash() != world.profile.space_hash()
    world.models.save("svc", make_checkpoint(DQNAgent(2, 5), profile_hash=old.space_hash()))
    world.run_until(lambda s: s.phase == "Proposing")
    warm = condition(world.status, "WarmStarted")
    assert warm.status == "False" and warm.reason == "ModelIncompatible" and old.space_hash() in warm.message
    assert world.status.learning["svc"].warm_start == "Incompatible"


def test_the_profile_says_whether_its_stored_model_fits_before_a_run_starts(tmp_path):
    """ModelCompatible on the ParameterProfile: absent without a model, True when it fits, False when the space changed."""
    store = FileConfigStore(tmp_path)
    store.put(NS, "svc-config", {"config.json": canonical_json(STABLE)})
    models = ModelStore(store, NS, run="run1")
    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

    def check(profile: ParameterProfileSpec, previous=None):
        return validate_profile(
            profile.dump(), NS, configs=store, metrics=None, generation=2, now=now, previous=previous, name="svc"
        )

    profile = make_profile()
    assert [c.type for c in check(profile).conditions] == ["Ready"]  # no model stored yet
    models.save("svc", make_checkpoint(DQNAgent(2, 5), profile_hash=profile.space_hash()), now=now)
    fits = check(profile)
    model = next(c for c in fits.conditions if c.type == "ModelCompatible")
    assert (model.status, model.reason) == ("True", "ModelCompatible") and "by run run1" in model.message
    assert condition(fits, "Ready").status == "True"

    widened = make_profile(batch_max=64)  # the user edits a bound: the space changes
    changed = check(widened, previous=fits)
    model = next(c for c in changed.conditions if c.type == "ModelCompatible")
    assert (model.status, model.reason) == ("False", "ModelIncompatible")
    assert profile.space_hash() in model.message and widened.space_hash() in model.message
    assert condition(changed, "Ready").status == "True"  # the profile itself is fine: only the model is not reused

    # A mangled manifest is reported, and deleting the model removes the condition.
    store.put_binary(
        NS,
        "svc-model",
        {"model.zst": b"x"},
        data={"manifest.json": "{"},
        owner=None,
        labels={"autotune.dwcp.io/model": "svc"},
    )
    unreadable = check(profile, previous=changed)
    assert next(c for c in unreadable.conditions if c.type == "ModelCompatible").reason == "ModelUnreadable"
    store.path(NS, "svc-model").unlink()
    assert [c.type for c in check(profile, previous=unreadable).conditions] == ["Ready"]


def test_a_users_configmap_with_the_models_name_is_never_overwritten_and_the_profile_says_so(tmp_path):
    store = FileConfigStore(tmp_path)
    store.put(NS, "svc-model", {"settings": "the user's own"})  # created by someone else, no operator label
    models = ModelStore(store, NS)
    with pytest.raises(Foreign, match="not the operator's"):
        models.save("svc", make_checkpoint(DQNAgent(2, 5), profile_hash="abc"))
    assert store.read(ConfigRef(NS, "svc-model")).data == {"settings": "the user's own"}
    status = validate_profile(
        make_profile().dump(),
        NS,
        configs=store,
        metrics=None,
        generation=1,
        now=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        name="svc",
    )
    model = next(c for c in status.conditions if c.type == "ModelCompatible")
    assert (model.status, model.reason) == ("False", "ModelNameTaken") and "never modified" in model.message
    # A pool that cannot store its model says why in the learning status, and learning goes on.
    pool = AgentPool(agent_settings(), models=models)
    profile = make_profile()
    for _ in range(3):
        proposal = pool.propose("svc", profile, STABLE)
        pool.learn("svc", profile, verdict(STABLE, proposal.config, 0.1))
    learning = pool.learning_status("svc", profile)
    assert learning.samples == 3 and "not the operator's" in (learning.save_error or "")


def test_an_operator_restart_keeps_the_learning_state(tmp_path):
    store = FileConfigStore(tmp_path)
    models = ModelStore(store, NS)
    profile = make_profile()
    settings = agent_settings()
    first = AgentPool(settings, models=models)
    stable = dict(STABLE)
    for i in range(9):  # proposals and verdicts: updates happen once the buffer holds a batch
        proposal = first.propose("svc", profile, stable)
        if proposal is None:  # every neighbour tried: as after a re-optimization trigger
            first.new_cycle("svc", profile)
            proposal = first.propose("svc", profile, stable)
        first.learn("svc", profile, verdict(stable, proposal.config, 0.1 if i % 3 == 0 else -0.05))
    before = first.learning_status("svc", profile)
    assert before.samples == 9 and before.gradient_updates > 0 and before.saved_at

    second = AgentPool(settings, models=ModelStore(store, NS))  # a new process: only the ConfigMaps survive
    after = second.learning_status("svc", profile)
    assert after.warm_start == "Loaded" and after.samples == 9 and after.gradient_updates == before.gradient_updates
    a, b = first._entries["svc"].policy.agent, second._entries["svc"].policy.agent
    obs = np.array([[0.3, 0.6], [0.5, 0.5]], dtype=np.float32)
    assert np.array_equal(a.q_values(obs), b.q_values(obs))
    # Both go on learning from the same verdict: the same update (optimizer state, replay and RNG restored).
    for pool in (first, second):
        pool.learn("svc", profile, verdict(stable, {"batch": 20, "timeout": 1000}, 0.2))
    assert np.array_equal(a.q_values(obs), b.q_values(obs))
    assert a.gradient_updates == b.gradient_updates


# --- 2. learning from production ---------------------------------------------------------------------
def test_fine_tuning_is_periodic_counted_and_deployed_only_when_better(tmp_path):
    world = World(
        tmp_path,
        spec={
            "profiles": ["svc"],
            "budget": {"maxProposals": 6},
            "rollout": ROLLOUT,
            "agent": agent_settings(fineTuneIntervalSeconds=300, fineTuneUpdates=50).model_dump(by_alias=True),
        },
    )
    world.run_until(lambda s: s.phase in ("Succeeded", "RolledBack"))
    learning = world.status.learning["svc"]
    assert learning.samples == 6 and learning.model_updates >= 1
    assert learning.deployed_updates <= learning.model_updates and learning.last_fine_tune
    assert [e for e in world.events.events if e[1] == "FineTuned"]


def test_online_recommendations_carry_a_computed_expectation_and_confidence(tmp_path):
    world = World(
        tmp_path,
        spec={
            "profiles": ["svc"],
            "mode": "Recommend",
            "budget": {"maxProposals": 2},
            "agent": agent_settings().model_dump(by_alias=True),
        },
    )
    world.run_until(lambda s: s.phase == "Succeeded")
    rec = world.status.recommendations[0]
    assert rec.expected_improvement_pct is not None and rec.confidence is not None and 0 <= rec.confidence <= 1


# --- 3. safe exploration -------------------------------------------------------------------------------
class ScriptedProposer(Proposer):
    def __init__(self, configs):
        self.configs, self.asked = list(configs), []

    def pretrain(self, name, profile):
        return None

    def propose(self, name, profile, stable):
        if not self.configs:
            return None
        config = self.configs.pop(0)
        self.asked.append(config)
        return Proposal(config=config)

    def learn(self, name, profile, verdict):
        pass


def _cooldown_world(tmp_path, proposer: Proposer, max_proposals: int, cooldown_seconds: int) -> World:
    """A run whose canaries of batch 40 are worse (the optimum is at 10), with the given rollback cooldown."""
    return World(
        tmp_path,
        proposer=proposer,
        optimum_batch=10,
        spec={
            "profiles": ["svc"],
            "budget": {"maxProposals": max_proposals},
            "rollout": ROLLOUT,
            "exploration": {"rejectedCooldownSeconds": cooldown_seconds},
        },
    )


def test_a_rolled_back_configuration_is_not_proposed_again_within_the_cooldown(tmp_path):
    bad, other = {"batch": 40, "timeout": 1000}, {"batch": 10, "timeout": 2000}
    proposer = ScriptedProposer([bad, bad, other, bad])
    world = _cooldown_world(tmp_path, proposer, 3, 3600)
    world.run_until(lambda s: len(s.history) == 2)
    assert [h.config for h in world.status.history] == [bad, other]  # the second `bad` was skipped
    assert world.status.rejected[0].config == bad
    # The memory is in the status: a restarted operator (fresh proposer) still skips it, until the cooldown ends.
    world.proposer = ScriptedProposer([bad])
    world.tick()
    assert world.status.history[-1].verdict == "Held"  # nothing allowed to propose
    world.now += dt.timedelta(hours=1)
    world.proposer = ScriptedProposer([bad])
    world.spec = world.spec.model_copy(update={"budget": world.spec.budget.model_copy(update={"max_proposals": 4})})
    world.tick()
    assert world.status.current is not None and world.status.current.config == bad


def test_no_proposal_inside_a_freeze_window():
    now = dt.datetime(2026, 1, 1, 23, 30, tzinfo=dt.UTC)
    assert frozen(["23:00-01:00"], now) == "23:00-01:00"
    assert frozen(["01:00-02:00"], now) is None
    assert frozen(["2026-01-01T00:00:00Z/2026-01-02T00:00:00Z"], now)


def test_freeze_window_holds_the_run(tmp_path):
    world = World(
        tmp_path,
        proposer=ScriptedProposer([{"batch": 20, "timeout": 1000}]),
        spec={"profiles": ["svc"], "rollout": ROLLOUT, "freezeWindows": ["00:00-23:59"]},
    )
    for _ in range(4):
        world.tick()
    assert world.status.phase == "Proposing" and condition(world.status, "Progressing").reason == "Frozen"
    assert world.status.current is None


def test_stagnation_raises_exploration_and_says_so(tmp_path):
    world = World(
        tmp_path,
        optimum_batch=10,
        spec={
            "profiles": ["svc"],
            "budget": {"maxProposals": 5},
            "rollout": ROLLOUT,
            "agent": agent_settings().model_dump(by_alias=True),
            "exploration": {"stagnationProposals": 2},
        },
    )
    world.run_until(lambda s: s.phase in ("Succeeded", "RolledBack"))
    assert world.status.learning["svc"].exploration_boosted_until
    assert [e for e in world.events.events if e[1] == "ExplorationRaised"]


# --- 4. triggers ---------------------------------------------------------------------------------------
def test_when_the_optimum_moves_the_degradation_trigger_fires_and_a_new_configuration_is_promoted(tmp_path):
    world = World(
        tmp_path,
        optimum_batch=20,
        spec={
            "profiles": ["svc"],
            "budget": {"maxProposals": 4},
            "rollout": ROLLOUT,
            "agent": agent_settings().model_dump(by_alias=True),
            "continuous": {"enabled": True, "checkIntervalSeconds": 300, "windowSeconds": 300, "degradationPct": 5},
        },
    )
    world.run_until(lambda s: s.phase == "Succeeded")
    assert world.config("stable")["batch"] == 20
    for _ in range(10):  # stable and good: the watch keeps watching
        world.tick()
    assert world.status.phase == "Succeeded" and not world.status.triggers

    world.optimum_batch = 5  # the workload changes: batch 20 is now 20 % worse
    world.run_until(lambda s: s.triggers)
    trigger = world.status.triggers[0]
    assert trigger.kind == "Degradation" and "at promotion" in trigger.evidence
    assert world.status.cycle == 1 and condition(world.status, "Progressing").reason == "Reoptimizing"
    world.run_until(lambda s: s.phase == "Succeeded")
    promoted = [h for h in world.status.history if h.verdict == "Promoted"]
    assert promoted[-1].config["batch"] == 10 and world.config("stable")["batch"] == 10
    # The model was stored along the way, owned by the profile.
    assert json.loads(world.store.path(NS, "svc-model").read_text())["owner"]["kind"] == "ParameterProfile"


def test_the_degradation_trigger_compares_the_same_score_as_the_promotion_with_soft_constraint_penalties(tmp_path):
    """The baseline recorded at promotion is the analysis score (objective − penalties); the watch must compare the
    stable configuration's score, not its bare objective, or a penalised profile never sees a degradation."""
    penalised = ParameterProfileSpec.model_validate(
        {**make_profile().dump(), "constraints": [{"metric": "errors", "max": 1.0, "penalty": 20.0}]}
    )
    world = World(
        tmp_path,
        proposer=ScriptedProposer([{"batch": 20, "timeout": 1000}]),
        optimum_batch=20,
        spec={
            "profiles": ["svc"],
            "budget": {"maxProposals": 1},
            "rollout": ROLLOUT,
            "continuous": {"enabled": True, "checkIntervalSeconds": 120, "windowSeconds": 120, "degradationPct": 5},
        },
    )
    world.profile = penalised
    for variant in ("stable", "canary"):  # both variants violate the constraint: 20 score units of penalty each
        world.metrics.register(f'svc_errors{{variant="{variant}"}}', lambda t: 2.0 + 0.01 * world.rng.standard_normal())
    world.run_until(lambda s: s.phase == "Succeeded")
    assert world.status.baselines["svc"].objective == pytest.approx(100.0 - 20.0, rel=0.02)
    for _ in range(6):
        world.tick()
    assert not world.status.triggers

    world.optimum_batch = 40  # throughput 100 -> 90: the score drops 80 -> 70 (-12.5 %), the bare objective only -10 %
    world.run_until(lambda s: s.triggers, limit=20)
    trigger = world.status.triggers[0]
    assert trigger.kind == "Degradation", trigger.evidence
    recent = float(re.search(r"stable objective ([0-9.]+)", trigger.evidence).group(1))
    assert recent == pytest.approx(70.0, rel=0.03)


def test_a_changed_target_configuration_triggers_a_new_cycle(tmp_path):
    world = World(
        tmp_path,
        proposer=ScriptedProposer([{"batch": 20, "timeout": 1000}]),
        spec={
            "profiles": ["svc"],
            "budget": {"maxProposals": 1},
            "rollout": ROLLOUT,
            "continuous": {"enabled": True, "checkIntervalSeconds": 120, "windowSeconds": 120},
        },
    )
    world.run_until(lambda s: s.phase == "Succeeded")
    ref = ConfigRef(NS, "svc-config")
    world.store.write(
        ref,
        expected_resource_version=world.store.read(ref).resource_version,
        set_keys={"config.json": canonical_json({"batch": 40, "timeout": 1000})},
    )
    world.run_until(lambda s: s.triggers)
    assert world.status.triggers[0].kind == "TargetChanged" and world.status.phase == "Proposing"


def test_no_exploration_while_a_guard_of_the_stable_configuration_breaches(tmp_path):
    guarded = ParameterProfileSpec.model_validate(
        {**make_profile().dump(), "guards": [{"metric": "errors", "goal": "minimize", "maxDegradationPct": 10}]}
    )
    world = World(
        tmp_path,
        proposer=ScriptedProposer([{"batch": 20, "timeout": 1000}, {"batch": 40, "timeout": 1000}]),
        spec={
            "profiles": ["svc"],
            "budget": {"maxProposals": 2},
            "rollout": ROLLOUT,
            "continuous": {"windowSeconds": 120},
        },
    )
    world.profile = guarded
    # The error rate as a time series: it triples from `broken_from` on, until `fixed_from`.
    times = {"broken_from": math.inf, "fixed_from": math.inf}

    def errors(t) -> float:
        ts = t.timestamp() if hasattr(t, "timestamp") else float(t)
        level = 3.0 if times["broken_from"] <= ts < times["fixed_from"] else 1.0
        return level + 0.01 * world.rng.standard_normal()

    for variant in ("stable", "canary"):
        world.metrics.register(f'svc_errors{{variant="{variant}"}}', errors)
    world.run_until(lambda s: any(h.verdict == "Promoted" for h in s.history))
    assert world.status.phase == "Proposing" and world.status.proposals == 1
    times["broken_from"] = world.now.timestamp()  # from now on the stable configuration's error rate triples
    for _ in range(4):
        world.tick()
    progressing = condition(world.status, "Progressing")
    assert progressing.reason == "GuardBreaching" and "errors" in progressing.message
    assert world.status.proposals == 1 and CANARY_KEY not in world.store.read(ConfigRef(NS, "svc-config")).data
    times["fixed_from"] = world.now.timestamp()  # recovered: exploration resumes
    world.run_until(lambda s: s.proposals == 2)


def test_a_workload_shift_on_a_non_objective_metric_triggers_a_new_cycle_with_its_evidence(tmp_path):
    """The objective holds, but the workload metric (errors, outside the objective) moves: the KS test fires."""
    world = World(
        tmp_path,
        proposer=ScriptedProposer([{"batch": 20, "timeout": 1000}]),
        spec={
            "profiles": ["svc"],
            "budget": {"maxProposals": 1},
            "rollout": ROLLOUT,
            "continuous": {
                "enabled": True,
                "checkIntervalSeconds": 120,
                "windowSeconds": 120,
                "shiftSignificance": 0.001,
            },
        },
    )
    shift_at = {"t": math.inf}

    def errors(t) -> float:
        level = 1.5 if float(t) >= shift_at["t"] else 1.0  # t: epoch seconds
        return level + 0.05 * world.rng.standard_normal()

    for variant in ("stable", "canary"):
        world.metrics.register(f'svc_errors{{variant="{variant}"}}', errors)
    world.run_until(lambda s: s.phase == "Succeeded")
    for _ in range(8):  # the same workload: KS does not fire on noise
        world.tick()
    assert world.status.phase == "Succeeded" and not world.status.triggers

    shift_at["t"] = world.now.timestamp()
    world.run_until(lambda s: s.triggers, limit=10)
    trigger = world.status.triggers[0]
    assert trigger.kind == "WorkloadShift" and trigger.profile == "svc" and trigger.cycle == 1
    # The evidence names the metric and the test, with both windows' means.
    assert trigger.evidence.startswith("errors: Kolmogorov-Smirnov D=") and "< 0.001" in trigger.evidence
    means = [float(m) for m in re.findall(r"mean ([0-9.]+)", trigger.evidence)]
    assert len(means) == 2 and means[0] == pytest.approx(1.0, abs=0.05) and means[1] == pytest.approx(1.5, abs=0.05)
    assert world.status.phase == "Proposing" and condition(world.status, "Progressing").reason == "Reoptimizing"


def test_the_schedule_trigger_fires_only_after_its_period(tmp_path):
    world = World(
        tmp_path,
        proposer=ScriptedProposer([{"batch": 20, "timeout": 1000}]),
        spec={
            "profiles": ["svc"],
            "budget": {"maxProposals": 1},
            "rollout": ROLLOUT,
            "continuous": {"enabled": True, "checkIntervalSeconds": 120, "windowSeconds": 120, "scheduleSeconds": 1800},
        },
    )
    world.run_until(lambda s: s.phase == "Succeeded")
    started = dt.datetime.fromisoformat(world.status.started_at.replace("Z", "+00:00"))
    while (world.now - started).total_seconds() < 1800 - 61:
        world.tick()
        assert not world.status.triggers, f"fired {(world.now - started).total_seconds():.0f} s after the start"
    world.run_until(lambda s: s.triggers, limit=5)
    trigger = world.status.triggers[0]
    assert trigger.kind == "Schedule" and trigger.evidence.startswith("1800 s since the cycle began")
    assert (world.now - started).total_seconds() >= 1800
    # The next period counts from the new cycle, not from the run's start.
    assert world.status.cycle_started_at is not None
    assert dt.datetime.fromisoformat(world.status.cycle_started_at.replace("Z", "+00:00")) == world.now


# --- 3b. learning from production, for an agent pretrained on a twin ------------------------------------
def test_a_twin_pretrained_agent_learns_from_production_verdicts_and_judges_fine_tuning_on_the_twin(tmp_path):
    profile = ParameterProfileSpec.model_validate(tiny_twin_spec("acp", "acp-config"))
    store = FileConfigStore(tmp_path / "configmaps")
    models = ModelStore(store, NS, run="run1")
    settings = agent_settings(episodes=10, stepsPerEpisode=20, fineTuneUpdates=20, fineTuneMinGainPct=1.0)
    pool = AgentPool(settings, cache_dir=tmp_path / "twins", quick_twins=True, models=models)
    assert pool.pretrain("acp", profile) is not None
    thread = pool._entries["acp"].policy.thread
    thread.join(timeout=300)
    assert not thread.is_alive() and pool._entries["acp"].policy.twin is not None, pool.pretrain("acp", profile)

    stable = profile.default_config()
    proposal = pool.propose("acp", profile, stable)
    assert proposal is not None and proposal.reason.startswith("greedy policy on the acp twin")
    assert proposal.expected_improvement_pct is not None and 0.0 <= proposal.confidence <= 1.0

    entry = pool._entries["acp"].policy
    replay_before = len(entry.agent.replay)
    rewards = [-0.05, 0.12, -0.05]  # a rollback, a promotion, a rollback
    for reward in rewards:
        pool.learn("acp", profile, verdict(stable, proposal.config, reward))
    learning = pool.learning_status("acp", profile)
    assert learning.samples == 3
    # The verdicts are transitions in the twin environment's own observation space (not the raw parameters),
    # ending the episode, with the measured reward: a rollback is a penalty.
    assert len(entry.agent.replay) == replay_before + 3
    newest = entry.agent.replay.sample_for_checkpoint(3)
    assert np.allclose(newest["reward"], rewards) and np.all(newest["done"])
    # (The parameters part is exact; the metric history part is a fresh noisy twin sample each time.)
    n = len(profile.parameters)
    assert newest["obs"].shape[1] == entry.env.observation_size > n
    assert np.allclose(newest["obs"][0][:n], entry.env.reset_to({"acp": dict(stable)})[:n])
    assert np.allclose(newest["next_obs"][0][:n], entry.env.reset_to({"acp": dict(proposal.config)})[:n])
    assert not np.allclose(newest["obs"][0][:n], newest["next_obs"][0][:n])

    # Fine-tuning a twin agent is judged on the twin, and the stored model carries the production counters.
    outcome = pool.fine_tune("acp", profile)
    assert "twin score" in outcome and outcome.split(":")[0] in ("deployed", "kept"), outcome
    stored = models.load(model_configmap_name("acp"), profile_hash=profile.space_hash())
    assert stored.normalisation["kind"] == "twin" and stored.normalisation["samples"] == 3
    assert stored.normalisation["model_updates"] == 1


class SameProposal(Proposer):
    """A proposer that knows nothing of the cooldown (no `decline`): it proposes one configuration every time."""

    def __init__(self, config):
        self.config, self.asked = config, 0

    def propose(self, name, profile, stable):
        self.asked += 1
        return Proposal(config=dict(self.config))


def test_a_proposer_that_offers_only_configurations_in_their_cooldown_gets_no_change_that_says_why(tmp_path):
    """Before, the run asked 32 times, then recorded "The agent proposed no change.", which did not say why. The
    proposal still counts (the run finishes by its budget rather than wait out the cooldown)."""
    bad = {"batch": 40, "timeout": 1000}
    world = _cooldown_world(tmp_path, ScriptedProposer([bad]), 4, 36000)
    world.run_until(lambda s: len(s.history) == 1)
    assert world.status.rejected[0].config == bad
    world.proposer = SameProposal(bad)  # e.g. after an operator restart
    world.tick()
    progressing = condition(world.status, "Progressing")
    assert progressing.reason == "NoChange", progressing.message
    assert "rejectedCooldownSeconds (36000 s)" in progressing.message and '"batch":40' in progressing.message
    assert world.proposer.asked == 32 and not world.status.holds
    world.run_until(lambda s: s.phase not in ("Proposing", "RollingOut"))
    assert [h.reason for h in world.status.history[1:]] == ["NoChange"] * 3  # the budget of four, then finished
