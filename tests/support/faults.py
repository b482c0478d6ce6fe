"""A fault harness: the operator's real runtime against the Kubernetes API emulator, with faults injected on the wire.

What is real: the operator's `OperatorRuntime` (the code Kopf's handlers call: the run re-read, the spec checks,
the controller, the Kubernetes ConfigMap and Event adapters, status PATCHes), the official Kubernetes client,
HTTP, and the emulator's API semantics (resourceVersion preconditions, JSON-patch `test` ops, the CRD schemas).

What stands in, and why:
- Kopf itself is not in the loop: `World.tick()` calls `reconcile_run` as Kopf's timer does, and
  `World.delete_run()` calls the deletion handler's `cleanup_run` before removing the object, as Kopf's
  finalizer does. (The real Kopf process is exercised by tests/test_operator_e2e.py, kills included.)
- A process kill is `Killed` (a BaseException, so no `except Exception` in the operator catches it) raised
  in the HTTP layer before a request is sent or after it was applied and before the answer is read; the
  "restarted" operator is a new `OperatorRuntime` with nothing in memory, as after a real restart.
- Metrics come from an in-process source that plays the live component (the canary's score depends on the
  configuration the ConfigMap holds); Prometheus' own failures are covered by the e2e tests.
- Time is simulated: the runtime's clock is patched, so a four-step rollout takes milliseconds.

Faults are injected by wrapping the client's urllib3 pool manager (`FaultyPool`): a rule matches a method and
a URL pattern and either refuses the request with a status (409, 422, 500, 503: nothing applied), loses the
answer of an applied request (a read timeout), or kills the operator before or after the request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import urllib3

from dwcp_autotuner.canary.protocol import CANARY_KEY, CANARY_KEYS, canonical_json
from dwcp_autotuner.handlers import runtime as runtime_module
from dwcp_autotuner.handlers.runtime import OperatorConfig, OperatorRuntime, make_api_client
from dwcp_autotuner.models.profile import ParameterProfileSpec
from dwcp_autotuner.ports.local import InProcessMetrics
from dwcp_autotuner.proposers.base import Proposal, Proposer
from tests.kube import running_emulator

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "autotune.dwcp.io", "v1alpha1"


class Killed(BaseException):
    """The operator process died here (raised in its HTTP layer)."""


@dataclasses.dataclass
class Rule:
    method: str
    pattern: str  # a regular expression searched in the request's path (not its query)
    action: str  # "refuse" | "lose-answer" | "kill-before" | "kill-after"
    status: int = 500
    times: int = 1
    after: int = 0  # matching requests let through before the fault applies

    def matches(self, method: str, url: str) -> bool:
        # The pattern is searched in the path alone: a PATCH's URL ends in `?fieldManager=...`, and a pattern
        # anchored with `$` at the object's name must still match it.
        path = urllib3.util.parse_url(url).path or ""
        return self.times > 0 and method.upper() == self.method.upper() and re.search(self.pattern, path) is not None


class FaultyPool:
    """A urllib3 pool manager that applies the first matching `Rule` to a request."""

    def __init__(self, inner: urllib3.PoolManager, log: list[str]) -> None:
        self.inner, self.rules, self.log = inner, [], log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any):
        rule = None
        for candidate in self.rules:
            if candidate.matches(method, url):
                if candidate.after > 0:
                    candidate.after -= 1
                    continue
                rule = candidate
                break
        if rule is None:
            return self.inner.request(method, url, *args, **kwargs)
        rule.times -= 1
        path = urllib3.util.parse_url(url).path
        self.log.append(
            f"{rule.action} {rule.status if rule.action == 'refuse' else ''} {method} {path}".replace("  ", " ")
        )
        if rule.action == "kill-before":
            raise Killed(f"killed before {method} {path}")
        if rule.action == "refuse":
            body = json.dumps(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": rule.status,
                    "reason": {409: "Conflict", 422: "Invalid", 503: "ServiceUnavailable"}.get(
                        rule.status, "InternalError"
                    ),
                    "message": f"injected {rule.status}",
                }
            )
            return urllib3.HTTPResponse(
                body=body.encode(),
                status=rule.status,
                headers={"Content-Type": "application/json"},
                preload_content=True,
            )
        self.inner.request(method, url, *args, **kwargs)  # applied on the server
        if rule.action == "kill-after":
            raise Killed(f"killed after {method} {path}")
        raise urllib3.exceptions.ReadTimeoutError(None, url, "injected: the answer was lost")


def profile_spec(
    name: str = "svc",
    *,
    target: str = "svc-config",
    key: str = "config.json",
    parameters: tuple[str, ...] = ("batch", "timeout"),
) -> dict:
    """A small profile whose objective is `<name>_score{variant=...}` (served by `LiveSystem`)."""
    known = {
        "batch": {"name": "batch", "type": "int", "min": 1, "max": 128, "default": 8, "scale": "log2"},
        "timeout": {"name": "timeout", "type": "int", "min": 100, "max": 6400, "default": 800, "scale": "log2"},
        "workers": {"name": "workers", "type": "int", "min": 1, "max": 16, "default": 2, "scale": "log2"},
    }
    return {
        "target": {"name": target, "key": key},
        "parameters": [known[p] for p in parameters],
        "metrics": [{"name": "score", "query": f'{name}_score{{variant="{{{{variant}}}}"}}'}],
        "objective": [{"metric": "score", "goal": "maximize"}],
    }


class LiveSystem:
    """Plays the tuned component: each variant's score is a noisy function of the configuration it runs."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rng = random.Random(7)

    def score(self, profile: str, variant: str) -> float | None:
        spec = self.world.profile_specs.get(profile)
        if spec is None:
            return None
        cm = self.world.emulator.get_object("configmaps", spec["target"]["name"], self.world.namespace)
        if cm is None:
            return None
        data = cm.get("data") or {}
        raw = data.get(CANARY_KEY) if variant == "canary" else data.get(spec["target"].get("key", "config.json"))
        if raw is None:
            return None
        try:
            config = json.loads(raw)
        except ValueError:
            return None
        value = 100.0
        for p in spec["parameters"]:
            if p["name"] in config and isinstance(config[p["name"]], (int, float)):
                value -= 6.0 * abs(math.log2(max(config[p["name"]], 1e-9) / (p["default"] * 2)))
        return value * (1 + 0.005 * self.rng.gauss(0, 1))


class ScriptedProposer(Proposer):
    """Proposes each parameter doubled, then halved, in turn: deterministic, and the first proposals win."""

    def __init__(self) -> None:
        self.learned: list[str] = []
        self.count: dict[str, int] = {}

    def propose(self, name, profile: ParameterProfileSpec, stable):
        n = self.count.get(name, 0)
        self.count[name] = n + 1
        parameter = profile.parameters[n % len(profile.parameters)]
        config = dict(stable)
        config[parameter.name] = parameter.move(
            stable[parameter.name], +1 if (n // len(profile.parameters)) % 2 == 0 else -1
        )
        return Proposal(config=config, reason="scripted")

    def learn(self, name, profile, verdict):
        self.learned.append(verdict.key)


class World:
    """One namespace, its ConfigMaps, profiles and runs, an operator runtime that can be killed, and the invariants."""

    def __init__(self, emulator, kubeconfig: Path, namespace: str = "faults", webhooks=()) -> None:
        self.emulator, self.kubeconfig, self.namespace = emulator, kubeconfig, namespace
        self.webhooks = tuple(webhooks)
        self.now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
        self.metrics = InProcessMetrics()
        self.live = LiveSystem(self)
        self.proposer = ScriptedProposer()
        self.profile_specs: dict[str, dict] = {}
        self.wire: list[str] = []  # every injected fault, as applied
        self.kills = 0
        self.ticks = 0
        self.errors: list[str] = []  # exceptions a tick raised (Kopf would retry the handler)
        self.runtime = self._start()
        admin = make_api_client(str(kubeconfig))
        self.core, self.custom = kubernetes.client.CoreV1Api(admin), kubernetes.client.CustomObjectsApi(admin)
        self.core.create_namespace({"metadata": {"name": namespace}})
        self.watch: dict[str, dict] = {}  # ConfigMap name -> what the invariants know of it
        self.promotions: dict[tuple[str, int], int] = {}  # (run, proposal number) -> times seen promoted
        self.counted = 0.0  # promotions counted by all runtimes' /metrics together

    # --- the operator ------------------------------------------------------------------------------------
    def _start(self) -> OperatorRuntime:
        config = OperatorConfig(
            namespaces=[self.namespace],
            tick_seconds=1.0,
            min_sample_seconds=1.0,
            prometheus_url="http://127.0.0.1:9",
            metrics_port=0,
            liveness=None,
            kubeconfig=str(self.kubeconfig),
            webhooks=self.webhooks,
        )
        runtime = OperatorRuntime(config)
        runtime.prometheus = lambda url: self.metrics  # the in-process live system (see the module docstring)
        runtime.pool = lambda uid, spec, namespace="", run=None: self.proposer
        pool = runtime.api_client.rest_client.pool_manager
        runtime.api_client.rest_client.pool_manager = FaultyPool(pool, self.wire)
        return runtime

    @property
    def faults(self) -> FaultyPool:
        return self.runtime.api_client.rest_client.pool_manager

    def inject(self, method: str, pattern: str, action: str, status: int = 500, times: int = 1, after: int = 0) -> None:
        self.faults.rules.append(Rule(method, pattern, action, status, times, after))

    def restart(self) -> None:
        self.counted += self._counted(self.runtime)
        rules = [r for r in self.faults.rules if r.times > 0]
        self.runtime = self._start()
        self.faults.rules.extend(rules)

    @staticmethod
    def _counted(runtime: OperatorRuntime) -> float:
        return sum(
            s.value
            for m in runtime.metrics.registry.collect()
            if m.name == "dwcp_autotuner_promotions"
            for s in m.samples
            if s.name.endswith("_total")
        )

    # --- objects -------------------------------------------------------------------------------------
    def configmap(self, name: str, data: dict[str, str]) -> None:
        self.core.create_namespaced_config_map(self.namespace, {"metadata": {"name": name}, "data": data})
        self.watch[name] = {"stable": data.get("config.json"), "untuned": None}

    def profile(self, name: str, spec: dict) -> None:
        self.profile_specs[name] = spec
        for variant in ("stable", "canary"):
            self.metrics.register(
                f'{name}_score{{variant="{variant}"}}', lambda t, p=name, v=variant: self.live.score(p, v)
            )
        self.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            "parameterprofiles",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ParameterProfile", "metadata": {"name": name}, "spec": spec},
        )
        self.validate_profiles()

    def validate_profiles(self) -> None:
        for obj in self.emulator.list_objects("parameterprofiles", self.namespace, group=GROUP):
            status = self.runtime.reconcile_profile(obj)
            self.runtime.patch_status("parameterprofiles", self.namespace, obj["metadata"]["name"], status)

    def run(self, name: str, spec: dict) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            "optimizationruns",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OptimizationRun", "metadata": {"name": name}, "spec": spec},
        )

    def runs(self) -> list[dict]:
        """Every run object in the namespace, as the API has it now."""
        return self.emulator.list_objects("optimizationruns", self.namespace, group=GROUP)

    def patch_run(self, name: str, patch: dict) -> None:
        """A person's (or a script's) merge patch of a run: its spec, or an annotation."""
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, "optimizationruns", name, patch)

    def run_object(self, name: str) -> dict | None:
        return self.emulator.get_object("optimizationruns", name, self.namespace, group=GROUP)

    def status(self, name: str) -> dict:
        return (self.run_object(name) or {}).get("status") or {}

    def data(self, configmap: str) -> dict[str, str]:
        return dict((self.emulator.get_object("configmaps", configmap, self.namespace) or {}).get("data") or {})

    def delete_run(self, name: str, attempts: int = 5) -> None:
        """What Kopf's finalizer does: the deletion handler, retried (after a tick) while it raises, then the object
        is gone. A handler that still raises after `attempts` tries fails the test: the object would stay."""
        body = self.run_object(name)
        if body is None:
            return
        for attempt in range(attempts):
            try:
                self.runtime.cleanup_run(self.run_object(name) or body)
                break
            except Killed:
                self.kills += 1
                self.restart()
            except Exception as error:  # Kopf logs it and calls the handler again after its backoff
                self.errors.append(f"deletion: {type(error).__name__}: {error}")
                if attempt == attempts - 1:
                    raise
            self.now += dt.timedelta(seconds=1)
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, "optimizationruns", name)

    # --- time ----------------------------------------------------------------------------------------
    def tick(self, seconds: float = 1.0) -> None:
        self.now += dt.timedelta(seconds=seconds)
        self.ticks += 1
        if self.ticks % 5 == 0:  # the profile re-check timer
            try:
                self.validate_profiles()
            except Killed:
                self.kills += 1
                self.restart()
            except Exception as error:
                self.errors.append(f"profile check: {type(error).__name__}: {error}")
        for obj in self.runs():
            try:
                self.runtime.reconcile_run(obj)
            except Killed:
                self.kills += 1
                self.restart()
            except Exception as error:  # what Kopf would log and retry
                self.errors.append(f"{type(error).__name__}: {error}")
        self.check()

    def run_until(self, predicate: Callable[[], bool], limit: int = 400, seconds: float = 1.0) -> None:
        for _ in range(limit):
            if predicate():
                return
            self.tick(seconds)
        raise AssertionError(
            f"stuck: {json.dumps({n: self.status(n).get('message') for n in self.run_names()})}"
            f"; errors {self.errors[-3:]}"
        )

    def run_names(self) -> list[str]:
        return [o["metadata"]["name"] for o in self.runs()]

    def finished(self, name: str) -> bool:
        return self.status(name).get("phase") in ("Succeeded", "RolledBack", "Unchanged", "Aborted", "Failed")

    # --- invariants ----------------------------------------------------------------------------------
    def check(self) -> None:
        """Checked after every tick: stable bytes change only by a promotion, untuned keys never; one promotion
        (and one Event) per proposal; no canary keys of a run that ended or is gone, nor of a proposal that ended;
        a proposal's record gives the reason it ended, never a failed tick's error."""
        promoted_now: dict[tuple[str, int], None] = {}
        for name in self.run_names():
            for record in self.status(name).get("history") or []:
                assert "Internal error" not in (record.get("message") or ""), record
                if record.get("verdict") == "Promoted":
                    promoted_now[(name, record["number"])] = None
        new_promotions = [key for key in promoted_now if key not in self.promotions]
        for key in new_promotions:
            self.promotions[key] = 1
        for cm_name, known in self.watch.items():
            data = self.data(cm_name)
            stable = data.get("config.json")
            if known["stable"] is not None and stable is not None and stable != known["stable"]:
                before, after = json.loads(known["stable"]), json.loads(stable)
                tuned = {
                    p["name"]
                    for spec in self.profile_specs.values()
                    if spec["target"]["name"] == cm_name
                    for p in spec["parameters"]
                }
                untuned_before = {k: v for k, v in before.items() if k not in tuned}
                untuned_after = {k: v for k, v in after.items() if k not in tuned}
                assert untuned_before == untuned_after, (
                    f"untuned keys of {cm_name} changed: {untuned_before} -> {untuned_after}"
                )
                assert new_promotions or self._promotion_pending(cm_name), (
                    f"stable bytes of {cm_name} changed without a promotion: {known['stable']} -> {stable}"
                )
            if stable is not None:
                known["stable"] = stable
        # An Event and the counter come with the promotion's write; its record in the status may follow a tick later.
        pending = sum(
            1 for name in self.run_names() if (self.status(name).get("current") or {}).get("pendingAction") == "Promote"
        )
        events = [e for e in self.emulator.list_objects("events", self.namespace) if e.get("reason") == "Promoted"]
        assert sum(e.get("count", 1) for e in events) <= len(self.promotions) + pending, (
            f"{len(events)} Promoted Event(s) for {len(self.promotions)} promotion(s)"
        )
        counted = self.counted + self._counted(self.runtime)
        assert counted <= len(self.promotions) + pending, f"{counted} promotions counted for {len(self.promotions)}"
        for name in self.run_names():
            status = self.status(name)
            if status.get("phase") in ("Succeeded", "RolledBack", "Failed") and not status.get("current"):
                for cm_name in self.watch:
                    revision = self.data(cm_name).get("autotune.dwcp.io.canary-revision", "")
                    assert not revision.startswith(f"{name}-"), f"run {name} ended with its canary {revision} out"
            # A proposal is recorded as ended only once its canary is withdrawn (or was removed by someone else):
            # a canary whose proposal the history says ended is an orphan that nothing would ever withdraw.
            ended = {r.get("revision") for r in status.get("history") or []} - {None}
            ended.discard((status.get("current") or {}).get("revision"))
            for cm_name in self.watch:
                revision = self.data(cm_name).get("autotune.dwcp.io.canary-revision")
                assert revision not in ended, f"run {name} recorded proposal {revision} as ended with its canary out"

    def _promotion_pending(self, cm_name: str) -> bool:
        """A promotion written whose record the next tick writes (the status PATCH after it was lost)."""
        for name in self.run_names():
            current = self.status(name).get("current") or {}
            if current.get("pendingAction") == "Promote" and (current.get("target") or {}).get("name") == cm_name:
                return True
        return False

    def assert_no_canary_left(self) -> None:
        for cm_name in self.watch:
            left = set(CANARY_KEYS) & set(self.data(cm_name))
            assert not left, f"{cm_name} still has {sorted(left)}"


@contextlib.contextmanager
def world(monkeypatch, namespace: str = "faults", webhooks=()) -> Iterator[World]:
    with running_emulator(crd_paths=[ROOT / "crds"]) as (emulator, _url, kubeconfig):
        w = World(emulator, kubeconfig, namespace, webhooks)
        monkeypatch.setattr(runtime_module, "_now", lambda: w.now)
        yield w


def stable_json(config: dict, **untuned: Any) -> str:
    """A stable configuration as a user writes it: the tuned keys among their own, in their order."""
    return json.dumps({**untuned, **config}) if untuned else canonical_json(config)


ROLLOUT = {
    "steps": [5, 25, 50, 100],
    "analysisIntervalSeconds": 4,
    "sampleSeconds": 1,
    "minSamples": 4,
    "significance": 0.01,
}
