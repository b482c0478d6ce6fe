"""The OptimizationRun state machine over the real file-backed ConfigStore and in-process metrics.

A fixed proposer stands in for the agent (the agent has its own tests); everything else is the
code the operator runs. Time is a simulated clock, so a four-step rollout takes milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from dwcp_autotuner.canary.protocol import CANARY_KEY, CANARY_KEYS, CANARY_WEIGHT_KEY, ConfigRef, canonical_json
from dwcp_autotuner.controller.context import Ports, RunContext
from dwcp_autotuner.controller.run import reconcile
from dwcp_autotuner.models.profile import ParameterProfileSpec
from dwcp_autotuner.models.run import OptimizationRunSpec, RunStatus
from dwcp_autotuner.ports.base import RecordingEvents
from dwcp_autotuner.ports.local import FileConfigStore, InProcessMetrics
from dwcp_autotuner.proposers.base import Proposal, Proposer

NS = "tuning"
STABLE = {"batch": 10, "timeout": 1000}
CANDIDATE = {"batch": 20, "timeout": 1000}


def profile(guards=()) -> ParameterProfileSpec:
    return ParameterProfileSpec.model_validate(
        {
            "target": {"name": "svc-config"},
            "parameters": [
                {"name": "batch", "min": 1, "max": 100, "default": 10, "scale": "log2"},
                {"name": "timeout", "min": 100, "max": 5000, "default": 1000, "scale": "log2"},
            ],
            "metrics": [
                {"name": "throughput", "query": 'svc_throughput{variant="{{variant}}"}'},
                {"name": "errors", "query": 'svc_errors{variant="{{variant}}"}'},
            ],
            "objective": [{"metric": "throughput", "goal": "maximize"}],
            "guards": list(guards),
        }
    )


class FixedProposer(Proposer):
    def __init__(self, configs):
        self.configs = list(configs)
        self.learned: list[float] = []

    def pretrain(self, name, profile):
        return None

    def propose(self, name, profile, stable):
        return Proposal(config=self.configs.pop(0), expected_improvement_pct=5.0) if self.configs else None

    def learn(self, name, profile, verdict):
        self.learned.append(verdict.reward)


class Harness:
    """Drives reconcile like the operator's timer: status in, status out, persisted between calls."""

    def __init__(self, tmp_path, *, canary_mean=110.0, stable_mean=100.0, spec=None, proposals=(CANDIDATE,), guards=()):
        self.store = FileConfigStore(tmp_path / "configmaps")
        self.store.put(NS, "svc-config", {"config.json": canonical_json(STABLE), "unrelated": "kept"})
        self.stable_bytes = self.store.read(ConfigRef(NS, "svc-config")).data["config.json"]
        self.metrics = InProcessMetrics()
        rng = np.random.default_rng(0)
        self.means = {"stable": stable_mean, "canary": canary_mean}
        for variant in ("stable", "canary"):
            self.metrics.register(
                f'svc_throughput{{variant="{variant}"}}',
                lambda t, v=variant: self.means[v] * (1 + 0.01 * rng.standard_normal()),
            )
            self.metrics.register(
                f'svc_errors{{variant="{variant}"}}', lambda t, v=variant: self.errors[v] + 0.01 * rng.standard_normal()
            )
        self.errors = {"stable": 1.0, "canary": 1.0}
        self.events = RecordingEvents()
        self.proposer = FixedProposer(proposals)
        self.persisted: list[RunStatus] = []
        self.spec = spec or OptimizationRunSpec.model_validate(
            {
                "profiles": ["svc"],
                "budget": {"maxProposals": 1},
                "rollout": {"analysisIntervalSeconds": 60, "minSamples": 5},
            }
        )
        self.profile = profile(guards)
        self.status = RunStatus()
        self.now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

    def ports(self) -> Ports:
        return Ports(
            self.store,
            self.metrics,
            self.events,
            self.proposer,
            persist=lambda s: self.persisted.append(s.model_copy(deep=True)),
        )

    def tick(self, seconds: float = 61) -> RunStatus:
        self.now += dt.timedelta(seconds=seconds)
        ctx = RunContext("run1", NS, "uid-1", 1, self.spec, self.status, {"svc": self.profile}, self.now)
        self.status = reconcile(ctx, self.ports())
        return self.status

    def configmap(self) -> dict:
        return dict(self.store.read(ConfigRef(NS, "svc-config")).data)

    def run_until(self, phases, limit=40) -> RunStatus:
        for _ in range(limit):
            if self.tick().phase in phases:
                return self.status
        raise AssertionError(f"run stuck in {self.status.phase}: {self.status.message}")


def condition(status: RunStatus, type_: str):
    return next(c for c in status.conditions if c.type == type_)


def test_better_canary_steps_through_the_weights_and_is_promoted(tmp_path):
    h = Harness(tmp_path)
    weights = []
    for _ in range(30):
        h.tick()
        cm = h.configmap()
        if CANARY_WEIGHT_KEY in cm:
            weights.append(int(cm[CANARY_WEIGHT_KEY]))
        if h.status.phase == "Succeeded":
            break
    assert sorted(set(weights)) == [5, 25, 50, 100]
    assert weights == sorted(weights)  # never backwards
    cm = h.configmap()
    assert json.loads(cm["config.json"]) == CANDIDATE
    assert not set(CANARY_KEYS) & set(cm) and cm["unrelated"] == "kept"
    assert h.status.history[-1].verdict == "Promoted" and h.status.history[-1].p_value < 0.001
    assert condition(h.status, "Succeeded").status == "True"
    assert h.status.improvement_pct == pytest.approx(10.0, abs=1.5)
    assert [e[1] for e in h.events.events].count("Promoted") == 1
    assert h.proposer.learned and h.proposer.learned[0] > 0
    revision = h.store.read_revision(NS, "run1-svc-1")
    assert json.loads(revision["config.json"]) == CANDIDATE


def test_worse_canary_is_rolled_back_to_the_exact_stable_bytes(tmp_path):
    h = Harness(tmp_path, canary_mean=85.0)
    h.run_until({"RolledBack"})
    cm = h.configmap()
    assert cm["config.json"] == h.stable_bytes
    assert not set(CANARY_KEYS) & set(cm)
    assert h.status.history[-1].verdict == "RolledBack" and h.status.history[-1].reason == "CanaryWorse"
    assert condition(h.status, "RolledBack").status == "True"
    assert h.store.read_revision(NS, "run1-svc-1")  # the revision is kept for audit
    assert h.proposer.learned == [pytest.approx(-0.05)]


def test_guard_breach_rolls_back_even_when_the_objective_improves(tmp_path):
    h = Harness(tmp_path, guards=[{"metric": "errors", "goal": "minimize", "maxDegradationPct": 10}])
    h.errors["canary"] = 2.0  # errors double
    h.run_until({"RolledBack"})
    assert h.status.history[-1].reason == "GuardBreached"
    assert h.configmap()["config.json"] == h.stable_bytes


def test_metrics_unavailable_never_promotes_and_rolls_back_after_the_limit(tmp_path):
    h = Harness(tmp_path)
    h.tick(), h.tick(), h.tick()  # Pending -> Pretraining -> Proposing -> canary at 5 %
    assert h.configmap()[CANARY_WEIGHT_KEY] == "5"
    from dwcp_autotuner.ports.base import Unavailable

    h.metrics.fail_with(Unavailable("connection refused"))
    h.tick()
    assert h.status.current.inconclusive == 1 and "unavailable" in h.status.message.lower()
    h.run_until({"RolledBack"})
    assert h.status.history[-1].reason == "Inconclusive"
    assert json.loads(h.configmap()["config.json"]) == STABLE
    # The run's end says why: not "nothing was better", but "the metrics were unavailable".
    assert condition(h.status, "Succeeded").reason == "MetricsUnavailable"
    assert condition(h.status, "RolledBack").reason == "MetricsUnavailable"
    assert "metrics were unavailable" in h.status.message


def test_the_three_ways_to_end_without_a_promotion_are_told_apart(tmp_path):
    worse = Harness(tmp_path / "worse", canary_mean=85.0)
    worse.run_until({"RolledBack"})
    assert condition(worse.status, "Succeeded").reason == "NothingPromoted"
    assert condition(worse.status, "RolledBack").status == "True"
    assert "1 canary(ies) rolled back" in worse.status.message

    nothing = Harness(tmp_path / "nothing", proposals=())  # the proposer never has anything to roll out
    nothing.run_until({"Unchanged"})
    assert condition(nothing.status, "Succeeded").status == "False"
    assert condition(nothing.status, "Succeeded").reason == "NothingRolledOut"
    assert not [c for c in nothing.status.conditions if c.type == "RolledBack"]  # nothing was rolled back
    assert "nothing was rolled out" in nothing.status.message and "NoChange" in nothing.status.message
    assert nothing.configmap()["config.json"] == nothing.stable_bytes


def test_the_improvement_is_reported_per_profile(tmp_path):
    h = Harness(tmp_path)
    h.run_until({"Succeeded"})
    assert h.status.improvements == {"svc": pytest.approx(10.0, abs=1.5)}
    assert "svc +" in h.status.message
    assert h.status.summary.improvement.startswith("svc +") and h.status.summary.proposals == "1/1"


def test_the_summary_shows_the_step_as_n_of_m_while_a_canary_is_out(tmp_path):
    h = Harness(tmp_path)
    seen = set()
    for _ in range(30):
        h.tick()
        if h.status.summary.step:
            seen.add(h.status.summary.step)
            assert h.status.summary.profile == "svc"
        if h.status.phase == "Succeeded":
            break
    assert seen == {"1/4", "2/4", "3/4", "4/4"}
    assert h.status.summary.step is None and h.status.summary.profile is None


def test_the_audit_keeps_each_steps_evidence_and_guards_after_promotion(tmp_path):
    h = Harness(tmp_path, guards=[{"metric": "errors", "goal": "minimize", "maxDegradationPct": 50}])
    h.run_until({"Succeeded"})
    record = h.status.history[-1]
    assert record.verdict == "Promoted" and record.stable_config == STABLE
    assert [s.weight for s in record.steps] == [5, 25, 50, 100]
    for step in record.steps:
        assert step.stable.n >= 5 and step.canary.n >= 5 and step.canary.score is not None
        assert step.canary.score == float(f"{step.canary.score:.6g}")  # rounded, no float noise
        assert [g.metric for g in step.guards] == ["errors"] and step.guards[0].status == "Held"
    advanced = [m for kind, reason, m in [e[:3] for e in h.events.events] if reason == "StepAdvanced"]
    assert len(advanced) == 3 and all("the previous step passed: score canary" in m and "n=" in m for m in advanced)
    dumped = json.dumps(h.status.model_dump(mode="json", by_alias=True))
    assert "None" not in dumped


def test_hold_keeps_the_canary_and_says_so(tmp_path):
    spec = OptimizationRunSpec.model_validate(
        {
            "profiles": ["svc"],
            "rollout": {"analysisIntervalSeconds": 60, "maxInconclusive": 2, "onInconclusive": "Hold"},
        }
    )
    h = Harness(tmp_path, spec=spec)
    h.tick(), h.tick(), h.tick()
    h.metrics.unregister('svc_throughput{variant="canary"}')  # the canary reports nothing
    for _ in range(5):
        h.tick()
    assert h.status.phase == "RollingOut"
    assert condition(h.status, "Progressing").reason == "Held"
    assert condition(h.status, "Degraded").status == "True"
    assert h.configmap()[CANARY_WEIGHT_KEY] == "5"


def test_a_human_edit_of_the_stable_key_mid_rollout_is_kept_and_the_canary_withdrawn(tmp_path):
    """The canary was compared with a stable configuration that moved: it goes; the edit stays, never overwritten."""
    h = Harness(tmp_path)
    h.tick(), h.tick(), h.tick()
    assert CANARY_KEY in h.configmap()
    ref = ConfigRef(NS, "svc-config")
    snap = h.store.read(ref)
    human = canonical_json({"batch": 50, "timeout": 1000})
    h.store.write(ref, expected_resource_version=snap.resource_version, set_keys={"config.json": human})
    h.tick()
    assert h.configmap()["config.json"] == human and not set(CANARY_KEYS) & set(h.configmap())
    last = h.status.history[-1]
    assert (last.verdict, last.reason) == ("RolledBack", "StableEdited") and h.status.current is None
    assert condition(h.status, "RolledBack").reason == "StableEdited"
    assert h.proposer.learned == []  # an edit is no verdict on the configuration
    assert not h.status.rejected  # nor does it put the configuration in the rejection cooldown
    h.run_until({"Succeeded", "RolledBack"})
    assert h.configmap()["config.json"] == human


def _canary_edited_by_a_person(h: Harness) -> tuple[ConfigRef, str]:
    """Ticks until the canary is out, then a person rewrites the canary's configuration (the run pauses next tick)."""
    h.tick(), h.tick(), h.tick()
    ref = ConfigRef(NS, "svc-config")
    snap = h.store.read(ref)
    edited = canonical_json({"batch": 4, "timeout": 999})
    h.store.write(ref, expected_resource_version=snap.resource_version, set_keys={CANARY_KEY: edited})
    h.tick()
    return ref, edited


def test_a_person_who_edited_the_canary_and_then_the_stable_key_finds_the_run_paused_with_its_canary(tmp_path):
    """Both edited: the canary keys still name this run's revision, so ending the proposal there would leave a canary
    out that nothing withdraws (the run finished with it, or waited on it for good). The run stays paused, says what
    changed and how to go on, and writes nothing; removing the canary keys ends the proposal and the run goes on."""
    h = Harness(tmp_path)
    ref, edited = _canary_edited_by_a_person(h)
    assert condition(h.status, "Degraded").reason == "ConfigMapDrift"
    human = canonical_json({"batch": 50, "timeout": 1000})
    snap = h.store.read(ref)
    h.store.write(ref, expected_resource_version=snap.resource_version, set_keys={"config.json": human})
    for _ in range(4):
        h.tick()
    degraded = condition(h.status, "Degraded")
    assert degraded.reason == "ConfigMapDrift" and "stable configuration and the canary were both edited" in (
        degraded.message
    )
    assert h.status.current is not None and not h.status.history  # the proposal is not recorded as ended
    assert h.configmap()["config.json"] == human and h.configmap()[CANARY_KEY] == edited  # nothing overwritten
    snap = h.store.read(ref)
    h.store.write(ref, expected_resource_version=snap.resource_version, remove_keys=list(CANARY_KEYS))
    h.tick()
    assert (h.status.history[0].verdict, h.status.history[0].reason) == ("RolledBack", "CanaryRemoved")
    h.run_until({"Succeeded", "RolledBack"})
    assert h.configmap()["config.json"] == human and not set(CANARY_KEYS) & set(h.configmap())


def test_a_proposal_that_must_end_while_a_person_edited_its_canary_waits_for_them_instead_of_leaving_it_out(tmp_path):
    """The canary keys name this proposal but hold a person's edit when the proposal must end (here the run is
    switched to Recommend; a worse analysis whose withdrawal met the edit, a profile gone and an abort end the same
    way): recorded as rolled back there, the canary stayed out for good. The run pauses, writes nothing, and
    records the end once the canary keys are gone."""
    h = Harness(tmp_path)
    ref, edited = _canary_edited_by_a_person(h)
    h.spec = h.spec.model_copy(update={"mode": "Recommend"})
    for _ in range(3):
        h.tick()
    degraded = condition(h.status, "Degraded")
    assert degraded.reason == "ConfigMapDrift" and "to be rolled back (RecommendMode)" in degraded.message
    assert h.status.current is not None and not h.status.history
    assert h.configmap()[CANARY_KEY] == edited and h.configmap()["config.json"] == h.stable_bytes
    snap = h.store.read(ref)
    h.store.write(ref, expected_resource_version=snap.resource_version, remove_keys=list(CANARY_KEYS))
    h.tick()
    assert (h.status.history[0].verdict, h.status.history[0].reason) == ("RolledBack", "RecommendMode")
    assert h.status.current is None and h.configmap()["config.json"] == h.stable_bytes


def test_an_edit_of_the_canary_weight_pauses_the_run_and_says_how_to_go_on(tmp_path):
    h = Harness(tmp_path)
    h.tick(), h.tick(), h.tick()
    ref = ConfigRef(NS, "svc-config")
    snap = h.store.read(ref)
    h.store.write(ref, expected_resource_version=snap.resource_version, set_keys={CANARY_WEIGHT_KEY: "40"})
    for _ in range(4):
        h.tick()
    degraded = condition(h.status, "Degraded")
    assert degraded.reason == "ConfigMapDrift" and "weight was changed to 40" in degraded.message
    assert "restore" in degraded.message and "remove the canary keys" in degraded.message
    assert h.configmap()[CANARY_WEIGHT_KEY] == "40"  # never overwritten
    # Restoring what the run wrote resumes it.
    snap = h.store.read(ref)
    h.store.write(ref, expected_resource_version=snap.resource_version, set_keys={CANARY_WEIGHT_KEY: "5"})
    h.tick()
    assert condition(h.status, "Degraded").status == "False"
    h.run_until({"Succeeded"})


def test_canary_keys_removed_by_hand_end_the_proposal_instead_of_wedging_the_run(tmp_path):
    h = Harness(
        tmp_path,
        proposals=(CANDIDATE, {"batch": 40, "timeout": 1000}),
        spec=OptimizationRunSpec.model_validate(
            {
                "profiles": ["svc"],
                "budget": {"maxProposals": 2},
                "rollout": {"analysisIntervalSeconds": 60, "minSamples": 5},
            }
        ),
    )
    h.tick(), h.tick(), h.tick()
    ref = ConfigRef(NS, "svc-config")
    snap = h.store.read(ref)
    h.store.write(ref, expected_resource_version=snap.resource_version, remove_keys=CANARY_KEYS)
    h.tick()
    last = h.status.history[-1]
    assert (last.verdict, last.reason) == ("RolledBack", "CanaryRemoved") and h.status.current is None
    assert h.configmap()["config.json"] == h.stable_bytes
    h.run_until({"Succeeded", "RolledBack"})
    assert h.status.proposals == 2  # the run went on with its next proposal


@pytest.mark.parametrize("crash_at", ["StartCanary", "SetWeight", "Promote"])
def test_a_crash_after_the_write_ahead_record_resumes_without_double_actions(tmp_path, crash_at):
    """The process dies right after persisting a pending action: the next process finishes it once."""
    h = Harness(tmp_path)

    class Killed(Exception):
        pass

    def persist_then_maybe_die(status):
        h.persisted.append(status.model_copy(deep=True))
        if status.current and status.current.pending_action == crash_at:
            raise Killed

    for _ in range(30):
        ports = h.ports()
        ports.persist = persist_then_maybe_die
        h.now += dt.timedelta(seconds=61)
        ctx = RunContext("run1", NS, "uid-1", 1, h.spec, h.status, {"svc": h.profile}, h.now)
        try:
            h.status = reconcile(ctx, ports)
        except Killed:
            h.status = h.persisted[-1]  # what survives the crash is what was persisted
            crash_at = "done"  # die only once
        if h.status.phase == "Succeeded":
            break
    assert h.status.phase == "Succeeded"
    assert json.loads(h.configmap()["config.json"]) == CANDIDATE
    assert [e[1] for e in h.events.events].count("Promoted") == 1
    assert [r.verdict for r in h.status.history] == ["Promoted"]


def test_recommend_mode_never_touches_the_configmap(tmp_path):
    spec = OptimizationRunSpec.model_validate({"profiles": ["svc"], "mode": "Recommend", "budget": {"maxProposals": 1}})
    h = Harness(tmp_path, spec=spec)
    before = h.configmap()
    h.run_until({"Succeeded"})
    assert h.configmap() == before
    assert h.status.recommendations[0].config == CANDIDATE


def test_missing_profile_waits_with_ready_false(tmp_path):
    h = Harness(tmp_path)
    h.now += dt.timedelta(seconds=1)
    ctx = RunContext("run1", NS, "uid-1", 1, h.spec, RunStatus(), {"svc": "ParameterProfile svc not found"}, h.now)
    status = reconcile(ctx, h.ports())
    assert status.phase == "Pending"
    ready = condition(status, "Ready")
    assert ready.status == "False" and ready.reason == "ProfileNotReady" and "not found" in ready.message


def test_invalid_stable_config_is_degraded_not_a_crash(tmp_path):
    h = Harness(tmp_path)
    ref = ConfigRef(NS, "svc-config")
    snap = h.store.read(ref)
    h.store.write(ref, expected_resource_version=snap.resource_version, set_keys={"config.json": '{"batch": 1000}'})
    h.tick(), h.tick(), h.tick()
    degraded = condition(h.status, "Degraded")
    assert degraded.reason == "InvalidStableConfig" and "batch" in degraded.message
    assert CANARY_KEY not in h.configmap()


def test_inconclusive_analyses_are_one_analysis_interval_apart_not_one_tick(tmp_path):
    """`maxInconclusive` counts analyses, and an analysis needs an interval of new time: ticks in between do nothing."""
    spec = OptimizationRunSpec.model_validate(
        {
            "profiles": ["svc"],
            "budget": {"maxProposals": 1},
            "rollout": {"analysisIntervalSeconds": 60, "maxInconclusive": 2},
        }
    )
    h = Harness(tmp_path, spec=spec)
    h.tick(), h.tick(), h.tick()
    assert h.configmap()[CANARY_WEIGHT_KEY] == "5"
    from dwcp_autotuner.ports.base import Unavailable

    h.metrics.fail_with(Unavailable("connection refused"))
    h.tick(61)
    assert h.status.current.inconclusive == 1
    for _ in range(5):  # operator ticks within the next interval: no new analysis
        h.tick(5)
        assert h.status.phase == "RollingOut" and h.status.current.inconclusive == 1
    h.tick(40)
    assert h.status.phase == "Proposing" and h.status.history[-1].reason == "Inconclusive"


def _rollout_spec(**rollout) -> OptimizationRunSpec:
    return OptimizationRunSpec.model_validate(
        {
            "profiles": ["svc"],
            "budget": {"maxProposals": 1},
            "rollout": {"analysisIntervalSeconds": 60, "minSamples": 5, **rollout},
        }
    )


def _messages_until_done(h: Harness, limit: int = 40) -> list[str]:
    messages = []
    for _ in range(limit):
        h.tick()
        messages.append(h.status.message or "")
        if h.status.history:
            break
    return messages


def test_a_canary_that_leans_better_is_analysed_longer_and_promoted(tmp_path):
    """1 % better on 1 % noise: at the last step two analyses cannot confirm it at p < 0.001 (it leans better,
    p 0.009), so without the extra analyses it is rolled back as Inconclusive; with them the canary's growing
    window (against the stable samples of the step before: at 100 % the stable variant gets no work) confirms it,
    and the status says why the canary stays."""
    short = Harness(tmp_path / "a", canary_mean=101.0, spec=_rollout_spec(maxInconclusive=2))  # the default: none
    _messages_until_done(short)
    assert (short.status.history[-1].verdict, short.status.history[-1].reason) == ("RolledBack", "Inconclusive")

    h = Harness(tmp_path / "b", canary_mean=101.0, spec=_rollout_spec(maxInconclusive=2, promisingExtraAnalyses=3))
    messages = _messages_until_done(h)
    assert (h.status.history[-1].verdict, h.status.history[-1].reason) == ("Promoted", "CanaryBetter")
    extended = [m for m in messages if "leans better" in m]
    assert extended and all("inconclusive" in m and "/5 " in m for m in extended)


def test_a_canary_that_leans_nowhere_is_rolled_back_at_max_inconclusive(tmp_path):
    h = Harness(tmp_path, canary_mean=100.0, spec=_rollout_spec(maxInconclusive=2, promisingExtraAnalyses=3))
    messages = _messages_until_done(h)
    assert (h.status.history[-1].verdict, h.status.history[-1].reason) == ("RolledBack", "Inconclusive")
    assert "2 inconclusive analyses" in h.status.history[-1].message
    assert not any("leans better" in m for m in messages)


def test_on_inconclusive_hold_waits_for_the_extra_analyses_before_it_holds(tmp_path):
    """`onInconclusive: Hold` stops analysing a held canary; one still within its extra analyses is not held (it
    would stay at its weight, never analysed again, though it is allowed more analyses)."""
    h = Harness(
        tmp_path / "a",
        canary_mean=101.0,
        spec=_rollout_spec(maxInconclusive=1, onInconclusive="Hold", promisingExtraAnalyses=3),
    )
    _messages_until_done(h)
    assert (h.status.history[-1].verdict, h.status.history[-1].reason) == ("Promoted", "CanaryBetter")

    held = Harness(tmp_path / "b", canary_mean=101.0, spec=_rollout_spec(maxInconclusive=1, onInconclusive="Hold"))
    for _ in range(20):
        held.tick()
    assert held.status.phase == "RollingOut" and condition(held.status, "Progressing").reason == "Held"
    assert held.configmap()[CANARY_WEIGHT_KEY] == "100" and not held.status.history


def test_a_status_lost_after_a_weight_write_gives_the_step_a_full_interval(tmp_path):
    """Killed after writing 25 % but before the status said so: the next process starts the step's clock anew."""
    h = Harness(tmp_path)
    h.tick(), h.tick(), h.tick()  # canary at 5 %

    class Killed(Exception):
        pass

    real_write = h.store.write

    def write_then_die(ref, **kwargs):
        result = real_write(ref, **kwargs)
        if (kwargs.get("set_keys") or {}).get(CANARY_WEIGHT_KEY) == "25":
            raise Killed
        return result

    h.store.write = write_then_die
    h.now += dt.timedelta(seconds=61)
    ctx = RunContext("run1", NS, "uid-1", 1, h.spec, h.status, {"svc": h.profile}, h.now)
    with pytest.raises(Killed):
        reconcile(ctx, h.ports())
    h.store.write = real_write
    h.status = h.persisted[-1]  # what survived: the write-ahead record
    assert h.status.current.pending_action == "SetWeight" and h.configmap()[CANARY_WEIGHT_KEY] == "25"
    step_5_started = h.status.current.step_started_at

    h.tick(1)
    current = h.status.current
    assert current.pending_action is None and current.canary_weight == 25 and current.step_started_at != step_5_started
    h.tick(30)  # half an interval after the resume: no analysis yet
    assert h.status.current.step_index == 1 and h.status.current.last_analysis_at is None
    assert [e[1] for e in h.events.events].count("StepAdvanced") == 1  # posted by the resuming call
    h.run_until({"Succeeded"})
    assert [r.verdict for r in h.status.history] == ["Promoted"]


# --- the stable baseline at 100 %, and soft constraints in the analysis ----------------------------------
@pytest.mark.parametrize("after_switch", ["nothing", "stragglers"])
def test_at_full_weight_the_stable_samples_come_from_the_step_before(tmp_path, after_switch):
    """A real component routes nothing to stable at 100 %: the stable series stop, though not at once: the rate
    windows that straddle the switch hold the last few stable units, whose scores scatter widely (a handful of
    units of uneven work; the closed-loop test's HDE once read 1.7 at 50 % and ~5 from two such samples, and
    rolled back a +120 % canary as not significant). The last step compares the canary with the stable
    configuration measured in the interval before the step, and with nothing after it."""
    h = Harness(tmp_path)
    full_since: list[float] = []
    rng = np.random.default_rng(1)

    def stable(t: float) -> float | None:
        if full_since and t > full_since[0]:
            straggling = after_switch == "stragglers" and t <= full_since[0] + 30  # the first half interval
            return float(rng.choice([20.0, 400.0])) if straggling else None
        return 100.0 * (1 + 0.01 * rng.standard_normal())

    h.metrics.register('svc_throughput{variant="stable"}', stable)
    for _ in range(30):
        h.tick()
        if not full_since and h.configmap().get(CANARY_WEIGHT_KEY) == "100":
            full_since.append(h.now.timestamp())
        if h.status.phase in ("Succeeded", "RolledBack"):
            break
    assert full_since, "the canary never reached 100 %"
    assert h.status.phase == "Succeeded", h.status.message
    record = h.status.history[-1]
    assert record.verdict == "Promoted" and record.improvement_pct == pytest.approx(10.0, abs=1.5)
    last = record.steps[-1]
    assert last.weight == 100 and last.stable.score == pytest.approx(100.0, abs=1.0), last


def test_the_analysis_scores_soft_constraint_penalties_like_the_agent(tmp_path):
    """The canary's objective is 10 % better but it breaks a soft constraint whose penalty outweighs
    that: the score (objective − penalties, what the agent and the twin maximise) is worse."""
    h = Harness(tmp_path)
    h.profile = ParameterProfileSpec.model_validate(
        {
            **h.profile.model_dump(by_alias=True, exclude_none=True),
            "constraints": [{"metric": "errors", "max": 1.0, "penalty": 100.0}],
        }
    )
    h.errors = {"stable": 0.5, "canary": 1.5}  # canary: 50 % over the limit → penalty 50 of a ~110 objective
    status = h.run_until(("Succeeded", "RolledBack"))
    assert status.phase == "RolledBack"
    assert status.history[-1].verdict == "RolledBack" and status.history[-1].reason == "CanaryWorse"
    assert json.loads(h.configmap()["config.json"]) == STABLE


def test_sample_seconds_sets_the_sample_spacing_and_the_query_window():
    """With a 30 s scrape interval, rate() over the default 6 s window is empty: sampleSeconds fixes both."""
    from dwcp_autotuner.controller.analysis import analyse_step
    from dwcp_autotuner.models.run import RolloutSettings

    spec = ParameterProfileSpec.model_validate(
        {
            **profile().dump(),
            "metrics": [
                {"name": "throughput", "query": 'rate(svc_bytes{variant="{{variant}}"}[{{window}}])'},
                {"name": "errors"},
            ],
        }
    )
    metrics = InProcessMetrics()
    start = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    for rollout, window, samples in (
        (RolloutSettings(analysis_interval_seconds=60, min_samples=5), "6s", 11),
        (RolloutSettings(analysis_interval_seconds=600, min_samples=5, sample_seconds=60), "60s", 11),
    ):
        for variant in ("stable", "canary"):
            metrics.register(f'rate(svc_bytes{{variant="{variant}"}}[{window}])', lambda t: 100.0)
        result = analyse_step(
            spec,
            metrics,
            rollout,
            start,
            start + dt.timedelta(seconds=rollout.analysis_interval_seconds),
            last_step=False,
        )
        assert len(result.objective.baseline) == samples, (window, result.objective)
        assert metrics.calls[-1].endswith(f"[{window}])")


def test_a_step_records_six_significant_digits_of_a_small_score_not_six_decimals():
    """The step record is what the learned twin learns from. Rounded to six decimals, a score of 3e-7 (a latency in
    hours, a small objective weight) was 0 in every record, and the twin, seeing nothing but zeros, held the run."""
    from dwcp_autotuner.controller.analysis import analyse_step
    from dwcp_autotuner.models.run import RolloutSettings

    spec = ParameterProfileSpec.model_validate(
        {
            **profile().dump(),
            "metrics": [{"name": "throughput", "query": 'tiny{variant="{{variant}}"}'}, {"name": "errors"}],
        }
    )
    metrics = InProcessMetrics()
    metrics.register('tiny{variant="stable"}', lambda t: 3.14159265e-7)
    metrics.register('tiny{variant="canary"}', lambda t: 2.71828183e-7)
    rollout = RolloutSettings(analysis_interval_seconds=600, min_samples=5, sample_seconds=60)
    start = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    result = analyse_step(spec, metrics, rollout, start, start + dt.timedelta(seconds=600), last_step=False)
    assert result.stable.metrics["throughput"] == 3.14159e-7 and result.canary.metrics["throughput"] == 2.71828e-7
    assert result.stable.score == 3.14159e-7 and result.canary.score == 2.71828e-7  # the objective is the metric


def test_the_default_sample_spacing_is_floored_and_an_interval_too_short_for_min_samples_is_refused():
    """The operator floors the default spacing at --min-sample-seconds and refuses rollouts that can never conclude."""
    from dwcp_autotuner.models.run import OptimizationRunSpec, resolve_sampling

    def spec(**rollout) -> OptimizationRunSpec:
        return OptimizationRunSpec.model_validate({"profiles": ["svc"], "rollout": rollout})

    # Defaults: 600 s at the 60 s floor hold 11 samples >= 5.
    resolved, problem = resolve_sampling(spec(), 60)
    assert problem is None and resolved.rollout.sample_seconds == 60
    # Without the floor the old default (interval / 2 minSamples) is kept.
    resolved, problem = resolve_sampling(spec(analysisIntervalSeconds=600, minSamples=5), 1)
    assert problem is None and resolved.rollout.sample_seconds == 60
    resolved, problem = resolve_sampling(spec(analysisIntervalSeconds=100, minSamples=5), 1)
    assert problem is None and resolved.rollout.sample_seconds == 10
    # 60 s at a 60 s floor: 2 samples < 5. The message gives the numbers and the way out.
    _, problem = resolve_sampling(spec(analysisIntervalSeconds=60), 60)
    assert problem is not None and "holds only 2 sample(s)" in problem and "--min-sample-seconds (60)" in problem
    assert "raise analysisIntervalSeconds to at least 240" in problem
    # An explicit sampleSeconds is not floored, and is named when it is the cause.
    resolved, problem = resolve_sampling(spec(analysisIntervalSeconds=60, sampleSeconds=10), 60)
    assert problem is None and resolved.rollout.sample_seconds == 10
    _, problem = resolve_sampling(spec(analysisIntervalSeconds=60, sampleSeconds=30, minSamples=5), 1)
    assert problem is not None and "spec.rollout.sampleSeconds" in problem
    # The boundary: a range query includes both ends, so 4 × 15 s hold exactly 5 samples.
    assert resolve_sampling(spec(analysisIntervalSeconds=60, sampleSeconds=15, minSamples=5), 1)[1] is None


def test_a_pretraining_that_would_take_hours_is_a_warning_once(tmp_path):
    spec = OptimizationRunSpec.model_validate(
        {
            "profiles": ["svc"],
            "agent": {"strategy": "DQN", "episodes": 100_000, "stepsPerEpisode": 100},
            "rollout": {"analysisIntervalSeconds": 60, "minSamples": 5},
        }
    )
    h = Harness(tmp_path, spec=spec)
    h.profile = h.profile.model_copy(update={"twin": "hde"})
    for _ in range(4):
        h.tick()
    warnings = [(kind, m) for kind, reason, m in h.events.events if reason == "LongPretraining"]
    assert len(warnings) == 1 and warnings[0][0] == "Warning"
    warnings = [m for _, m in warnings]
    assert "10,000,000 environment steps" in warnings[0] and "about 1.2 h" in warnings[0]
    short = Harness(tmp_path / "short")  # the default strategy (the learned twin) trains no DQN up front
    for _ in range(4):
        short.tick()
    assert not [r for _, r, _ in short.events.events if r == "LongPretraining"]


def test_a_proposal_recorded_before_a_crash_is_withdrawn_when_its_profile_is_gone(tmp_path):
    """A restart between the write-ahead of a proposal (phase still Proposing, pendingAction StartCanary, the
    canary maybe written) and its transition, then the profile deleted: the proposal is withdrawn. It raised
    IllegalTransition (RolledBack only left RollingOut) on every tick, found by the fault campaign."""
    h = Harness(tmp_path)
    h.tick(), h.tick(), h.tick()  # the canary is out
    crashed = next(s for s in h.persisted if s.current is not None and s.current.pending_action == "StartCanary")
    assert crashed.phase == "Proposing"
    h.status = crashed  # the operator restarted from the write-ahead status
    h.now += dt.timedelta(seconds=5)
    ctx = RunContext("run1", NS, "uid-1", 1, h.spec, h.status, {"svc": "ParameterProfile tuning/svc not found"}, h.now)
    status = reconcile(ctx, h.ports())
    assert status.current is None and status.history[-1].reason == "ProfileNotReady"
    assert not set(CANARY_KEYS) & set(h.configmap()) and h.configmap()["config.json"] == h.stable_bytes


def test_a_weight_set_by_a_person_while_the_run_was_setting_the_next_is_never_overwritten(tmp_path):
    """The run decided to advance 5 → 25 and recorded it (pendingAction SetWeight); a person set the weight to 40
    just before the write, which therefore failed. The next tick must see the person's weight and pause, not
    retry its own: it wrote 25 over 40 (the retry took any weight but the expected one for "not written yet")."""
    h = Harness(tmp_path)
    h.tick(), h.tick(), h.tick()  # canary at 5 %
    original = h.store.write

    def racing_write(ref, **kw):
        if (kw.get("set_keys") or {}).get(CANARY_WEIGHT_KEY) == "25" and h.configmap()[CANARY_WEIGHT_KEY] == "5":
            data = h.configmap()
            data[CANARY_WEIGHT_KEY] = "40"  # the person, a moment before the run's write
            h.store.put(NS, "svc-config", data)
        return original(ref, **kw)

    h.store.write = racing_write
    for _ in range(6):
        h.tick()
    assert h.configmap()[CANARY_WEIGHT_KEY] == "40"
    assert condition(h.status, "Degraded").reason == "ConfigMapDrift" and "setting 25" in h.status.message


def test_a_canary_started_without_an_answer_then_edited_by_a_person_is_never_left_out(tmp_path):
    """Killed after writing the canary but before the status said so, and a person edits the canary before the next
    process reads it: the canary keys still name this proposal, so it is the run's to withdraw. The run pauses on the
    edit (ConfigMapDrift) and ends the proposal once the person removes the keys. Before, it recorded the proposal
    as superseded by "another canary" and went on, leaving the canary out with nothing to withdraw it (found by
    the fault campaign of a person's ConfigMap edits on new seeds)."""
    h = Harness(tmp_path)

    class Killed(Exception):
        pass

    real_write = h.store.write

    def write_then_die(ref, **kwargs):
        result = real_write(ref, **kwargs)
        if CANARY_KEY in (kwargs.get("set_keys") or {}):
            raise Killed
        return result

    h.store.write = write_then_die
    with pytest.raises(Killed):
        for _ in range(5):
            h.tick()
    h.store.write = real_write
    h.status = h.persisted[-1]  # what survived: the write-ahead record
    assert h.status.current.pending_action == "StartCanary"
    revision = h.configmap()["autotune.dwcp.io.canary-revision"]
    edited = canonical_json({**CANDIDATE, "batch": 30})
    snapshot = h.store.read(ConfigRef(NS, "svc-config"))
    h.store.write(
        ConfigRef(NS, "svc-config"), expected_resource_version=snapshot.resource_version, set_keys={CANARY_KEY: edited}
    )

    for _ in range(5):
        h.tick()
    assert not h.status.history, h.status.history[-1].message
    assert h.status.phase == "RollingOut" and condition(h.status, "Degraded").reason == "ConfigMapDrift"
    assert h.configmap()[CANARY_KEY] == edited and h.configmap()["autotune.dwcp.io.canary-revision"] == revision

    snapshot = h.store.read(ConfigRef(NS, "svc-config"))  # the person answers as the message says
    h.store.write(
        ConfigRef(NS, "svc-config"), expected_resource_version=snapshot.resource_version, remove_keys=CANARY_KEYS
    )
    h.run_until({"Succeeded", "RolledBack", "Unchanged"})
    assert [r.verdict for r in h.status.history] == ["RolledBack"]
    assert not set(CANARY_KEYS) & set(h.configmap()) and json.loads(h.configmap()["config.json"]) == STABLE


@pytest.mark.parametrize("profile_gone", [False, True], ids=["profile there", "profile deleted meanwhile"])
def test_a_promotion_whose_status_was_lost_is_recorded_as_one_after_a_person_overwrote_its_values(
    tmp_path, profile_gone
):
    """The promotion was written and its Event recorded, the status after it was lost (a failed write), and before
    the next tick a person set the tuned value to something else (and, in one case, the profile was deleted, so the
    run ends there). The ConfigMap alone cannot tell the promotion happened; its Event can. Before, the run recorded
    the proposal as rolled back, "nothing was written", beside the Promoted Event (found by the fault campaign of a
    person's ConfigMap edits on new seeds)."""
    h = Harness(tmp_path)
    for _ in range(20):
        h.tick()
        if any(reason == "Promoted" for _, reason, _ in h.events.events):
            break
    assert json.loads(h.configmap()["config.json"]) == CANDIDATE
    h.status = h.persisted[-1]  # the status write after the promotion failed: what survived is the write-ahead
    assert h.status.current.pending_action == "Promote" and not h.status.history
    snapshot = h.store.read(ConfigRef(NS, "svc-config"))
    person = canonical_json({**CANDIDATE, "batch": 30})
    h.store.write(
        ConfigRef(NS, "svc-config"),
        expected_resource_version=snapshot.resource_version,
        set_keys={"config.json": person},
    )

    h.now += dt.timedelta(seconds=1)
    profiles = {} if profile_gone else {"svc": h.profile}
    h.status = reconcile(RunContext("run1", NS, "uid-1", 1, h.spec, h.status, profiles, h.now), h.ports())
    assert [(r.verdict, r.reason) for r in h.status.history] == [("Promoted", "CanaryBetter")], h.status.message
    assert [reason for _, reason, _ in h.events.events].count("Promoted") == 1
    assert h.configmap()["config.json"] == person  # the person's value stays
