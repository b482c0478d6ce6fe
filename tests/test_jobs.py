"""Heavy work as Kubernetes Jobs (proposers/workers.JobWorkers, ports/kubernetes.KubernetesJobs, `dwcp-autotuner
worker`), end to end against the API emulator.

The emulator runs no controllers, so `Kubelet` below plays the kubelet and the Job controller: it watches the Jobs
the operator creates and runs each one's command (`dwcp-autotuner worker …`) as a local process with the emulator's
credentials, then writes the Job's status as the Job controller would (Complete, or Failed with its reason). Its
limits: no pods are run for successful Jobs (only a Pod object for an image that cannot be pulled, with the
kubelet's waiting reason), `activeDeadlineSeconds` is enforced by killing the process, `backoffLimit` is taken to be
0 (what the operator sets), `ttlSecondsAfterFinished` and garbage collection are not done. The image decides what
the "container" does: `dwcp-autotuner:test` runs the command; `unpullable:1` never starts (ErrImagePull);
`crashing:1` exits 1 at once; `slow:1` sleeps past the deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import kubernetes
import pytest

from dwcp_autotuner.handlers.runtime import JobsConfig, OperatorConfig, OperatorRuntime
from dwcp_autotuner.ports.local import InProcessMetrics
from dwcp_autotuner.workloads import twin_conditions
from tests.kube import running_emulator
from tests.kube.emulator import ResourceType
from tests.support.profiles import tiny_twin_spec
from tests.support.tools import REPO, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
NS, JOBS_NS = "tuning", "workers"


class Kubelet:
    def __init__(self, emulator, kubeconfig) -> None:
        self.emulator, self.kubeconfig = emulator, kubeconfig
        api = kubernetes.config.new_client_from_config(str(kubeconfig))
        self.batch, self.core = kubernetes.client.BatchV1Api(api), kubernetes.client.CoreV1Api(api)
        self.processes: dict[str, tuple[subprocess.Popen, float, int]] = {}
        self.seen: set[str] = set()
        self.commands: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        for process, _, _ in self.processes.values():
            process.kill()

    def _loop(self) -> None:
        while not self._stop.is_set():
            jobs = {j["metadata"]["name"]: j for j in self.emulator.list_objects("jobs", JOBS_NS, group="batch")}
            for name, job in jobs.items():
                if name not in self.seen:
                    self.seen.add(name)
                    self._start(job)
            for name, (process, started, deadline) in list(self.processes.items()):
                if name not in jobs:  # deleted by the operator
                    process.kill()
                    del self.processes[name]
                elif process.poll() is not None:
                    self._finish(name, "Complete" if process.returncode == 0 else "Failed", "BackoffLimitExceeded")
                    del self.processes[name]
                elif time.monotonic() - started > deadline:
                    process.kill()
                    self._finish(name, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
                    del self.processes[name]
            time.sleep(0.1)

    def _start(self, job: dict) -> None:
        name = job["metadata"]["name"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        image, args = container["image"], container["args"]
        self.commands.append(args)
        if image == "unpullable:1":
            pod = self.core.create_namespaced_pod(
                JOBS_NS,
                {
                    "metadata": {"name": f"{name}-x1", "labels": {"job-name": name}},
                    "spec": {"containers": [{"name": "worker", "image": image}]},
                },
            )
            self.core.patch_namespaced_pod_status(
                pod.metadata.name,
                JOBS_NS,
                {
                    "status": {
                        "containerStatuses": [
                            {
                                "name": "worker",
                                "image": image,
                                "imageID": "",
                                "ready": False,
                                "restartCount": 0,
                                "state": {"waiting": {"reason": "ErrImagePull", "message": f"pull {image}: not found"}},
                            }
                        ]
                    }
                },
            )
            return
        if image == "crashing:1":
            command = [sys.executable, "-c", "raise SystemExit(1)"]
        elif image == "slow:1":
            command = [sys.executable, "-c", "import time; time.sleep(60)"]
        else:
            command = [sys.executable, "-m", "dwcp_autotuner.cli.main", *args, "--kubeconfig", str(self.kubeconfig)]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes[name] = (process, time.monotonic(), int(job["spec"]["activeDeadlineSeconds"]))

    def _finish(self, name: str, kind: str, reason: str, message: str = "") -> None:
        condition = {"type": kind, "status": "True"}
        if kind == "Failed":
            condition.update(reason=reason, message=message or "Job has reached the specified backoff limit")
        counts = {"succeeded": 1} if kind == "Complete" else {"failed": 1}
        self.batch.patch_namespaced_job_status(name, JOBS_NS, {"status": {**counts, "conditions": [condition]}})


@pytest.fixture
def cluster():
    with running_emulator(crd_paths=[REPO / "crds"]) as (emulator, _url, kubeconfig):
        emulator.register_resource(
            ResourceType(group="batch", versions=["v1"], plural="jobs", kind="Job", status_subresource=True)
        )
        for ns in (NS, JOBS_NS):
            emulator.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        yield emulator, kubeconfig


def _runtime(kubeconfig, image: str, deadline: int = 600, resources: dict | None = None) -> OperatorRuntime:
    config = OperatorConfig(
        namespaces=[NS],
        tick_seconds=1.0,
        min_sample_seconds=1.0,
        prometheus_url="http://127.0.0.1:9",
        metrics_port=0,
        liveness=None,
        kubeconfig=str(kubeconfig),
        jobs=JobsConfig(image=image, namespace=JOBS_NS, deadline_seconds=deadline, resources=resources or {}),
    )
    runtime = OperatorRuntime(config)
    runtime.prometheus = lambda url: InProcessMetrics()
    runtime.workers.poll_seconds = 0.2
    return runtime


def _pretrain(emulator, runtime: OperatorRuntime, timeout: float) -> dict:
    """A profile with a twin, validated, and a run ticked until its pretraining is over; the run's status."""
    emulator.create_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "pba-config", "namespace": NS},
            "data": {"config.json": '{"prediction_window": 30, "confidence_threshold": 0.85, "update_frequency": 10}'},
        }
    )
    profile = {
        "apiVersion": "autotune.dwcp.io/v1alpha1",
        "kind": "ParameterProfile",
        "metadata": {"name": "pba", "namespace": NS},
        "spec": tiny_twin_spec("pba", "pba-config"),
    }
    emulator.create_object(profile)
    body = emulator.get_object("parameterprofiles", "pba", NS, group="autotune.dwcp.io")
    runtime.patch_status("parameterprofiles", NS, "pba", runtime.reconcile_profile(body))
    emulator.create_object(
        {
            "apiVersion": "autotune.dwcp.io/v1alpha1",
            "kind": "OptimizationRun",
            "metadata": {"name": "tune", "namespace": NS},
            "spec": {"profiles": ["pba"], "budget": {"maxProposals": 1}, "rollout": {"analysisIntervalSeconds": 3600}},
        }
    )

    def pretrained():
        run = emulator.get_object("optimizationruns", "tune", NS, group="autotune.dwcp.io")
        runtime.reconcile_run(run)
        status = (emulator.get_object("optimizationruns", "tune", NS, group="autotune.dwcp.io") or {}).get("status")
        return status if (status or {}).get("phase") not in (None, "Pending", "Pretraining") else None

    return wait_for(pretrained, timeout, "the pretraining to end", interval=0.5)


def test_a_profiles_twin_is_measured_by_a_job_and_becomes_the_learned_twins_prior(cluster):
    emulator, kubeconfig = cluster
    with Kubelet(emulator, kubeconfig) as kubelet:
        runtime = _runtime(kubeconfig, "dwcp-autotuner:test", resources={"requests": {"cpu": "2500m", "memory": "1Gi"}})
        status = _pretrain(emulator, runtime, 240)
        # Then, while the run goes on, the same twin under the workload's other conditions, one Job each.
        wait_for(lambda: len(kubelet.commands) >= 2, 120, "a Job measuring the twin under another condition")
    assert status["training"]["pba"]["failed"] is not True, status["training"]
    assert "prior: measured pba twin" in status["training"]["pba"]["message"]
    command, other = kubelet.commands[:2]
    assert command[:2] == ["worker", "twin"] and "--quick" in command and command[-2] == "--result"
    assert "--conditions-json" not in command
    assert json.loads(other[other.index("--conditions-json") + 1]) == twin_conditions("pba")[0]
    job = next(  # the twin's own Job (those of the other conditions were stopped with the kubelet)
        j
        for j in emulator.list_objects("jobs", JOBS_NS, group="batch")
        if "--conditions-json" not in j["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 600
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"] == "2500m"
    # A twin without timings is measured by as many processes as the Job has whole CPUs, not the node's cores.
    assert {"name": "DWCP_AUTOTUNER_TWIN_PROCESSES", "value": "2"} in container["env"]
    result = emulator.get_object("configmaps", job["metadata"]["name"], JOBS_NS)
    assert result["metadata"]["ownerReferences"][0]["kind"] == "Job"  # collected with the Job
    assert result["binaryData"]["result"]  # the twin came back through the ConfigMap


@pytest.mark.parametrize(
    ("image", "deadline", "reason"),
    [
        ("unpullable:1", 600, "ErrImagePull"),
        ("crashing:1", 600, "BackoffLimitExceeded"),
        ("slow:1", 2, "DeadlineExceeded"),
    ],
)
def test_a_failed_job_is_on_the_run_with_its_reason_and_the_run_goes_on_without_a_prior(
    cluster, image, deadline, reason
):
    emulator, kubeconfig = cluster
    with Kubelet(emulator, kubeconfig):
        runtime = _runtime(kubeconfig, image, deadline)
        status = _pretrain(emulator, runtime, 120)
    training = status["training"]["pba"]
    assert training["failed"] is True and reason in training["message"], training
    assert status["phase"] == "Proposing" and reason in status["message"]  # it goes on, learning from canaries
    events = [e for e in emulator.list_objects("events", NS) if e.get("reason") == "PretrainingFailed"]
    assert len(events) == 1 and reason in events[0]["message"]
