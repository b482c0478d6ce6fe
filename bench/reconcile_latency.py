#!/usr/bin/env python
"""Reconcile latency of the operator against the Kubernetes API emulator. (A script, not a test.)

What is timed: a ParameterProfile's spec is patched (a metric description changes, so the
generation goes up) and we wait until the operator's status patch reports that generation
(`status.observedGeneration`), as seen through a watch on the profile, like any client would. That
is the full loop: the emulator's watch event to Kopf, Kopf's batching and handler dispatch, the
profile validation (a ConfigMap GET and a PromQL check against Prometheus when one is available),
and the status patch back. Changes are made one at a time (the next patch waits for the previous
status), `--changes` times.

In the same run, for scale, the bare emulator round trips from the same client: a GET of the
profile and a PATCH of a ConfigMap (a write nobody reacts to). The ratio of the reconcile latency
to one PATCH says how much the operator adds on top of the API server.

    python bench/reconcile_latency.py                   # 200 changes
    python bench/reconcile_latency.py --changes 50 --json out/reconcile_latency.json
    python bench/reconcile_latency.py --no-prometheus   # profile checks without a Prometheus

The operator runs as `dwcp-autotuner operator` in a subprocess (as in production), watching one
namespace; its log goes to a temporary file, printed if it fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO))

import kubernetes  # noqa: E402
from kubernetes import watch  # noqa: E402

from dwcp_autotuner.cli.arguments import whole  # noqa: E402
from tests.kube import running_emulator  # noqa: E402
from tests.support.prometheus import VariantExporter, free_port, prometheus_available, running_prometheus  # noqa: E402

GROUP, VERSION, PLURAL = "autotune.dwcp.io", "v1alpha1", "parameterprofiles"
NAMESPACE = "bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": percentile(values, 0.50) * 1e3,
        "p99_ms": percentile(values, 0.99) * 1e3,
        "mean_ms": statistics.fmean(values) * 1e3 if values else float("nan"),
        "max_ms": max(values) * 1e3 if values else float("nan"),
    }


def profile_manifest(description: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ParameterProfile",
        "metadata": {"name": "svc", "namespace": NAMESPACE},
        "spec": {
            "target": {"name": "svc-config"},
            "parameters": [
                {"name": "batch", "type": "int", "min": 1, "max": 100, "default": 10, "scale": "log2"},
                {"name": "timeout", "type": "int", "min": 100, "max": 5000, "default": 1000, "scale": "log2"},
            ],
            "metrics": [
                {
                    "name": "objective",
                    "description": description,
                    "query": 'avg(bench_objective{variant="{{variant}}"})',
                }
            ],
            "objective": [{"metric": "objective", "goal": "maximize"}],
        },
    }


class StatusWatcher:
    """Watches the profile; records when each observedGeneration first appears."""

    def __init__(self, custom: kubernetes.client.CustomObjectsApi) -> None:
        self.custom = custom
        self.seen: dict[int, float] = {}
        self.cond = threading.Condition()
        self._stop = False
        self._watch = watch.Watch()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            try:
                for event in self._watch.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    NAMESPACE,
                    PLURAL,
                    field_selector="metadata.name=svc",
                    timeout_seconds=60,
                ):
                    now = time.perf_counter()
                    generation = (event["object"].get("status") or {}).get("observedGeneration")
                    if generation is not None:
                        with self.cond:
                            self.seen.setdefault(int(generation), now)
                            self.cond.notify_all()
                    if self._stop:
                        return
            except Exception:
                if self._stop:
                    return
                time.sleep(0.05)

    def wait(self, generation: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while generation not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no status for generation {generation} within {timeout}s")
                self.cond.wait(left)
            return self.seen[generation]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop = True
        self._watch.stop()


def start_operator(kubeconfig: Path, prometheus_url: str, workdir: Path) -> tuple[subprocess.Popen, Path]:
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    log_path = workdir / "operator.log"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), env.get("PYTHONPATH", "")])
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dwcp_autotuner.cli.main",
                "operator",
                "--kubeconfig",
                str(kubeconfig),
                "--namespace",
                NAMESPACE,
                "--metrics-port",
                str(free_port()),
                "--liveness",
                liveness,
                "--prometheus-url",
                prometheus_url,
                "--profile-recheck-seconds",
                "3600",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(liveness, timeout=1) as response:
                if response.status == 200:
                    return process, log_path
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the operator did not start:\n{log_path.read_text()[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=whole(1), default=200, help="spec changes to time (default 200)")
    parser.add_argument("--round-trips", type=whole(1), default=200, help="bare GETs and PATCHes to time (default 200)")
    parser.add_argument(
        "--no-prometheus",
        action="store_true",
        help="do not start Prometheus (profile checks then report MetricsUnavailable)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    use_prometheus = not args.no_prometheus and prometheus_available()
    with (
        tempfile.TemporaryDirectory(prefix="reconcile-latency-") as tmp,
        running_emulator(crd_paths=[REPO / "crds"]) as (emulator, _url, kubeconfig),
    ):
        workdir = Path(tmp)
        exporter = VariantExporter(seed=1)
        exporter.set("bench_objective", variant="stable", mean=1.0)
        prometheus_cm = running_prometheus([exporter.target]) if use_prometheus else None
        prometheus = prometheus_cm.__enter__() if prometheus_cm else None
        process = None
        try:
            prometheus_url = prometheus.url if prometheus else f"http://127.0.0.1:{free_port()}"
            emulator.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
            emulator.create_object(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "svc-config", "namespace": NAMESPACE},
                    "data": {"config.json": '{"batch": 10, "timeout": 1000}'},
                }
            )
            emulator.create_object(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "scratch", "namespace": NAMESPACE},
                    "data": {"n": "0"},
                }
            )
            emulator.create_object(profile_manifest("rev 0"))

            client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
            custom, core = kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client)
            watcher = StatusWatcher(custom)
            watcher.start()
            started = time.perf_counter()
            process, log_path = start_operator(kubeconfig, prometheus_url, workdir)
            watcher.wait(1, timeout=60)  # the first validation (generation 1)
            print(
                f"operator up and the profile validated in {time.perf_counter() - started:.1f}s "
                f"(Prometheus: {'yes' if prometheus else 'no'})",
                flush=True,
            )

            # Warm-up: a few changes whose latency is not counted (first-call costs in both processes).
            latencies: list[float] = []
            for i in range(args.changes + 5):
                body = {
                    "spec": {
                        "metrics": [
                            {
                                "name": "objective",
                                "description": f"rev {i + 1}",
                                "query": 'avg(bench_objective{variant="{{variant}}"})',
                            }
                        ]
                    }
                }
                t0 = time.perf_counter()
                result = custom.patch_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, "svc", body, _content_type="application/merge-patch+json"
                )
                seen = watcher.wait(int(result["metadata"]["generation"]), timeout=30)
                if i >= 5:
                    latencies.append(seen - t0)
            status = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "svc")["status"]
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")

            gets, patches = [], []
            for i in range(args.round_trips + 5):
                t0 = time.perf_counter()
                custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "svc")
                t1 = time.perf_counter()
                core.patch_namespaced_config_map("scratch", NAMESPACE, {"data": {"n": str(i)}})
                t2 = time.perf_counter()
                if i >= 5:
                    gets.append(t1 - t0)
                    patches.append(t2 - t1)
            watcher.stop()
        except BaseException:
            if process is not None:
                print((workdir / "operator.log").read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
            if prometheus_cm is not None:
                prometheus_cm.__exit__(None, None, None)
            exporter.stop()

    results = {
        "reconcile": summary(latencies),
        "get": summary(gets),
        "patch": summary(patches),
        "profile_ready": {"status": ready["status"], "reason": ready["reason"]},
        "prometheus": bool(use_prometheus),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    r, g, p = results["reconcile"], results["get"], results["patch"]
    results["ratio_p50_reconcile_to_patch"] = r["p50_ms"] / p["p50_ms"]
    results["ratio_p99_reconcile_to_patch"] = r["p99_ms"] / p["p99_ms"]
    print(f"\nprofile Ready={ready['status']} ({ready['reason']}) after the last change\n")
    print(f"{'what':<44} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'max ms':>9}")
    for label, s in (
        ("spec change -> operator status (reconcile)", r),
        ("bare GET (profile)", g),
        ("bare PATCH (ConfigMap)", p),
    ):
        print(
            f"{label:<44} {s['n']:>5} {s['p50_ms']:>9.2f} {s['p99_ms']:>9.2f} {s['mean_ms']:>9.2f} {s['max_ms']:>9.2f}"
        )
    print(
        f"\nreconcile / bare PATCH: {results['ratio_p50_reconcile_to_patch']:.1f}x at p50, "
        f"{results['ratio_p99_reconcile_to_patch']:.1f}x at p99"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
