#!/usr/bin/env python
"""How one operator process scales with the number of runs it reconciles. (A script, not a test.)

For each N: N ConfigMaps, N ParameterProfiles without twins and N OptimizationRuns with a tiny budget are created in
the Kubernetes API emulator (tests/kube); each run starts a canary whose analysis interval is an hour, so after a
few ticks every run is in its steady state (a canary out, waiting). Then, over a window of `--window` seconds:

- operator CPU per run tick: the process's user + system CPU time (/proc) over the window, divided by the run
  ticks it made (its own `dwcp_autotuner_reconcile_seconds_count{kind="run"}`);
- API requests per run tick: the requests the emulator served over the window (watches excluded), by resource;
- RSS of the operator process at the end;
- tick lateness p50 / p99: the operator's `dwcp_autotuner_tick_lateness_ratio` over the window (0.2: a 5 s tick
  came after 6 s);
- time to first status: from creating a run to its first status (p50 / p99 over the N runs, polled every 0.2 s).

`--pretraining` adds one run whose profile has a measured twin and a DQN pretraining of minutes, running through
the window: what heavy work does to the reconcile loop. A real `dwcp-autotuner operator` subprocess (as in
production), a real Prometheus (the profiles' queries are validated against it); the load average is printed.

    python bench/operator_scale.py --runs 50,200,500 --window 60
    python bench/operator_scale.py --runs 500 --pretraining --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO))

from tests.kube import running_emulator  # noqa: E402
from tests.support.prometheus import VariantExporter, free_port, running_prometheus  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))

from reconcile_latency import percentile  # noqa: E402  (one percentile for the benches)

from dwcp_autotuner.cli.arguments import positive, wholes  # noqa: E402

GROUP, VERSION = "autotune.dwcp.io", "v1alpha1"
TICKS_HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_HZ  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def scrape(url: str) -> dict[str, float]:
    """The operator's /metrics as {sample line's name{labels}: value} (only what this bench reads)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("dwcp_autotuner_reconcile_seconds_count", "dwcp_autotuner_tick_lateness_ratio_")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def lateness_quantile(before: dict, after: dict, q: float) -> float:
    """A quantile of the lateness histogram's increase over the window (linear within a bucket, as PromQL does)."""
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith("dwcp_autotuner_tick_lateness_ratio_bucket")
    )
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, previous = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - previous) / max(count - previous, 1e-12)
        lower, previous = bound, count
    return lower


def manifests(i: int) -> list[dict]:
    name = f"s{i:04d}"
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-config", "namespace": "scale"},
            "data": {"config.json": json.dumps({"batch": 10, "timeout": 1000})},
        },
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ParameterProfile",
            "metadata": {"name": name, "namespace": "scale"},
            "spec": {
                "target": {"name": f"{name}-config"},
                "parameters": [
                    {"name": "batch", "type": "int", "min": 1, "max": 100, "default": 10, "scale": "log2"},
                    {"name": "timeout", "type": "int", "min": 100, "max": 5000, "default": 1000, "scale": "log2"},
                ],
                "metrics": [{"name": "objective", "query": 'avg(scale_objective{variant="{{variant}}"})'}],
                "objective": [{"metric": "objective", "goal": "maximize"}],
            },
        },
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "OptimizationRun",
            "metadata": {"name": name, "namespace": "scale"},
            "spec": {
                "profiles": [name],
                "budget": {"maxProposals": 1},
                "agent": {"seed": i, "persistModel": False},
                "rollout": {"analysisIntervalSeconds": 3600, "minSamples": 5},
            },
        },
    ]


def pretraining_manifests() -> list[dict]:
    cm, profile, run = manifests(9999)
    profile["spec"] = {
        "twin": "pba",
        "target": {"name": cm["metadata"]["name"]},
        "parameters": [
            {"name": "prediction_window", "type": "int", "min": 10, "max": 300, "default": 30, "step": 20},
            {"name": "confidence_threshold", "type": "float", "min": 0.5, "max": 0.99, "default": 0.85, "step": 0.05},
            {"name": "update_frequency", "type": "int", "min": 1, "max": 60, "default": 10, "scale": "log2"},
        ],
        "metrics": [{"name": "accuracy", "query": 'avg(scale_objective{variant="{{variant}}"})'}],
        "objective": [{"metric": "accuracy", "goal": "maximize"}],
    }
    cm["data"]["config.json"] = json.dumps(
        {"prediction_window": 30, "confidence_threshold": 0.85, "update_frequency": 10}
    )
    run["spec"]["agent"] = {"strategy": "DQN", "episodes": 3000, "stepsPerEpisode": 100, "persistModel": False}
    return [cm, profile, run]


def measure(n: int, window: float, tick: float, pretraining: bool, workdir: Path, workers: int = 1) -> dict:
    exporter = VariantExporter(seed=1)
    exporter.set("scale_objective", variant="stable", mean=100.0, noise_cv=0.01)
    exporter.set("scale_objective", variant="canary", mean=100.0, noise_cv=0.01)
    with (
        running_prometheus([exporter.target], scrape_interval="1s") as prom,
        running_emulator(crd_paths=[REPO / "crds"]) as (emulator, _url, kubeconfig),
    ):
        prom.wait_for('scale_objective{variant="canary"}', timeout=30)
        emulator.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scale"}})
        metrics_port, liveness_port = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            "DWCP_AUTOTUNER_CACHE": str(workdir / "cache"),
        }
        log = open(workdir / f"operator-{n}.log", "wb")  # noqa: SIM115 - handed to the child
        operator = subprocess.Popen(
            [
                sys.executable, "-m", "dwcp_autotuner.cli.main", "operator", "--kubeconfig", str(kubeconfig),
                "--namespace", "scale", "--tick-seconds", str(tick), "--min-sample-seconds", "1",
                "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1",
                "--liveness", f"http://127.0.0.1:{liveness_port}/healthz", "--prometheus-url", prom.url,
                "--cache-dir", str(workdir / "cache"), "--workers", str(workers),
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=env,
        )  # fmt: skip
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        try:
            _wait(lambda: _up(f"http://127.0.0.1:{liveness_port}/healthz"), 90, "the operator")
            created: dict[str, float] = {}
            for i in range(n):
                for obj in manifests(i):
                    emulator.create_object(obj)
                created[f"s{i:04d}"] = time.monotonic()
            if pretraining:
                for obj in pretraining_manifests():
                    emulator.create_object(obj)
            first: dict[str, float] = {}
            steady: set[str] = set()
            deadline = time.monotonic() + max(120.0, n * 0.6)
            while len(steady) < n and time.monotonic() < deadline:
                for obj in emulator.list_objects("optimizationruns", "scale", group=GROUP):
                    name, status = obj["metadata"]["name"], obj.get("status") or {}
                    if name not in created:
                        continue
                    if status.get("phase") and name not in first:
                        first[name] = time.monotonic() - created[name]
                    if status.get("phase") == "RollingOut":
                        steady.add(name)
                time.sleep(0.2)
            time.sleep(2 * tick)  # the last runs' canaries settle
            requests_before, cpu_before, metrics_before = (
                Counter(emulator.requests),
                cpu_seconds(operator.pid),
                scrape(metrics_url),
            )
            time.sleep(window)
            requests_after, cpu_after, metrics_after = (
                Counter(emulator.requests),
                cpu_seconds(operator.pid),
                scrape(metrics_url),
            )
            rss = rss_mb(operator.pid)
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            log.close()
    exporter.stop()
    key = 'dwcp_autotuner_reconcile_seconds_count{kind="run"}'
    ticks = metrics_after.get(key, 0.0) - metrics_before.get(key, 0.0)
    requests = Counter(
        {f"{method} {resource}": requests_after[(method, resource, watch)] - requests_before[(method, resource, watch)]
         for (method, resource, watch) in requests_after if not watch}
    )  # fmt: skip
    requests = +requests
    return {
        "runs": n,
        "steady_runs": len(steady),
        "pretraining": pretraining,
        "run_ticks": ticks,
        "cpu_ms_per_run_tick": 1000.0 * (cpu_after - cpu_before) / max(ticks, 1),
        "requests_per_run_tick": sum(requests.values()) / max(ticks, 1),
        "requests_by_kind_per_run_tick": {k: round(v / max(ticks, 1), 3) for k, v in requests.most_common()},
        "rss_mb": rss,
        "tick_lateness_p50": lateness_quantile(metrics_before, metrics_after, 0.5),
        "tick_lateness_p99": lateness_quantile(metrics_before, metrics_after, 0.99),
        "first_status_p50_s": percentile(list(first.values()), 0.5),
        "first_status_p99_s": percentile(list(first.values()), 0.99),
    }


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=wholes(1), default="50,200,500,1000", help="comma-separated numbers of runs")
    parser.add_argument("--window", type=positive, default=60.0, help="seconds of steady state measured")
    parser.add_argument("--tick", type=positive, default=5.0, help="the operator's --tick-seconds")
    parser.add_argument("--pretraining", action="store_true", help="one DQN pretraining runs through the window")
    parser.add_argument(
        "--workers",
        type=wholes(0),
        default="1",
        help="the operator's --workers (comma-separated to compare, e.g. 0,1: threads vs a process)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    results = []
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores here; other work shares them)")
    print(
        f"{'runs':>6} {'cpu ms/tick':>12} {'req/tick':>9} {'RSS MB':>8} {'late p50':>9} {'late p99':>9} "
        f"{'1st status p50':>15} {'p99':>7}"
    )
    with tempfile.TemporaryDirectory(prefix="operator-scale-") as tmp:
        for n, workers in [(x, w) for x in args.runs for w in args.workers]:
            result = measure(n, args.window, args.tick, args.pretraining, Path(tmp), workers)
            result["workers"] = workers
            result["load_average"] = os.getloadavg()[0]
            results.append(result)
            print(
                f"{n:>6} {result['cpu_ms_per_run_tick']:>12.2f} {result['requests_per_run_tick']:>9.2f} "
                f"{result['rss_mb']:>8.0f} {result['tick_lateness_p50']:>9.1%} {result['tick_lateness_p99']:>9.1%} "
                f"{result['first_status_p50_s']:>14.1f}s {result['first_status_p99_s']:>6.1f}s"
                f"   ({result['steady_runs']}/{n} steady; workers {workers}; load {result['load_average']:.1f})",
                flush=True,
            )
            print("       requests per run tick:", json.dumps(result["requests_by_kind_per_run_tick"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
