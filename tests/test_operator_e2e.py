"""The operator end to end: `dwcp-autotuner operator` in a subprocess against the Kubernetes API
emulator (tests/kube), a real Prometheus scraping a test exporter that plays the tuned component,
and real kubectl.

One emulator, one Prometheus, one exporter and one operator process are shared by the module (the
operator watches every namespace); each test has its own namespace, ConfigMap, profile, run and
exporter metric names. The operator runs with a 0.5 s tick and every rollout analyses a step
after 3 s, so a four-step rollout takes about 15 s.

The exporter's series do not depend on the canary weight: the tests control what the analysis
sees ("the canary is 10 % better") and check what the operator does with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from dwcp_autotuner.canary.protocol import CANARY_KEYS, CANARY_WEIGHT_KEY
from dwcp_autotuner.models.builtin import BUILTIN_SPACES
from dwcp_autotuner.proposers.store import INDEX_LABEL
from dwcp_autotuner.proposers.store import LABEL as MODEL_LABEL
from tests.kube import running_emulator
from tests.support.profiles import tiny_twin_spec
from tests.support.prometheus import VariantExporter, free_port, prometheus_available, running_prometheus
from tests.support.tools import find_tool, wait_for

REPO = pathlib.Path(__file__).resolve().parent.parent
GROUP = "autotune.dwcp.io"
API_VERSION = f"{GROUP}/v1alpha1"
STEPS = [5, 25, 50, 100]
MODEL_LABELS = {MODEL_LABEL, INDEX_LABEL}  # the model store's ConfigMaps (proposers/store.py)
# Short but honest: at a 1 s scrape and 1 s analysis resolution, 3 s give every variant >= 4 samples.
ROLLOUT = {"analysisIntervalSeconds": 3, "minSamples": 4}
TICK = 0.5


KUBECTL = find_tool("kubectl")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(KUBECTL is None, reason="no kubectl (run .ci/install-k8s-tools.sh)"),
    pytest.mark.skipif(not prometheus_available(), reason="no Prometheus binary (apt-get install prometheus)"),
]


# --- helpers -------------------------------------------------------------------------------------
def condition(status: dict | None, type_: str) -> dict:
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == type_), {})


class Operator:
    """`python -m dwcp_autotuner.cli.main operator` as a child process that tests may SIGKILL and restart."""

    def __init__(
        self, kubeconfig: pathlib.Path, prometheus_url: str, workdir: pathlib.Path, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.extra_args = extra_args
        self.kubeconfig = kubeconfig
        self.prometheus_url = prometheus_url
        self.workdir = workdir
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.log_path = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.liveness_port}/healthz"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 90.0) -> None:
        assert not self.alive
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), env.get("PYTHONPATH", "")])
        env["DWCP_AUTOTUNER_CACHE"] = str(self.workdir / "cache")
        log = open(self.log_path, "ab")  # noqa: SIM115 — handed to the child
        log.write(f"\n===== start #{self.starts + 1} =====\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dwcp_autotuner.cli.main",
                "operator",
                "--kubeconfig",
                str(self.kubeconfig),
                "--all-namespaces",
                "--tick-seconds",
                str(TICK),
                "--profile-recheck-seconds",
                "5",
                "--min-sample-seconds",
                "1",  # Prometheus scrapes every second here (60 s in production)
                "--metrics-port",
                str(self.metrics_port),
                "--liveness",
                self.liveness_url,
                "--prometheus-url",
                self.prometheus_url,
                "--cache-dir",
                str(self.workdir / "cache"),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
        )
        log.close()
        self.starts += 1
        wait_for(self._live, timeout, "the operator's liveness endpoint", interval=0.2, on_timeout=self.log_tail)

    def _live(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the operator exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.liveness_url, timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last status patch."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no operator log)"
        return "--- operator log ---\n" + "\n".join(text[-lines:])

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def errors_in_log(self, since: int = 0) -> list[str]:
        """Tracebacks through the operator's own code logged after byte `since` (a failed handler
        is retried by Kopf, so a bug would otherwise go unnoticed as long as the run ends well)."""
        with open(self.log_path, "rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
        return [block for block in text.split("Traceback (most recent call last):")[1:] if "dwcp_autotuner" in block]


class Kubectl:
    def __init__(self, kubeconfig: pathlib.Path, cache_dir: pathlib.Path) -> None:
        self.kubeconfig, self.cache_dir = kubeconfig, cache_dir

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        cmd = [KUBECTL, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} -> {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def apply(self, namespace: str, *docs: dict, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input=yaml.safe_dump_all(docs, sort_keys=False),
            check=check,
        )

    def wait(
        self, namespace: str, target: str, condition: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self(
            "wait",
            "-n",
            namespace,
            f"--for={condition}",
            target,
            f"--timeout={int(timeout)}s",
            check=False,
            timeout=timeout + 30,
        )


class Cluster:
    """The shared fixtures, plus helpers over the emulator's stored objects."""

    def __init__(self, emulator, kubeconfig, kubectl, prometheus, exporter, operator) -> None:
        self.emulator, self.kubeconfig, self.kubectl = emulator, kubeconfig, kubectl
        self.prometheus, self.exporter, self.operator = prometheus, exporter, operator

    def run(self, namespace: str, name: str) -> dict:
        return self.emulator.get_object("optimizationruns", name, namespace, group=GROUP) or {}

    def run_status(self, namespace: str, name: str) -> dict:
        return self.run(namespace, name).get("status") or {}

    def delete_run(self, namespace: str, name: str, timeout: float = 90) -> None:
        """Delete a run and wait until its finalizer let it go.

        Polls the stored object rather than relying on `kubectl delete --timeout` (a watch), which timed out
        once under CI load; on a timeout it shows what held the object.
        """
        self.kubectl("delete", "-n", namespace, f"optimizationrun/{name}", "--wait=false")
        wait_for(
            lambda: not self.run(namespace, name),
            timeout,
            f"run {name} deleted",
            on_timeout=lambda: (
                json.dumps((self.run(namespace, name) or {}).get("metadata", {}), indent=1)
                + "\n"
                + self.debug(namespace, name)
            ),
        )

    def profile_status(self, namespace: str, name: str) -> dict:
        return (self.emulator.get_object("parameterprofiles", name, namespace, group=GROUP) or {}).get("status") or {}

    def configmap(self, namespace: str, name: str) -> dict:
        return self.emulator.get_object("configmaps", name, namespace) or {}

    def data(self, namespace: str, name: str) -> dict[str, str]:
        return dict(self.configmap(namespace, name).get("data") or {})

    def weight(self, namespace: str, name: str) -> int | None:
        raw = self.data(namespace, name).get(CANARY_WEIGHT_KEY)
        return None if raw is None else int(raw)

    def events(self, namespace: str, run: str, reason: str | None = None) -> list[dict]:
        return [
            e
            for e in self.emulator.list_objects("events", namespace)
            if (e.get("involvedObject") or {}).get("name") == run and (reason is None or e.get("reason") == reason)
        ]

    def event_count(self, namespace: str, run: str, reason: str) -> int:
        return sum(int(e.get("count") or 1) for e in self.events(namespace, run, reason))

    def debug(self, namespace: str, run: str | None = None, cm: str | None = None) -> str:
        parts = []
        if run:
            parts.append("run status: " + json.dumps(self.run_status(namespace, run), indent=1)[:4000])
        if cm:
            parts.append(f"configmap {cm}: {self.data(namespace, cm)}")
        parts.append(self.operator.log_tail(40))
        return "\n".join(parts)

    def operator_metric(self, name: str, **labels: str) -> float | None:
        with urllib.request.urlopen(self.operator.metrics_url, timeout=5) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(got.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None


class WeightRecorder:
    """Polls a ConfigMap's canary weight (every 20 ms) and keeps the sequence of distinct values."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.values: list[int | None] = []
        self.foreign: list[dict] = []  # snapshots whose canary keys are incomplete or not the run's
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            data = self.cluster.data(self.namespace, self.name)
            weight = data.get(CANARY_WEIGHT_KEY)
            value = None if weight is None else int(weight)
            present = [k for k in CANARY_KEYS if k in data]
            if present and len(present) != len(CANARY_KEYS):
                self.foreign.append(data)
            if not self.values or self.values[-1] != value:
                self.values.append(value)
            time.sleep(0.02)

    @property
    def weights(self) -> list[int]:
        return [v for v in self.values if v is not None]

    def __enter__(self) -> WeightRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- manifests -----------------------------------------------------------------------------------
STABLE_BYTES = (
    '{"batch": 10,\n "timeout": 1000}\n'  # deliberately not canonical JSON: a rollback must restore these bytes
)


def configmap(name: str, stable: str = STABLE_BYTES) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"config.json": stable, "unrelated": "kept"},
    }


def profile(
    name: str, target: str, metric: str, *, query: str | None = None, parameters: list | None = None, **spec: Any
) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "ParameterProfile",
        "metadata": {"name": name},
        "spec": {
            "target": {"name": target, "key": "config.json"},
            "parameters": parameters
            or [
                {"name": "batch", "type": "int", "min": 1, "max": 100, "default": 10, "scale": "log2"},
                {"name": "timeout", "type": "int", "min": 100, "max": 5000, "default": 1000, "scale": "log2"},
            ],
            "metrics": [{"name": "objective", "query": query or f'avg({metric}{{variant="{{{{variant}}}}"}})'}],
            "objective": [{"metric": "objective", "goal": "maximize"}],
            **spec,
        },
    }


def run(name: str, profiles: list[str], *, mode: str = "Apply", rollout: dict | None = None, **spec: Any) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "OptimizationRun",
        "metadata": {"name": name},
        "spec": {
            "profiles": profiles,
            "mode": mode,
            "budget": {"maxProposals": 1},
            "agent": {"seed": 3},
            "rollout": {**ROLLOUT, **(rollout or {})},
            **spec,
        },
    }


class WebhookReceiver:
    """A real HTTP server on loopback that keeps the JSON bodies POSTed to it (the operator's notifications)."""

    def __init__(self) -> None:
        import http.server

        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("operator-e2e")
    exporter = VariantExporter(seed=11)
    exporter.set("e2e_warmup", variant="stable", mean=1.0)
    try:
        with (
            running_prometheus([exporter.target], scrape_interval="1s") as prom,
            running_emulator(crd_paths=[REPO / "crds"]) as (emulator, _url, kubeconfig),
        ):
            prom.wait_for('e2e_warmup{variant="stable"}', timeout=30)
            receiver = WebhookReceiver()
            operator = Operator(kubeconfig, prom.url, workdir, extra_args=("--webhook", f"json={receiver.url}"))
            operator.start()
            # Prometheus scrapes the operator's own /metrics too (the dashboard's queries run against it).
            prom.set_targets([exporter.target, f"127.0.0.1:{operator.metrics_port}"])
            try:
                cluster = Cluster(
                    emulator, kubeconfig, Kubectl(kubeconfig, workdir / "kubectl-cache"), prom, exporter, operator
                )
                cluster.webhooks = receiver
                yield cluster
            finally:
                operator.stop()
                receiver.close()
    finally:
        exporter.stop()


@pytest.fixture
def ns(cluster: Cluster, request) -> Iterator[str]:
    """A fresh namespace per test; afterwards the operator must still be alive and the emulator clean."""
    name = (
        "e2e-"
        + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:40].strip("-")
        + "-"
        + uuid.uuid4().hex[:4]
    )
    cluster.emulator.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    if not cluster.operator.alive:  # a previous test failed mid-kill
        cluster.operator.start()
    log_offset = cluster.operator.log_size()
    yield name
    assert cluster.operator.alive, cluster.operator.log_tail()
    assert cluster.emulator.internal_errors == []
    assert cluster.operator.errors_in_log(since=log_offset) == []


def metric_names(cluster: Cluster, key: str, stable: float, canary: float, noise: float = 0.005) -> str:
    """Expose `<key>_objective{variant=...}` around the given means; wait until Prometheus has both.

    The last step compares the canary with one analysis interval of stable samples (four here). At 1 % noise, in a
    CI run of the peering test, four stable samples deviated by 2.3 % and a canary 10 % better missed p < 0.001
    (p = 0.0015): rolled back. At 0.5 % such a draw still leaves p far below it."""
    name = f"{key.replace('-', '_')}_objective"
    cluster.exporter.set(name, variant="stable", mean=stable, noise_cv=noise)
    cluster.exporter.set(name, variant="canary", mean=canary, noise_cv=noise)
    cluster.prometheus.wait_for(f'{name}{{variant="canary"}}', min_samples=1, timeout=20)
    return name


# --- 1. promotion ----------------------------------------------------------------------------------
def test_better_canary_steps_through_the_weights_and_is_promoted(cluster: Cluster, ns: str) -> None:
    metric = metric_names(cluster, "promote", stable=100.0, canary=110.0)
    started = time.monotonic()
    cluster.kubectl.apply(ns, configmap("svc-config"), profile("svc", "svc-config", metric), run("tune", ["svc"]))
    ready = cluster.kubectl.wait(ns, "parameterprofile/svc", "condition=Ready", timeout=30)
    assert ready.returncode == 0, ready.stderr + cluster.debug(ns)
    with WeightRecorder(cluster, ns, "svc-config") as recorder:
        done = cluster.kubectl.wait(ns, "optimizationrun/tune", "condition=Succeeded", timeout=90)
    assert done.returncode == 0, done.stderr + cluster.debug(ns, "tune", "svc-config")
    elapsed = time.monotonic() - started

    # The canary went 5 -> 25 -> 50 -> 100, each step held for an analysis interval, then the keys went.
    assert recorder.weights == STEPS, recorder.values
    assert recorder.values[-1] is None and not recorder.foreign
    assert elapsed >= len(STEPS) * ROLLOUT["analysisIntervalSeconds"]

    status = cluster.run_status(ns, "tune")
    assert status["phase"] == "Succeeded"
    [record] = status["history"]
    assert record["verdict"] == "Promoted" and record["reason"] == "CanaryBetter"
    assert record["pValue"] < 0.001
    assert status["improvementPct"] == pytest.approx(10.0, abs=2.5)
    assert condition(status, "Succeeded")["reason"] == "BudgetExhausted"

    data = cluster.data(ns, "svc-config")
    assert json.loads(data["config.json"]) == record["config"] != json.loads(STABLE_BYTES)
    assert not set(CANARY_KEYS) & set(data) and data["unrelated"] == "kept"
    revision = cluster.data(ns, "tune-svc-1")
    assert json.loads(revision["config.json"]) == record["config"]
    assert json.loads(revision["stable.json"]) == json.loads(STABLE_BYTES)

    assert cluster.event_count(ns, "tune", "Promoted") == 1
    assert cluster.event_count(ns, "tune", "CanaryStarted") == 1
    assert cluster.event_count(ns, "tune", "StepAdvanced") == 3
    assert cluster.operator_metric("dwcp_autotuner_promotions_total", namespace=ns, run="tune") == 1
    assert cluster.operator_metric("dwcp_autotuner_proposals_total", namespace=ns, run="tune", profile="svc") == 1

    # The agent learnt from the verdict: its model went through the Kubernetes API into a ConfigMap owned by the
    # profile (so it is garbage-collected with it), whole (sha256 of the stored bytes = the manifest's), and the
    # profile's next check says the model fits its parameter space. The model is saved again after each analysis
    # step, verdict and background planning pass (the last may land after the run ends), so the bytes and the
    # manifest are read from one and the same read of the ConfigMap.
    model_cm = wait_for(
        lambda: (found := cluster.configmap(ns, "svc-model")).get("binaryData") and found,
        15,
        "the stored model",
        on_timeout=lambda: cluster.debug(ns, "tune"),
    )
    stored = model_cm["binaryData"]
    profile_uid = cluster.emulator.get_object("parameterprofiles", "svc", ns, group=GROUP)["metadata"]["uid"]
    [owner] = model_cm["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ParameterProfile", "svc", profile_uid)
    manifest = json.loads(model_cm["data"]["manifest.json"])
    assert manifest["run"] == "tune" and manifest["parts"] == 1
    assert hashlib.sha256(base64.b64decode(stored["model.zst"])).hexdigest() == manifest["sha256"]
    fits = wait_for(
        lambda: condition(cluster.profile_status(ns, "svc"), "ModelCompatible"),
        15,
        "ModelCompatible on the profile",
        on_timeout=lambda: json.dumps(cluster.profile_status(ns, "svc")),
    )
    assert fits["status"] == "True" and fits["reason"] == "ModelCompatible", fits


# --- 2. rollback ---------------------------------------------------------------------------------
def test_worse_canary_is_rolled_back_to_the_exact_stable_bytes(cluster: Cluster, ns: str) -> None:
    metric = metric_names(cluster, "rollback", stable=100.0, canary=88.0)
    cluster.kubectl.apply(ns, configmap("svc-config"), profile("svc", "svc-config", metric), run("tune", ["svc"]))
    with WeightRecorder(cluster, ns, "svc-config") as recorder:
        done = cluster.kubectl.wait(ns, "optimizationrun/tune", "jsonpath={.status.phase}=RolledBack", timeout=60)
    assert done.returncode == 0, done.stderr + cluster.debug(ns, "tune", "svc-config")

    assert recorder.weights == [5]  # rolled back at the first analysis, never advanced
    data = cluster.data(ns, "svc-config")
    assert data["config.json"] == STABLE_BYTES  # byte for byte
    assert not set(CANARY_KEYS) & set(data) and data["unrelated"] == "kept"
    assert cluster.configmap(ns, "tune-svc-1")  # the revision is kept for the audit trail

    status = cluster.run_status(ns, "tune")
    assert [h["verdict"] for h in status["history"]] == ["RolledBack"]
    assert status["history"][0]["reason"] == "CanaryWorse"
    assert condition(status, "RolledBack")["status"] == "True"
    assert condition(status, "Succeeded")["status"] == "False"
    assert cluster.event_count(ns, "tune", "RolledBack") == 1
    assert cluster.event_count(ns, "tune", "Promoted") == 0
    assert cluster.operator_metric("dwcp_autotuner_rollbacks_total", namespace=ns, run="tune") == 1


def test_a_run_edited_into_an_invalid_spec_mid_rollout_withdraws_its_canary(cluster: Cluster, ns: str) -> None:
    """Failed must never mean "canary left out": the schema accepts decreasing steps, the model does not."""
    metric = metric_names(cluster, "edit-invalid", stable=100.0, canary=110.0)
    slow = {**ROLLOUT, "analysisIntervalSeconds": 60}  # the canary stays at 5 % while the spec is edited
    cluster.kubectl.apply(
        ns, configmap("svc-config"), profile("svc", "svc-config", metric), run("tune", ["svc"], rollout=slow)
    )
    wait_for(
        lambda: cluster.weight(ns, "svc-config") == 5,
        60,
        "the canary at 5 %",
        on_timeout=lambda: cluster.debug(ns, "tune"),
    )

    cluster.kubectl(
        "patch",
        "-n",
        ns,
        "optimizationrun/tune",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"rollout": {"steps": [50, 25, 100]}}}),
    )
    failed = cluster.kubectl.wait(ns, "optimizationrun/tune", "jsonpath={.status.phase}=Failed", timeout=30)
    assert failed.returncode == 0, failed.stderr + cluster.debug(ns, "tune", "svc-config")
    data = cluster.data(ns, "svc-config")
    assert not set(CANARY_KEYS) & set(data), data
    assert data["config.json"] == STABLE_BYTES and data["unrelated"] == "kept"
    status = cluster.run_status(ns, "tune")
    ready = condition(status, "Ready")
    assert (
        ready["reason"] == "InvalidSpec"
        and "spec.rollout.steps" in ready["message"]
        and "withdrawn" in ready["message"]
    )
    assert status.get("current") is None
    assert [(h["verdict"], h["reason"]) for h in status["history"]] == [("RolledBack", "InvalidSpec")]
    assert cluster.operator_metric("dwcp_autotuner_rollbacks_total", namespace=ns, run="tune") == 1
    assert cluster.event_count(ns, "tune", "RolledBack") == 1


# --- 3. SIGKILL at every step --------------------------------------------------------------------
def test_operator_killed_at_every_step_resumes_there_and_promotes_once(cluster: Cluster, ns: str) -> None:
    metric = metric_names(cluster, "sigkill", stable=100.0, canary=110.0)
    cluster.kubectl.apply(ns, configmap("svc-config"), profile("svc", "svc-config", metric), run("tune", ["svc"]))
    with WeightRecorder(cluster, ns, "svc-config") as recorder:
        for step in STEPS:
            wait_for(
                lambda: cluster.weight(ns, "svc-config") == step,
                60,
                f"the canary at {step} %",
                interval=0.02,
                on_timeout=lambda: cluster.debug(ns, "tune", "svc-config"),
            )
            cluster.operator.kill()  # right after the weight write: the status may or may not say so yet
            assert cluster.weight(ns, "svc-config") == step
            cluster.operator.start()
            # Resumed where it was: the status catches up with the ConfigMap (nothing pending) and the
            # rollout goes on from this step (the recorder proves the weight never went back or skipped).
            later = STEPS[STEPS.index(step) :]

            def resumed() -> bool:
                status = cluster.run_status(ns, "tune")
                current = status.get("current") or {}
                return status.get("phase") == "Succeeded" or (
                    current.get("canaryWeight") in later and current.get("pendingAction") is None
                )

            wait_for(
                resumed,
                30,
                f"the run to resume at {step} %",
                on_timeout=lambda: cluster.debug(ns, "tune", "svc-config"),
            )
        done = cluster.kubectl.wait(ns, "optimizationrun/tune", "condition=Succeeded", timeout=60)
    assert done.returncode == 0, done.stderr + cluster.debug(ns, "tune", "svc-config")

    assert recorder.weights == STEPS, recorder.values  # never restarted from 5, never skipped a step
    assert not recorder.foreign
    status = cluster.run_status(ns, "tune")
    assert [h["verdict"] for h in status["history"]] == ["Promoted"]
    assert status["proposals"] == 1
    assert cluster.event_count(ns, "tune", "Promoted") == 1
    # Events of the steps are at least once: a process killed between its ConfigMap write and its
    # status write cannot know whether it posted the event, so the next one posts it (again).
    assert (
        cluster.event_count(ns, "tune", "CanaryStarted") >= 1 and cluster.event_count(ns, "tune", "StepAdvanced") >= 3
    )
    data = cluster.data(ns, "svc-config")
    assert json.loads(data["config.json"]) == status["history"][0]["config"]
    assert not set(CANARY_KEYS) & set(data)  # no leftover canary
    revisions = [
        cm["metadata"]["name"]
        for cm in cluster.emulator.list_objects("configmaps", ns)
        if cm["metadata"]["name"] != "svc-config" and not set(cm["metadata"].get("labels") or {}) & MODEL_LABELS
    ]
    assert revisions == ["tune-svc-1"]  # the learned twin's stored model (and its index) aside


# --- 4. Prometheus outage ----------------------------------------------------------------------------
def test_prometheus_outage_never_promotes_and_rolls_back_or_holds(cluster: Cluster, ns: str) -> None:
    metric_a = metric_names(cluster, "outage-a", stable=100.0, canary=110.0)
    metric_b = metric_names(cluster, "outage-b", stable=100.0, canary=110.0)
    limits = {"maxInconclusive": 2}
    cluster.kubectl.apply(
        ns,
        configmap("cm-a"),
        profile("svc-a", "cm-a", metric_a),
        run("rollback", ["svc-a"], rollout={**limits, "onInconclusive": "Rollback"}),
        configmap("cm-b"),
        profile("svc-b", "cm-b", metric_b),
        run("hold", ["svc-b"], rollout={**limits, "onInconclusive": "Hold"}),
    )
    for cm in ("cm-a", "cm-b"):
        wait_for(
            lambda: (cluster.weight(ns, cm) or 0) >= 25,
            60,
            f"{cm} mid-rollout",
            on_timeout=lambda: cluster.debug(ns, cm=cm),
        )
    counted_before = (cluster.run_status(ns, "rollback").get("current") or {}).get("inconclusive", 0)
    cluster.prometheus.stop()
    try:
        stopped = time.monotonic()
        done = cluster.kubectl.wait(ns, "optimizationrun/rollback", "jsonpath={.status.phase}=RolledBack", timeout=60)
        assert done.returncode == 0, done.stderr + cluster.debug(ns, "rollback", "cm-a")
        status = cluster.run_status(ns, "rollback")
        assert "2 inconclusive analyses" in status["history"][0]["message"]
        if counted_before == 0:  # two analyses during the outage: one analysis interval apart, not two operator ticks
            assert time.monotonic() - stopped >= ROLLOUT["analysisIntervalSeconds"]
        assert [(h["verdict"], h["reason"]) for h in status["history"]] == [("RolledBack", "Inconclusive")]
        assert "unavailable" in status["history"][0]["message"].lower()
        assert cluster.data(ns, "cm-a")["config.json"] == STABLE_BYTES
        assert not set(CANARY_KEYS) & set(cluster.data(ns, "cm-a"))

        held = cluster.kubectl.wait(
            ns,
            "optimizationrun/hold",
            'jsonpath={.status.conditions[?(@.type=="Progressing")].reason}=Held',
            timeout=60,
        )
        assert held.returncode == 0, held.stderr + cluster.debug(ns, "hold", "cm-b")
        weight = cluster.weight(ns, "cm-b")
        assert weight in (25, 50, 100)
        time.sleep(4 * TICK)
        status = cluster.run_status(ns, "hold")
        assert status["phase"] == "RollingOut" and status["current"]["canaryWeight"] == weight == cluster.weight(
            ns, "cm-b"
        )
        assert condition(status, "Degraded")["status"] == "True"
        assert cluster.event_count(ns, "hold", "CanaryHeld") == 1
        for name in ("rollback", "hold"):
            assert cluster.event_count(ns, name, "Promoted") == 0
    finally:
        cluster.prometheus.start()

    # Deleting the held run removes its canary keys and leaves the stable bytes alone.
    cluster.delete_run(ns, "hold")
    data = cluster.data(ns, "cm-b")
    assert data["config.json"] == STABLE_BYTES and not set(CANARY_KEYS) & set(data)


# --- 5. drift ----------------------------------------------------------------------------------------
def test_human_edits_during_the_rollout_are_never_overwritten(cluster: Cluster, ns: str) -> None:
    """An edit of the canary weight pauses the run; an edit of the stable key withdraws the canary and is kept."""
    metric = metric_names(cluster, "drift", stable=100.0, canary=110.0)
    cluster.kubectl.apply(ns, configmap("svc-config"), profile("svc", "svc-config", metric), run("tune", ["svc"]))
    wait_for(
        lambda: cluster.weight(ns, "svc-config") == 25,
        60,
        "the canary at 25 %",
        interval=0.05,
        on_timeout=lambda: cluster.debug(ns, "tune", "svc-config"),
    )
    cluster.kubectl(
        "patch", "-n", ns, "configmap/svc-config", "--type=merge", "-p", json.dumps({"data": {CANARY_WEIGHT_KEY: "40"}})
    )
    degraded = cluster.kubectl.wait(ns, "optimizationrun/tune", "condition=Degraded", timeout=30)
    assert degraded.returncode == 0, degraded.stderr + cluster.debug(ns, "tune", "svc-config")
    for _ in range(8):  # several ticks, and more than an analysis interval
        time.sleep(TICK)
        assert cluster.data(ns, "svc-config")[CANARY_WEIGHT_KEY] == "40"
    status = cluster.run_status(ns, "tune")
    assert status["phase"] == "RollingOut" and condition(status, "Degraded")["reason"] == "ConfigMapDrift"
    assert "will not overwrite" in status["message"] and "remove the canary keys" in status["message"]

    human = '{"batch": 40, "timeout": 1000}'
    cluster.kubectl(
        "patch", "-n", ns, "configmap/svc-config", "--type=merge", "-p", json.dumps({"data": {"config.json": human}})
    )
    wait_for(
        lambda: not set(CANARY_KEYS) & set(cluster.data(ns, "svc-config")),
        30,
        "the canary withdrawn after the stable edit",
        on_timeout=lambda: cluster.debug(ns, "tune", "svc-config"),
    )
    assert cluster.data(ns, "svc-config")["config.json"] == human
    wait_for(
        lambda: (cluster.run_status(ns, "tune").get("history") or [{}])[0].get("reason") == "StableEdited",
        30,
        "the proposal recorded as StableEdited",
        on_timeout=lambda: cluster.debug(ns, "tune", "svc-config"),
    )
    assert cluster.event_count(ns, "tune", "Promoted") == 0
    cluster.delete_run(ns, "tune")
    assert cluster.data(ns, "svc-config")["config.json"] == human


# --- 6. invalid resources ------------------------------------------------------------------------
def test_invalid_resources_are_rejected_or_reported_and_the_operator_survives(cluster: Cluster, ns: str) -> None:
    metric = metric_names(cluster, "invalid", stable=100.0, canary=100.0)
    # Rejected by the schema, with the field named.
    turbo = cluster.kubectl.apply(ns, run("turbo", ["svc"], mode="Turbo"), check=False)
    assert turbo.returncode != 0 and "spec.mode" in turbo.stderr and "Turbo" in turbo.stderr, turbo.stderr
    negative = profile("negative", "svc-config", metric)
    negative["spec"]["objective"][0]["weight"] = -1
    rejected = cluster.kubectl.apply(ns, negative, check=False)
    assert rejected.returncode != 0 and "spec.objective[0].weight" in rejected.stderr, rejected.stderr
    steps = cluster.kubectl.apply(ns, run("steps", ["svc"], rollout={"steps": [-5, 100]}), check=False)
    assert steps.returncode != 0 and "spec.rollout.steps[0]" in steps.stderr, steps.stderr
    assert cluster.emulator.get_object("optimizationruns", "turbo", ns, group=GROUP) is None

    # Accepted by the schema, reported by the operator as a condition.
    inverted = profile(
        "inverted",
        "svc-config",
        metric,
        parameters=[{"name": "batch", "type": "int", "min": 50, "max": 10, "default": 20}],
    )
    out_of_bounds = profile(
        "bounds",
        "small-config",
        metric,
        parameters=[{"name": "batch", "type": "int", "min": 1, "max": 5, "default": 2}],
    )
    cluster.kubectl.apply(
        ns,
        configmap("svc-config"),
        configmap("small-config", stable='{"batch": 10}'),
        profile("badquery", "svc-config", metric, query='sum(rate(svc_objective{variant="{{variant}}"}[{{window}}])'),
        profile("nocm", "missing-config", metric),
        inverted,
        out_of_bounds,
        run("orphan", ["does-not-exist"]),
        run("blocked", ["badquery"]),
        run("badsteps", ["badquery"], rollout={"steps": [50, 25, 100]}),
        # Valid field by field, but 3 s at 2 s spacing hold 2 samples, never the 4 an analysis needs.
        run("starved", ["badquery"], rollout={"analysisIntervalSeconds": 3, "sampleSeconds": 2, "minSamples": 4}),
    )
    expected = {
        "badquery": "InvalidQuery",
        "nocm": "TargetNotFound",
        "inverted": "InvalidSpec",
        "bounds": "InvalidStableConfig",
    }
    for name, reason in expected.items():
        wait_for(
            lambda: condition(cluster.profile_status(ns, name), "Ready").get("reason") == reason,
            30,
            f"profile {name} Ready=False {reason}",
            on_timeout=lambda: json.dumps(cluster.profile_status(ns, name), indent=1) + cluster.operator.log_tail(),
        )
        ready = condition(cluster.profile_status(ns, name), "Ready")
        assert ready["status"] == "False", ready
    assert "parse error" in condition(cluster.profile_status(ns, "badquery"), "Ready")["message"]
    assert "min (50) must be below max (10)" in condition(cluster.profile_status(ns, "inverted"), "Ready")["message"]
    assert "batch: 10 is outside [1, 5]" in condition(cluster.profile_status(ns, "bounds"), "Ready")["message"]

    for name, needle in (("orphan", "not found"), ("blocked", "InvalidQuery")):
        # The run may first say "not validated yet"; it must settle on the profile's own reason.
        wait_for(
            lambda: (
                condition(cluster.run_status(ns, name), "Ready").get("reason") == "ProfileNotReady"
                and needle in condition(cluster.run_status(ns, name), "Ready").get("message", "")
            ),
            30,
            f"run {name} Ready=False ProfileNotReady mentioning {needle}",
            on_timeout=lambda: cluster.debug(ns, name),
        )
        assert cluster.run_status(ns, name)["phase"] == "Pending"
    failed = cluster.kubectl.wait(ns, "optimizationrun/badsteps", "jsonpath={.status.phase}=Failed", timeout=30)
    assert failed.returncode == 0, failed.stderr + cluster.debug(ns, "badsteps")
    ready = condition(cluster.run_status(ns, "badsteps"), "Ready")
    assert ready["reason"] == "InvalidSpec" and "spec.rollout.steps" in ready["message"]
    failed = cluster.kubectl.wait(ns, "optimizationrun/starved", "jsonpath={.status.phase}=Failed", timeout=30)
    assert failed.returncode == 0, failed.stderr + cluster.debug(ns, "starved")
    ready = condition(cluster.run_status(ns, "starved"), "Ready")
    assert ready["reason"] == "InvalidSpec" and "holds only 2 sample(s)" in ready["message"], ready

    time.sleep(4 * TICK)  # a few more ticks over all of it
    assert not set(CANARY_KEYS) & set(cluster.data(ns, "svc-config"))
    assert cluster.data(ns, "small-config")["config.json"] == '{"batch": 10}'
    # Never a crash: the same process is still serving, the API server saw no malformed request.
    assert cluster.operator.alive and cluster.operator._live()
    assert cluster.emulator.internal_errors == []


# --- 7. Recommend mode --------------------------------------------------------------------------------
def test_recommend_mode_writes_recommendations_and_never_touches_the_configmap(cluster: Cluster, ns: str) -> None:
    metric = metric_names(cluster, "recommend", stable=100.0, canary=110.0)
    cluster.kubectl.apply(ns, configmap("svc-config"), profile("svc", "svc-config", metric))
    before = cluster.configmap(ns, "svc-config")
    cluster.kubectl.apply(ns, run("advice", ["svc"], mode="Recommend"))
    done = cluster.kubectl.wait(ns, "optimizationrun/advice", "condition=Succeeded", timeout=60)
    assert done.returncode == 0, done.stderr + cluster.debug(ns, "advice")
    status = cluster.run_status(ns, "advice")
    [recommendation] = status["recommendations"]
    assert recommendation["profile"] == "svc" and recommendation["config"] != json.loads(STABLE_BYTES)
    assert [h["verdict"] for h in status["history"]] == ["Recommended"]
    time.sleep(2 * TICK)
    after = cluster.configmap(ns, "svc-config")
    assert (
        after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        and after["data"] == before["data"]
    )
    assert [cm["metadata"]["name"] for cm in cluster.emulator.list_objects("configmaps", ns)] == ["svc-config"]
    assert cluster.event_count(ns, "advice", "CanaryStarted") == 0


# --- a profile edit costs one status write ---------------------------------------------------------------
def test_a_profile_edit_is_revalidated_with_one_status_write_and_no_write_of_the_object(
    cluster: Cluster, ns: str
) -> None:
    """Profiles are validated per generation from the watch: an edit is answered by a status PATCH only (Kopf's
    create/update handlers also PATCHed the object itself, for their annotations, on every change), and the
    object carries no handler bookkeeping a real API server would have to store."""
    metric = metric_names(cluster, "edit", stable=100.0, canary=100.0)
    cluster.kubectl.apply(ns, configmap("svc-config"), profile("svc", "svc-config", metric))
    ready = cluster.kubectl.wait(ns, "parameterprofile/svc", "condition=Ready", timeout=30)
    assert ready.returncode == 0, ready.stderr + cluster.debug(ns)
    time.sleep(2 * TICK)  # anything the first sight wrote has landed

    def writes() -> tuple[int, int]:
        counts = cluster.emulator.requests
        return counts[("PATCH", "parameterprofiles", False)], counts[("PATCH", "parameterprofiles/status", False)]

    before = writes()
    edited = {"spec": {"metrics": [{"name": "objective", "description": "edited", "query": f"avg({metric})"}]}}
    cluster.kubectl("patch", "-n", ns, "parameterprofile/svc", "--type=merge", "-p", json.dumps(edited))
    generation = cluster.emulator.get_object("parameterprofiles", "svc", ns, group=GROUP)["metadata"]["generation"]
    wait_for(
        lambda: cluster.profile_status(ns, "svc").get("observedGeneration") == generation,
        10,
        "the edited profile to be re-validated",
        on_timeout=lambda: json.dumps(cluster.profile_status(ns, "svc")),
    )
    time.sleep(2 * TICK)
    object_writes, status_writes = (after - was for after, was in zip(writes(), before, strict=True))
    assert object_writes == 1, "only kubectl's own PATCH of the object"
    assert status_writes >= 1
    annotations = cluster.emulator.get_object("parameterprofiles", "svc", ns, group=GROUP)["metadata"].get(
        "annotations", {}
    )
    assert not [a for a in annotations if a.startswith("kopf.zalando.org/")], annotations


# --- 8. the operator's own endpoints -----------------------------------------------------------------
def test_operator_exposes_metrics_and_liveness(cluster: Cluster, ns: str) -> None:
    metric = metric_names(cluster, "metrics", stable=100.0, canary=100.0)
    cluster.kubectl.apply(
        ns, configmap("svc-config"), profile("svc", "svc-config", metric), run("advice", ["svc"], mode="Recommend")
    )
    assert cluster.kubectl.wait(ns, "optimizationrun/advice", "condition=Succeeded", timeout=60).returncode == 0
    with urllib.request.urlopen(cluster.operator.metrics_url, timeout=5) as response:
        text = response.read().decode()
    for family, kind in (
        ("dwcp_autotuner_proposals", "counter"),
        ("dwcp_autotuner_promotions", "counter"),
        ("dwcp_autotuner_rollbacks", "counter"),
        ("dwcp_autotuner_reconcile_seconds", "histogram"),
    ):
        assert re.search(rf"^# TYPE {family}(_total)? {kind}$", text, re.M), text
    assert (cluster.operator_metric("dwcp_autotuner_reconcile_seconds_count", kind="run") or 0) > 0
    assert (cluster.operator_metric("dwcp_autotuner_reconcile_seconds_count", kind="profile") or 0) > 0
    with urllib.request.urlopen(cluster.operator.liveness_url, timeout=5) as response:
        assert response.status == 200


# --- pretraining does not block the operator ------------------------------------------------------------
def tiny_twin_profile(twin: str, target: str) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "ParameterProfile",
        "metadata": {"name": twin},
        "spec": tiny_twin_spec(twin, target, metric_prefix="e2e_"),
    }


def test_pretraining_runs_in_the_background_and_reports_progress(cluster: Cluster, ns: str) -> None:
    twin = "acp"
    default = {p.name: p.default for p in BUILTIN_SPACES[twin].parameters}
    agent = {
        "strategy": "DQN",  # the DQN pretrained on the measured twin (the default strategy only measures the twin)
        "episodes": 400,
        "stepsPerEpisode": 100,
        "learningStarts": 200,
        "batchSize": 32,
        "hiddenSizes": [64],
        "seed": 1,
    }
    cluster.kubectl.apply(
        ns,
        configmap("acp-config", stable=json.dumps(default)),
        tiny_twin_profile(twin, "acp-config"),
        {
            **run("pretrain", [twin], mode="Recommend"),
            "spec": {**run("pretrain", [twin], mode="Recommend")["spec"], "agent": agent},
        },
    )
    episodes: list[int] = []

    def progress() -> int | None:
        status = cluster.run_status(ns, "pretrain")
        training = (status.get("training") or {}).get(twin)
        if status.get("phase") == "Pretraining" and training:
            if not episodes or episodes[-1] != training["episodes"]:
                episodes.append(training["episodes"])
            return training["episodes"]
        return None

    wait_for(
        lambda: (progress() or 0) > 0, 60, "pretraining episodes", on_timeout=lambda: cluster.debug(ns, "pretrain")
    )
    status = cluster.run_status(ns, "pretrain")
    assert condition(status, "Progressing")["reason"] == "Pretraining"
    assert re.match(r"Pretraining on twins: \d+/400 episodes\.", status["message"]), status["message"]

    # Meanwhile another profile and another run are reconciled as usual.
    metric = metric_names(cluster, "pretrain-other", stable=100.0, canary=110.0)
    cluster.kubectl.apply(
        ns, configmap("svc-config"), profile("svc", "svc-config", metric), run("other", ["svc"], mode="Recommend")
    )
    other = wait_for(
        lambda: progress() is not None and cluster.run_status(ns, "other").get("phase") == "Succeeded",
        30,
        "the other run to finish while the first one pretrains",
        on_timeout=lambda: cluster.debug(ns, "pretrain"),
    )
    assert other
    cluster.kubectl(
        "patch",
        "-n",
        ns,
        "parameterprofile/svc",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "spec": {
                    "metrics": [
                        {
                            "name": "objective",
                            "description": "edited",
                            "query": f'avg({metric}{{variant="{{{{variant}}}}"}})',
                        }
                    ]
                }
            }
        ),
    )
    generation = cluster.emulator.get_object("parameterprofiles", "svc", ns, group=GROUP)["metadata"]["generation"]
    wait_for(
        lambda: progress() is not None and cluster.profile_status(ns, "svc").get("observedGeneration") == generation,
        10,
        "the edited profile to be re-validated while the run pretrains",
    )
    wait_for(
        lambda: len([e for e in episodes if e > 0]) >= 3 or progress() is None,
        30,
        "more pretraining progress",
        interval=0.2,
    )
    assert len([e for e in episodes if 0 < e < 400]) >= 3 and episodes == sorted(episodes), episodes

    # Deleting the run stops its pretraining.
    cluster.delete_run(ns, "pretrain")


# --- the dashboard's queries against Prometheus scraping the operator ----------------------------------------
def _panels() -> dict[str, list[str]]:
    dashboard = json.loads((REPO / "charts" / "dwcp-autotuner" / "dashboards" / "dwcp-autotuner.json").read_text())
    panels = {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"]}
    panels.update({f"annotation {a['name']}": [a["expr"]] for a in dashboard["annotations"]["list"] if "expr" in a})
    return panels


def _query(cluster: Cluster, expr: str, namespace: str, run: str) -> list[tuple[dict, float]]:
    """A panel's query as Grafana would send it, with its variables set to this run and a range covering the test."""
    promql = (
        expr.replace("$namespace", namespace)
        .replace("$run", run)
        .replace("$__range", "10m")
        .replace("$__rate_interval", "10m")
    )
    return [(r["metric"], float(r["value"][1])) for r in cluster.prometheus.query(promql)]


def test_every_dashboard_panel_shows_what_happened(cluster: Cluster, ns: str) -> None:
    """A run that promotes profile `a` and rolls back profile `b`: every panel's query, evaluated by the real
    Prometheus that scrapes the real operator's /metrics, returns what happened (mid-rollout and at the end)."""
    better = metric_names(cluster, "dash-a", stable=100.0, canary=110.0)
    worse = metric_names(cluster, "dash-b", stable=100.0, canary=85.0)
    cluster.kubectl.apply(
        ns,
        configmap("a-config"),
        configmap("b-config"),
        profile("a", "a-config", better),
        profile("b", "b-config", worse),
    )
    assert cluster.kubectl.wait(ns, "parameterprofile/a", "condition=Ready", timeout=30).returncode == 0
    assert cluster.kubectl.wait(ns, "parameterprofile/b", "condition=Ready", timeout=30).returncode == 0
    cluster.kubectl.apply(ns, run("dash", ["a", "b"], budget={"maxProposals": 2}))
    panels = _panels()
    q = lambda title, i=0: _query(cluster, panels[title][i], ns, "dash")  # noqa: E731

    # Mid-rollout: the canary of `a` at 25 % or more, its score against the stable one's, its p-value.
    wait_for(
        lambda: any(v >= 25 for m, v in q("Canary weight") if m.get("profile") == "a"),
        60,
        "a's canary weight at 25 % in Prometheus",
        on_timeout=lambda: cluster.debug(ns, "dash"),
    )
    scores = {m["variant"]: v for m, v in q("Canary vs stable score") if m.get("profile") == "a"}
    assert scores["canary"] == pytest.approx(110.0, rel=0.05) and scores["stable"] == pytest.approx(100.0, rel=0.05)
    assert [m["phase"] for m, _ in q("Phase")] == ["RollingOut"]
    assert all(0.0 <= v <= 1.0 for _, v in q("Analysis p-value"))

    done = cluster.kubectl.wait(ns, "optimizationrun/dash", "jsonpath={.status.phase}=Succeeded", timeout=120)
    assert done.returncode == 0, done.stderr + cluster.debug(ns, "dash")
    status = cluster.run_status(ns, "dash")
    assert [(h["profile"], h["verdict"]) for h in status["history"]] == [("a", "Promoted"), ("b", "RolledBack")]
    wait_for(lambda: [m["phase"] for m, _ in q("Phase")] == ["Succeeded"], 30, "the phase panel at Succeeded")
    time.sleep(2.5)  # a scrape or two of the final values

    assert [v for _, v in q("Proposals")] == [2.0]
    assert [v for _, v in q("Promotions")] == [1.0]
    assert [v for _, v in q("Rollbacks")] == [1.0]
    assert [v for _, v in q("Internal errors")] == [0.0]
    assert {m["profile"]: v for m, v in q("Canary weight")} == {"a": 0.0, "b": 0.0}  # nothing out any more
    assert q("Canary vs stable score") == [] and q("Analysis p-value") == []  # the gauges of a canary go with it
    improvement = {m["profile"]: v for m, v in q("Improvement")}
    assert improvement == {"a": pytest.approx(status["improvements"]["a"], abs=0.01)}
    assert improvement["a"] == pytest.approx(10.0, abs=3.0)
    promoted = {m["profile"]: round(v) for m, v in q("Promotions and rollbacks", 0)}
    rolled_back = {m["profile"]: round(v) for m, v in q("Promotions and rollbacks", 1)}
    assert promoted == {"a": 1, "b": 0} and rolled_back == {"a": 0, "b": 1}
    assert {m["profile"]: round(v) for m, v in q("Canaries started")} == {"a": 1, "b": 1}
    latency = {m["kind"]: v for m, v in q("Reconcile latency p50 / p99")}
    assert 0 < latency["run"] < 5 and 0 < latency["profile"] < 5
    assert [m["version"] for m, _ in q("Operator version")] == [__import__("dwcp_autotuner").__version__]
    annotations = {title: [m["profile"] for m, _ in q(f"annotation {title}")] for title in ("Promotions", "Rollbacks")}
    assert annotations == {"Promotions": ["a"], "Rollbacks": ["b"]}
    sent = {m["outcome"]: round(v) for m, v in q("Notifications")}
    mine = [b for b in cluster.webhooks.bodies if b["namespace"] == ns]
    assert {b["reason"] for b in mine} >= {"Promoted", "RolledBack", "Finished"}
    assert sent["sent"] >= len(mine) and sent["failed"] == 0 and sent["dropped"] == 0
