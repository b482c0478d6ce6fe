"""The whole loop on one machine: the operator tunes the three reference components, live.

Kubernetes API emulator (tests/kube) + `dwcp-autotuner operator` (subprocess, 0.5 s tick) + the three
components (`dwcp-autotuner component hde|pba|acp`, subprocesses following their ConfigMaps through the
API) + a real Prometheus scraping the components every second + real kubectl applying the example
ConfigMaps (examples/components/) and profiles (examples/*-profile.yaml) and an OptimizationRun with a
small agent budget and 10 s analysis intervals.

What it checks:
* the run ends Succeeded with one promotion per component, each ConfigMap's stable configuration is the
  promoted one, and each component runs it (its own `dwcp_sdk_parameter_value` series);
* what Prometheus shows agrees: the profile's score (objective − soft-constraint penalties, computed here
  from the profile's own queries, independently of the operator's analysis code) over a window before the
  run and a window after the component's promotion is better for every component, and the improvement
  agrees with the one the run's status reports (per proposal and in total) within a tolerance derived from
  the samples' noise plus 10 % for drift;
* no process logged a traceback through the project's code; the generic example profile is Ready.

The operator's twins are measured once per test run into a temporary cache (DWCP_AUTOTUNER_CACHE).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import pathlib
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import yaml

from dwcp_autotuner.canary.protocol import CANARY_KEYS
from dwcp_autotuner.models.profile import ParameterProfileSpec
from dwcp_autotuner.ports.base import render_query
from tests.kube import running_emulator
from tests.support.prometheus import free_port, prometheus_available, running_prometheus
from tests.support.tools import find_tool, wait_for

REPO = pathlib.Path(__file__).resolve().parent.parent
GROUP = "autotune.dwcp.io"
NAMESPACE = "dwcp"
COMPONENTS = ("hde", "pba", "acp")
#: Units of work per second: enough for a few canary units per scrape at 5 %, light enough for 2 cores.
RATES = {"hde": 100, "pba": 40, "acp": 25}
ROLLOUT = {"steps": [5, 25, 50, 100], "analysisIntervalSeconds": 10, "minSamples": 3}
STEP_SECONDS = max(1.0, ROLLOUT["analysisIntervalSeconds"] / (2 * ROLLOUT["minSamples"]))  # as the operator queries
AGENT = {"episodes": 30, "stepsPerEpisode": 50, "seed": 7}
WINDOW_SECONDS = 15.0  # the before / after windows
DETUNED_PBA = {"confidence_threshold": 0.95, "prediction_window": 60, "update_frequency": 10}
#: Samples per variant in one analysis interval (the operator's range-query step is interval / (2 minSamples)).
ANALYSIS_SAMPLES = ROLLOUT["analysisIntervalSeconds"] / STEP_SECONDS
#: On the log scale, what may change between the run's measurement and the windows' (see the check): ±10 % for PBA
#: and ACP, whose scores come from simulated time; ±35 % for HDE, whose throughput is wall-clock time on a shared
#: 2-core machine: its stable score over 15 s after the same promotion was 3.0-4.1 in four runs of this test, and one
#: of them measured a log ratio of 0.305 against a tolerance of 0.271 with a drift of 0.10.
DRIFT = {"hde": 0.35, "pba": 0.10, "acp": 0.10}


KUBECTL = find_tool("kubectl")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(KUBECTL is None, reason="no kubectl (run .ci/install-k8s-tools.sh)"),
    pytest.mark.skipif(not prometheus_available(), reason="no Prometheus binary (apt-get install prometheus)"),
]


class Processes:
    """Child processes with their logs; all stopped at exit."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log(name), "wb") as log:
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", "dwcp_autotuner.cli.main", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env={**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, **(env or {})},
            )

    def log(self, name: str) -> pathlib.Path:
        return self.workdir / f"{name}.log"

    def tail(self, name: str, lines: int = 40) -> str:
        try:
            text = self.log(name).read_text(errors="replace").splitlines()
        except OSError:
            return f"(no {name} log)"
        return f"--- {name} log ---\n" + "\n".join(text[-lines:])

    def check_alive(self) -> None:
        for name, process in self.children.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}\n{self.tail(name)}"

    def stop(self) -> None:
        for process in self.children.values():
            if process.poll() is None:
                process.terminate()
        for process in self.children.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def kubectl(kubeconfig: pathlib.Path, cache: pathlib.Path, *args: str, input: str | None = None) -> str:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        got = dict(part.split("=", 1) for part in head[len(name) + 1 : -1].split(",")) if "{" in head else {}
        if all(got.get(k, "").strip('"') == v for k, v in labels.items()):
            return float(value)
    return None


# --- the score from Prometheus, independently of the operator's analysis code ----------------------------
def range_query(prometheus_url: str, query: str, start: float, end: float, step: float) -> dict[float, float]:
    params = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    result = json.loads(get(f"{prometheus_url}/api/v1/query_range?{params}"))["data"]["result"]
    out: dict[float, float] = {}
    for series in result:
        for ts, raw in series["values"]:
            value = float(raw)
            if math.isfinite(value):
                out[float(ts)] = out.get(float(ts), 0.0) + value
    return out


def scores(prometheus_url: str, profile: ParameterProfileSpec, variant: str, start: float, end: float) -> np.ndarray:
    """The profile's score at every step of [start, end]: its objective minus its soft-constraint penalties."""
    names = sorted({t.metric for t in profile.objective} | {c.metric for c in profile.constraints})
    queries = {m.name: m.query for m in profile.metrics}
    series = {
        n: range_query(prometheus_url, render_query(queries[n], variant, STEP_SECONDS), start, end, STEP_SECONDS)
        for n in names
    }
    common = sorted(set.intersection(*(set(s) for s in series.values())))
    return np.array([profile.score({n: series[n][ts] for n in names}) for ts in common])


# --- the test ----------------------------------------------------------------------------------------------
def test_the_operator_tunes_the_three_live_components_and_prometheus_agrees(tmp_path: pathlib.Path) -> None:
    started = time.monotonic()
    ports = {name: free_port() for name in COMPONENTS}
    processes = Processes(tmp_path)
    profiles = {name: yaml.safe_load((REPO / "examples" / f"{name}-profile.yaml").read_text()) for name in COMPONENTS}
    specs = {name: ParameterProfileSpec.model_validate(doc["spec"]) for name, doc in profiles.items()}
    configmaps = [
        doc
        for name in COMPONENTS
        for doc in yaml.safe_load_all((REPO / "examples" / "components" / f"{name}.yaml").read_text())
        if doc and doc["kind"] == "ConfigMap"
    ]
    start_configs = {
        cm["metadata"]["name"].removesuffix("-config"): json.loads(cm["data"]["config.json"]) for cm in configmaps
    }
    assert start_configs == {name: {p.name: p.default for p in specs[name].parameters} for name in COMPONENTS}
    # PBA's default is within a few per cent of its optimum, which three short canaries cannot confirm: this run
    # starts it from a detuned configuration (the 0.95 quantile over 60 s, ~15 % below), so every component has
    # an improvement to find and Prometheus has one to agree with.
    start_configs["pba"] = DETUNED_PBA
    for cm in configmaps:
        if cm["metadata"]["name"] == "pba-config":
            cm["data"]["config.json"] = json.dumps(DETUNED_PBA, sort_keys=True, separators=(",", ":"))

    with (
        running_prometheus([f"127.0.0.1:{port}" for port in ports.values()], scrape_interval="1s") as prom,
        running_emulator(crd_paths=[REPO / "crds"]) as (emulator, _url, kubeconfig),
    ):
        k = lambda *args, input=None: kubectl(kubeconfig, tmp_path / "kubectl-cache", *args, input=input)  # noqa: E731
        emulator.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        k("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(configmaps))
        k(
            "apply",
            "-n",
            NAMESPACE,
            *[arg for name in COMPONENTS for arg in ("-f", str(REPO / "examples" / f"{name}-profile.yaml"))],
        )
        # The generic example (any service's ConfigMap, any PromQL): the operator checks its queries with this
        # Prometheus and its target's values against its bounds (no service runs it here, no run uses it).
        web = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web-config"},
            "data": {"config.json": json.dumps({"worker_connections": 1024, "keepalive_timeout": 75})},
        }
        k("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(web))
        k("apply", "-n", NAMESPACE, "-f", str(REPO / "examples" / "generic" / "profile.yaml"))

        def debug() -> str:
            status = (emulator.get_object("optimizationruns", "tune", NAMESPACE, group=GROUP) or {}).get("status")
            return (
                "run status: "
                + json.dumps(status, indent=1)[:3000]
                + "\n"
                + "\n".join(processes.tail(n, 25) for n in ("operator", *COMPONENTS))
            )

        try:
            for name in COMPONENTS:
                processes.start(
                    name,
                    [
                        "component",
                        name,
                        "--kubeconfig",
                        str(kubeconfig),
                        "--namespace",
                        NAMESPACE,
                        "--configmap",
                        f"{name}-config",
                        "--metrics-port",
                        str(ports[name]),
                        "--metrics-address",
                        "127.0.0.1",
                        "--quick",
                        "--seed",
                        "1",
                        "--rate",
                        str(RATES[name]),
                    ],
                )
            cache = tmp_path / "cache"
            processes.start(
                "operator",
                [
                    "operator",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--namespace",
                    NAMESPACE,
                    "--tick-seconds",
                    "0.5",
                    # Prometheus scrapes every second here: the sample floor may be 1 s (60 s in production).
                    "--min-sample-seconds",
                    "1",
                    "--profile-recheck-seconds",
                    "5",
                    "--metrics-port",
                    "0",
                    "--liveness",
                    f"http://127.0.0.1:{free_port()}/healthz",
                    "--prometheus-url",
                    prom.url,
                    "--cache-dir",
                    str(cache),
                    # The twins under other live conditions (45 more, minutes of CPU) would be measured beside the
                    # live components on this 2-core machine, whose HDE throughput is timed: the family is tested
                    # in tests/test_learned.py and measured by bench/live_tuning.py instead.
                    "--no-twin-conditions",
                ],
                env={"DWCP_AUTOTUNER_CACHE": str(cache)},
            )

            # Every component measured by Prometheus, every profile validated (queries, bounds) by the operator.
            for name in COMPONENTS:
                prom.wait_for(
                    f'dwcp_sdk_units_total{{variant="stable",instance="127.0.0.1:{ports[name]}"}}',
                    min_samples=3,
                    timeout=60,
                )
            for name in (*COMPONENTS, "web"):

                def ready(n=name) -> bool:
                    status = (emulator.get_object("parameterprofiles", n, NAMESPACE, group=GROUP) or {}).get(
                        "status"
                    ) or {}
                    return any(
                        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
                    )

                wait_for(ready, 90, f"profile {name} Ready", on_timeout=debug)
            processes.check_alive()

            # Before: the start configuration, every unit stable.
            time.sleep(STEP_SECONDS * 2)
            before = (time.time(), time.time() + WINDOW_SECONDS)
            time.sleep(WINDOW_SECONDS + 1)

            run = {
                "apiVersion": f"{GROUP}/v1alpha1",
                "kind": "OptimizationRun",
                "metadata": {"name": "tune"},
                "spec": {
                    "profiles": list(COMPONENTS),
                    "mode": "Apply",
                    "agent": AGENT,
                    "budget": {"maxProposals": 3},
                    "rollout": ROLLOUT,
                },
            }
            k("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(run))
            applied = time.monotonic()

            def finished() -> dict | None:
                current = (emulator.get_object("optimizationruns", "tune", NAMESPACE, group=GROUP) or {}).get(
                    "status"
                ) or {}
                return current if current.get("phase") in ("Succeeded", "RolledBack", "Failed") else None

            status = wait_for(finished, 600, "the run to finish", interval=1.0, on_timeout=debug)
            run_seconds = time.monotonic() - applied
            assert status["phase"] == "Succeeded", debug()

            # After: each component's promoted configuration, every unit stable again, from just after its own
            # promotion (finishedAt has whole seconds; 3 s also let the rate windows leave the canary behind) —
            # while the next component rolls out, as the load was while its own rollout was measured.
            after = {}
            for record in status.get("history") or []:
                promoted_at = dt.datetime.fromisoformat(record["finishedAt"].replace("Z", "+00:00")).timestamp()
                after[record["profile"]] = (promoted_at + 3.0, promoted_at + 3.0 + WINDOW_SECONDS)
            wait_for(
                lambda: time.time() > max((end for _, end in after.values()), default=0) + 1.0,
                WINDOW_SECONDS + 30,
                "the after windows",
                interval=0.5,
            )
            processes.check_alive()
            own = {name: get(f"http://127.0.0.1:{ports[name]}/metrics") for name in COMPONENTS}
        finally:
            processes.stop()

        for name in (
            "operator",
            *COMPONENTS,
        ):  # a failed handler or unit is retried or skipped: it must not go unnoticed
            blocks = processes.log(name).read_text(errors="replace").split("Traceback (most recent call last):")[1:]
            assert not [b for b in blocks if "dwcp_autotuner" in b], processes.tail(name, 80)

        # --- the run's verdicts and the ConfigMaps ---------------------------------------------------------
        history = status["history"]
        assert [(h["profile"], h["verdict"]) for h in history] == [(name, "Promoted") for name in COMPONENTS], debug()
        promoted = {h["profile"]: h for h in history}
        for name in COMPONENTS:
            data = (emulator.get_object("configmaps", f"{name}-config", NAMESPACE) or {})["data"]
            assert not set(CANARY_KEYS) & set(data)
            assert json.loads(data["config.json"]) == promoted[name]["config"] != start_configs[name]
            for parameter, value in promoted[name]["config"].items():  # the component runs it
                assert metric(
                    own[name], "dwcp_sdk_parameter_value", variant="stable", parameter=parameter
                ) == pytest.approx(value)
            assert metric(own[name], "dwcp_sdk_config_refusals_total") is None  # nothing was ever refused
            assert (metric(own[name], "dwcp_component_unit_errors_total", variant="stable") or 0) == 0
            assert (metric(own[name], "dwcp_sdk_units_total", variant="canary") or 0) > 0

        # --- what Prometheus shows -------------------------------------------------------------------------
        # Both the status and this check estimate log(score_new / score_old), from different samples: the status
        # from the canary at 100 % vs the stable at 50 % (one analysis interval each, ~ANALYSIS_SAMPLES samples;
        # the stable at 50 % does half the units per sample, so twice the variance), this check from the window
        # before the run and the one after the component's promotion. The tolerance is 4 standard errors of the
        # difference of the two estimates, from the per-sample relative spread measured here, plus DRIFT for what
        # changes between the rollout and the windows (HDE's speed is wall-clock time on a shared 2-core machine,
        # and the CPU load of everything else is not the same minute to minute).
        rows = []
        for name in COMPONENTS:
            b = scores(prom.url, specs[name], "stable", *before)
            a = scores(prom.url, specs[name], "stable", *after[name])
            assert len(b) >= 5 and len(a) >= 5, (name, b, a)
            cv_b, cv_a = np.std(b, ddof=1) / abs(b.mean()), np.std(a, ddof=1) / abs(a.mean())
            se = math.sqrt(
                cv_b**2 * (1 / len(b) + 2 / ANALYSIS_SAMPLES) + cv_a**2 * (1 / len(a) + 1 / ANALYSIS_SAMPLES)
            )
            measured = math.log(a.mean() / b.mean())
            reported = math.log1p(promoted[name]["improvementPct"] / 100)
            rows.append(
                {
                    "name": name,
                    "before": b.mean(),
                    "after": a.mean(),
                    "cv": (cv_b, cv_a),
                    "se": se,
                    "measured": measured,
                    "reported": reported,
                    "tolerance": 4 * se + DRIFT[name],
                }
            )
            assert a.mean() > b.mean() * 1.05, (name, b, a)  # the component's own metrics: better than the start
        pct = lambda x: (math.exp(x) - 1) * 100  # noqa: E731
        report = "\n".join(
            f"{r['name']}: score {r['before']:.4g} -> {r['after']:.4g} (cv {r['cv'][0]:.1%} / {r['cv'][1]:.1%}): "
            f"Prometheus {pct(r['measured']):+.1f} %, status {pct(r['reported']):+.1f} %, "
            f"|log ratio| {abs(r['measured'] - r['reported']):.3f} <= {r['tolerance']:.3f} (4 x {r['se']:.3f} + {DRIFT[r['name']]})"
            for r in rows
        )
        total_measured, total_reported = sum(r["measured"] for r in rows), math.log1p(status["improvementPct"] / 100)
        total_tolerance = 4 * math.sqrt(sum(r["se"] ** 2 for r in rows)) + sum(DRIFT[r["name"]] for r in rows)
        report += (
            f"\ntotal: Prometheus {pct(total_measured):+.1f} %, status {pct(total_reported):+.1f} %, "
            f"|log ratio| {abs(total_measured - total_reported):.3f} <= {total_tolerance:.3f}; pretraining "
            + ", ".join(f"{n} {t.get('wallSeconds') or 0:.0f} s" for n, t in (status.get("training") or {}).items())
            + f"; run {run_seconds:.0f} s, test {time.monotonic() - started:.0f} s"
        )
        print(report)
        for r in rows:
            assert abs(r["measured"] - r["reported"]) <= r["tolerance"], report
        # The total is the product of the promotions' improvements, and agrees with Prometheus too.
        assert total_reported == pytest.approx(sum(r["reported"] for r in rows), abs=1e-5)
        assert abs(total_measured - total_reported) <= total_tolerance, report
