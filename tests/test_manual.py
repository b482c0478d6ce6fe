"""A person's hand on a run (controller/manual.py): pause and resume, promote now, abort, retry, approval.

The controller over the real file-backed ConfigStore and in-process metrics, with a simulated clock (the
Harness of test_controller.py). The same annotations and spec fields work on a real cluster: they are plain
metadata and spec, set by `kubectl annotate`/`kubectl patch`, the `kubectl autotune` plugin or a GitOps tool.
"""

from __future__ import annotations

import json

import pytest

from dwcp_autotuner.canary.protocol import CANARY_KEYS, CANARY_WEIGHT_KEY
from dwcp_autotuner.controller.context import RunContext
from dwcp_autotuner.controller.run import reconcile, settled
from dwcp_autotuner.models.run import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    OptimizationRunSpec,
)
from dwcp_autotuner.ports.base import Unavailable
from tests.test_controller import CANDIDATE, NS, STABLE, Harness, condition


class ManualHarness(Harness):
    """The controller harness with annotations on the run."""

    def __init__(self, tmp_path, **kw):
        super().__init__(tmp_path, **kw)
        self.annotations: dict[str, str] = {}

    def tick(self, seconds: float = 61):
        import datetime as dt

        self.now += dt.timedelta(seconds=seconds)
        ctx = RunContext(
            "run1",
            NS,
            "uid-1",
            1,
            self.spec,
            self.status,
            {"svc": self.profile},
            self.now,
            annotations=self.annotations,
        )
        self.status = reconcile(ctx, self.ports())
        return self.status

    def until_weight(self, weight: int, limit: int = 30):
        for _ in range(limit):
            self.tick()
            if self.status.current is not None and self.status.current.canary_weight == weight:
                return
        raise AssertionError(f"never at {weight} %: {self.status.phase} {self.status.message}")

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events.events]


def spec(**rollout) -> OptimizationRunSpec:
    return OptimizationRunSpec.model_validate(
        {
            "profiles": ["svc"],
            "budget": {"maxProposals": 1},
            "rollout": {"analysisIntervalSeconds": 60, "minSamples": 5, **rollout},
        }
    )


def test_pause_keeps_the_canary_where_it_is_and_resume_restarts_the_steps_interval(tmp_path):
    h = ManualHarness(tmp_path, spec=spec())
    h.until_weight(25)
    h.spec = h.spec.model_copy(update={"paused": True})
    for _ in range(10):  # ten analysis intervals: nothing moves
        h.tick()
    assert h.status.phase == "RollingOut" and h.status.current.canary_weight == 25
    assert h.configmap()[CANARY_WEIGHT_KEY] == "25"
    progressing = condition(h.status, "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "Paused")
    assert h.reasons().count("Paused") == 1  # one Event, not one per tick
    h.spec = h.spec.model_copy(update={"paused": False})
    h.tick()
    assert condition(h.status, "Progressing").reason == "Unpaused" and h.reasons().count("Unpaused") == 1
    assert h.status.current.step_started_at == h.now.strftime("%Y-%m-%dT%H:%M:%SZ")  # a fresh interval
    h.run_until({"Succeeded"})
    assert json.loads(h.configmap()["config.json"]) == CANDIDATE


def test_promote_now_skips_the_remaining_steps_once_per_annotation_value(tmp_path):
    h = ManualHarness(tmp_path, spec=spec(), canary_mean=100.0)  # no better: the analysis alone would not promote
    h.until_weight(5)
    h.annotations[PROMOTE_ANNOTATION] = "2026-12-04T10:00"
    h.tick(seconds=1)
    assert h.status.current is None and h.status.history[-1].verdict == "Promoted"
    assert h.status.history[-1].reason == "ManualPromotion"
    assert json.loads(h.configmap()["config.json"]) == CANDIDATE
    assert not set(CANARY_KEYS) & set(h.configmap())
    assert h.status.manual.promote == "2026-12-04T10:00" and "promoted" in h.status.manual.last
    promoted = h.reasons().count("Promoted")
    for _ in range(3):  # the same value again (a GitOps tool re-applying it) does nothing more
        h.tick()
    assert h.reasons().count("Promoted") == promoted == 1


def test_a_promote_with_nothing_out_is_recorded_and_ignored(tmp_path):
    h = ManualHarness(tmp_path, spec=spec(), proposals=())
    h.annotations[PROMOTE_ANNOTATION] = "1"
    h.tick()
    assert "ignored" in h.status.manual.last and h.status.manual.promote == "1"
    assert json.loads(h.configmap()["config.json"]) == STABLE


def test_a_promote_of_a_canary_a_person_removed_says_it_promoted_nothing(tmp_path):
    h = ManualHarness(tmp_path, spec=spec(), canary_mean=100.0)
    h.until_weight(5)
    h.store.put(NS, "svc-config", {"config.json": h.stable_bytes, "unrelated": "kept"})  # the canary keys removed
    h.annotations[PROMOTE_ANNOTATION] = "1"
    h.tick(seconds=1)
    assert h.status.manual.promote == "1" and "was not promoted" in h.status.manual.last
    assert h.status.history[-1].reason == "CanaryRemoved"
    assert h.configmap()["config.json"] == h.stable_bytes


def test_abort_withdraws_the_canary_and_ends_the_run_and_retry_starts_it_again(tmp_path):
    h = ManualHarness(tmp_path, spec=spec(), proposals=(CANDIDATE, CANDIDATE))
    h.until_weight(25)
    h.annotations[ABORT_ANNOTATION] = "now"
    h.tick(seconds=1)
    assert h.status.current is None and h.status.history[-1].reason == "Aborted"
    assert h.configmap()["config.json"] == h.stable_bytes and not set(CANARY_KEYS) & set(h.configmap())
    h.tick(seconds=1)
    assert h.status.phase == "Aborted"
    assert condition(h.status, "Succeeded").reason == "Aborted" and condition(h.status, "Progressing").status == "False"
    assert h.proposer.learned == []  # an abort is no verdict on the configuration
    assert not h.status.rejected  # and starts no cooldown
    assert settled(h.status, 1, False, h.annotations)  # nothing more to do…
    h.annotations[RETRY_ANNOTATION] = "again"
    assert not settled(h.status, 1, False, h.annotations)  # …until a retry is asked for
    h.tick()
    assert h.status.phase == "Pending" and "Retried" in h.reasons()
    assert [r.reason for r in h.status.history] == ["Aborted"]  # history kept
    h.run_until({"Succeeded"})
    assert h.status.history[-1].number == 2  # numbers go on: proposal 2 is a new revision
    assert json.loads(h.configmap()["config.json"]) == CANDIDATE


def test_a_retry_while_the_run_is_going_is_ignored(tmp_path):
    h = ManualHarness(tmp_path, spec=spec())
    h.until_weight(5)
    h.annotations[RETRY_ANNOTATION] = "x"
    h.tick(seconds=1)
    assert h.status.phase == "RollingOut" and "ignored" in h.status.manual.last


def test_with_required_approval_a_passing_canary_waits_until_a_person_approves(tmp_path):
    h = ManualHarness(tmp_path, spec=spec(requireApproval=True))
    for _ in range(20):
        h.tick()
    assert h.status.phase == "RollingOut" and h.status.current.awaiting_approval
    assert h.status.current.canary_weight == 100 and json.loads(h.configmap()["config.json"]) == STABLE
    assert condition(h.status, "Progressing").reason == "AwaitingApproval"
    assert h.reasons().count("AwaitingApproval") == 1 and "kubectl autotune promote run1" in h.status.message
    h.annotations[PROMOTE_ANNOTATION] = "approved"
    h.tick(seconds=1)
    record = h.status.history[-1]
    assert (record.verdict, record.reason) == ("Promoted", "CanaryBetter") and "(approved)" in record.message
    assert json.loads(h.configmap()["config.json"]) == CANDIDATE


def _until_waiting(h: ManualHarness, limit: int = 30) -> None:
    """Tick until the canary waits for a person: approval asked for, or held after inconclusive analyses."""
    for _ in range(limit):
        h.tick()
        if condition(h.status, "Progressing").reason in ("AwaitingApproval", "Held"):
            return
    raise AssertionError(f"never waiting: {h.status.phase} {h.status.message}")


@pytest.mark.parametrize(
    "rollout, canary_mean",
    [({"requireApproval": True}, 110.0), ({"onInconclusive": "Hold", "maxInconclusive": 1}, 100.0)],
    ids=["awaiting approval", "held after inconclusive analyses"],
)
def test_a_canary_waiting_for_a_person_shows_an_api_outage_over_once_it_is(tmp_path, monkeypatch, rollout, canary_mean):
    """A ConfigMap read that fails while the canary waits makes the run Degraded; once the API answers again the
    run says so, still waiting (a held canary Degraded for its own reason again, Inconclusive). It stayed Degraded
    with the failed read's message for as long as it waited: a waiting run returned before the check that clears
    it (found by the spec-edit fault campaign on new seeds)."""
    h = ManualHarness(tmp_path, spec=spec(**rollout), canary_mean=canary_mean)
    _until_waiting(h)
    waiting_for = condition(h.status, "Progressing").reason

    def api_down(ref):
        raise Unavailable("HTTP 503: the API is down")

    with monkeypatch.context() as m:  # one tick's ConfigMap read fails
        m.setattr(h.store, "read", api_down)
        h.tick()
    assert (condition(h.status, "Degraded").status, condition(h.status, "Degraded").reason) == (
        "True",
        "KubernetesUnavailable",
    )
    h.tick()
    degraded = condition(h.status, "Degraded")
    # A held canary is Degraded for its own reason, Inconclusive, as it was before the outage.
    expected = ("False", "AsExpected") if waiting_for == "AwaitingApproval" else ("True", "Inconclusive")
    assert (degraded.status, degraded.reason) == expected, h.status.message
    assert condition(h.status, "Progressing").reason == waiting_for
    assert "HTTP 503" not in h.status.message + degraded.message
    assert "the ConfigMap is as the run left it" in h.status.message
    assert ("kubectl autotune promote run1" if waiting_for == "AwaitingApproval" else "Holding") in h.status.message
    for _ in range(5):  # and it goes on waiting, with the canary where it was
        h.tick()
    assert h.status.phase == "RollingOut" and h.configmap()[CANARY_WEIGHT_KEY] == str(h.status.current.canary_weight)
    assert (condition(h.status, "Degraded").status, condition(h.status, "Degraded").reason) == expected


def test_approval_turned_off_while_a_canary_waits_lets_its_next_analysis_promote_it(tmp_path):
    """A person (or a GitOps sync) sets `rollout.requireApproval: false` while a canary waits for approval: the
    canary is analysed again and promoted like any other. It waited for an approval nobody would give, for good
    (found by the spec-edit fault campaign on new seeds)."""
    h = ManualHarness(tmp_path, spec=spec(requireApproval=True))
    _until_waiting(h)
    assert h.status.current.awaiting_approval and json.loads(h.configmap()["config.json"]) == STABLE
    h.spec = h.spec.model_copy(update={"rollout": h.spec.rollout.model_copy(update={"require_approval": False})})
    h.run_until(("Succeeded",), limit=5)
    record = h.status.history[-1]
    assert (record.verdict, record.reason) == ("Promoted", "CanaryBetter"), record.message
    assert "approved" not in record.message
    assert json.loads(h.configmap()["config.json"]) == CANDIDATE
