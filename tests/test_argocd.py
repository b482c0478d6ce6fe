"""The Argo CD health checks (argocd/*-health.lua) under a real Lua interpreter (lupa's Lua 5.1, the language
version of Argo CD's gopher-lua), over statuses the real controller and profile validation wrote.

The Lua run here is taken from argocd/argocd-cm-patch.yaml, the file users apply to `argocd-cm`. What this does not
check: Argo CD's own conversion of the object to Lua tables (numbers become Lua numbers there too; JSON null is
absent, as here).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
import yaml

from dwcp_autotuner.canary.protocol import CANARY_WEIGHT_KEY, ConfigRef
from dwcp_autotuner.controller.profiles import validate_profile
from dwcp_autotuner.models.run import ABORT_ANNOTATION, OptimizationRunSpec, RunStatus
from dwcp_autotuner.ports.local import FileConfigStore
from tests.support.tools import REPO
from tests.test_controller import NS, Harness, profile
from tests.test_manual import ManualHarness, spec

lupa = pytest.importorskip("lupa.lua51")
PATCH = yaml.safe_load((REPO / "argocd" / "argocd-cm-patch.yaml").read_text())["data"]


def health(kind: str, obj: dict) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
    script = PATCH[f"resource.customizations.health.autotune.dwcp.io_{kind}"]
    result = lua.execute(script)
    return result["status"], result["message"]


def run_obj(status: RunStatus | None, generation: int = 1, **spec_fields) -> dict:
    obj = {"metadata": {"name": "tune", "namespace": NS, "generation": generation}, "spec": spec_fields}
    if status is not None:
        obj["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return obj


def test_the_patch_file_is_generated_from_the_lua_files():
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_argocd_patch.py"), "--check"], capture_output=True
    )
    assert check.returncode == 0, check.stderr


def test_a_run_is_progressing_until_the_operator_saw_it_and_while_it_works(tmp_path):
    assert health("OptimizationRun", run_obj(None))[0] == "Progressing"
    h = Harness(tmp_path)
    h.tick(), h.tick(), h.tick()  # a canary at 5 %
    assert health("OptimizationRun", run_obj(h.status)) == ("Progressing", h.status.message)
    assert health("OptimizationRun", run_obj(h.status, generation=2))[1].endswith("observe generation 2")


def test_finished_runs_are_healthy_unless_the_metrics_were_missing(tmp_path):
    promoted = Harness(tmp_path / "promoted")
    promoted.run_until({"Succeeded"})
    assert health("OptimizationRun", run_obj(promoted.status))[0] == "Healthy"
    worse = Harness(tmp_path / "worse", canary_mean=85.0)
    worse.run_until({"RolledBack"})
    assert health("OptimizationRun", run_obj(worse.status))[0] == "Healthy"  # stable untouched: nothing was better
    nothing = Harness(tmp_path / "nothing", proposals=())
    nothing.run_until({"Unchanged"})
    assert health("OptimizationRun", run_obj(nothing.status))[0] == "Healthy"
    blind = Harness(tmp_path / "blind")
    blind.tick(), blind.tick(), blind.tick()
    from dwcp_autotuner.ports.base import Unavailable

    blind.metrics.fail_with(Unavailable("connection refused"))
    blind.run_until({"RolledBack"})
    status, message = health("OptimizationRun", run_obj(blind.status))
    assert status == "Degraded" and "metrics were unavailable" in message


def test_a_persons_turn_is_suspended(tmp_path):
    paused = ManualHarness(tmp_path / "paused", spec=spec())
    paused.until_weight(25)
    paused.spec = paused.spec.model_copy(update={"paused": True})
    paused.tick()
    assert health("OptimizationRun", run_obj(paused.status, paused=True))[0] == "Suspended"
    waiting = ManualHarness(tmp_path / "waiting", spec=spec(requireApproval=True))
    for _ in range(20):
        waiting.tick()
    assert health("OptimizationRun", run_obj(waiting.status)) == ("Suspended", waiting.status.message)
    held = Harness(
        tmp_path / "held",
        spec=OptimizationRunSpec.model_validate(
            {
                "profiles": ["svc"],
                "rollout": {"analysisIntervalSeconds": 60, "maxInconclusive": 2, "onInconclusive": "Hold"},
            }
        ),
    )
    held.tick(), held.tick(), held.tick()
    held.metrics.unregister('svc_throughput{variant="canary"}')
    for _ in range(5):
        held.tick()
    assert health("OptimizationRun", run_obj(held.status))[0] == "Suspended"


def test_in_the_way_aborted_and_failed_runs_are_degraded(tmp_path):
    drift = Harness(tmp_path / "drift")
    drift.tick(), drift.tick(), drift.tick()
    data = drift.configmap()
    data[CANARY_WEIGHT_KEY] = "50"  # a person changed the weight
    drift.store.put(NS, "svc-config", data)
    drift.tick()
    status, message = health("OptimizationRun", run_obj(drift.status))
    assert status == "Degraded" and message.startswith("ConfigMapDrift: ")
    aborted = ManualHarness(tmp_path / "aborted", spec=spec())
    aborted.until_weight(5)
    aborted.annotations[ABORT_ANNOTATION] = "x"
    aborted.tick(), aborted.tick()
    assert aborted.status.phase == "Aborted" and health("OptimizationRun", run_obj(aborted.status))[0] == "Degraded"
    failed = RunStatus.model_validate(
        {"phase": "Failed", "message": "spec.rollout.steps: the last step must be 100", "observedGeneration": 1}
    )
    assert health("OptimizationRun", run_obj(failed)) == ("Degraded", "spec.rollout.steps: the last step must be 100")


def test_a_profile_is_healthy_when_ready_and_degraded_with_the_reason_when_not(tmp_path):
    store = FileConfigStore(tmp_path)
    spec_ = profile().model_dump(mode="json", by_alias=True, exclude_none=True)
    now = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    missing = validate_profile(spec_, NS, configs=store, metrics=None, generation=1, now=now)
    obj = {"metadata": {"generation": 1}, "status": missing.model_dump(mode="json", by_alias=True, exclude_none=True)}
    status, message = health("ParameterProfile", obj)
    assert (status, message) == ("Degraded", "TargetNotFound: ConfigMap tuning/svc-config not found.")
    store.put(NS, "svc-config", {"config.json": json.dumps({"batch": 10, "timeout": 1000})})
    assert store.read(ConfigRef(NS, "svc-config"))
    ready = validate_profile(spec_, NS, configs=store, metrics=None, generation=1, now=now)
    obj["status"] = ready.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert health("ParameterProfile", obj)[0] == "Healthy", obj["status"]
    obj["metadata"]["generation"] = 2
    assert health("ParameterProfile", obj)[0] == "Progressing"
    assert health("ParameterProfile", {"metadata": {"generation": 1}})[0] == "Progressing"
