"""Several operators, each owning a stable share of the runs (`--shard K/N`), against one API emulator.

Shard 0 is one operator; shard 1 is two operators with Kopf peering inside the shard. Four runs (two hash to each
shard) with better canaries must each be promoted exactly once, each run's transitions logged by its own shard
only; then the working operator of shard 1 is killed (SIGKILL) mid-rollout and its peer takes the shard over.
Real `dwcp-autotuner operator` processes, a real Prometheus, real kubectl (tests/test_operator_e2e.py's helpers).
"""

from __future__ import annotations

import time

import pytest

from dwcp_autotuner.handlers.runtime import shard_of
from tests.kube import running_emulator
from tests.support.prometheus import VariantExporter, prometheus_available, running_prometheus
from tests.support.tools import wait_for
from tests.test_operator_e2e import KUBECTL, REPO, Cluster, Kubectl, Operator, configmap, profile, run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(KUBECTL is None, reason="no kubectl (run .ci/install-k8s-tools.sh)"),
    pytest.mark.skipif(not prometheus_available(), reason="no Prometheus binary (apt-get install prometheus)"),
]
NS = "shards"


def _runs_per_shard() -> dict[int, list[str]]:
    names: dict[int, list[str]] = {0: [], 1: []}
    i = 0
    while min(len(v) for v in names.values()) < 2:
        name = f"tune-{i}"
        shard = shard_of(NS, name, 2)
        if len(names[shard]) < 2:
            names[shard].append(name)
        i += 1
    return names


def test_each_run_is_reconciled_by_its_shard_alone_and_a_dead_shard_member_is_taken_over(tmp_path):
    exporter = VariantExporter(seed=9)
    exporter.set("shard_objective", variant="stable", mean=100.0, noise_cv=0.01)
    exporter.set("shard_objective", variant="canary", mean=110.0, noise_cv=0.01)
    by_shard = _runs_per_shard()
    try:
        with (
            running_prometheus([exporter.target], scrape_interval="1s") as prom,
            running_emulator(crd_paths=[REPO / "crds"]) as (emulator, _url, kubeconfig),
        ):
            prom.wait_for('shard_objective{variant="canary"}', timeout=30)
            for shard in (0, 1):
                emulator.create_object(
                    {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": f"shard-{shard}"}}
                )
            emulator.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
            specs = [(0, "a"), (1, "b1"), (1, "b2")]
            operators = {
                label: Operator(
                    kubeconfig, prom.url, tmp_path / label, ("--shard", f"{shard}/2", "--peering", f"shard-{shard}")
                )
                for shard, label in specs
            }
            for operator in operators.values():
                operator.workdir.mkdir()
                operator.start()
            cluster = Cluster(
                emulator, kubeconfig, Kubectl(kubeconfig, tmp_path / "kubectl"), prom, exporter, operators["a"]
            )
            try:
                names = by_shard[0] + by_shard[1]
                for name in names:
                    cluster.kubectl.apply(
                        NS,
                        configmap(f"{name}-config"),
                        profile(name, f"{name}-config", "shard_objective"),
                        run(name, [name], rollout={"analysisIntervalSeconds": 4}),
                    )
                # Shard 1's working operator dies once its canaries are out; its peer must take the shard over.
                wait_for(
                    lambda: all(cluster.weight(NS, f"{n}-config") for n in by_shard[1]),
                    90,
                    "shard 1's canaries out",
                    on_timeout=lambda: "\n".join(o.log_tail(30) for o in operators.values()),
                )
                working = [
                    label
                    for label in ("b1", "b2")
                    if f"run {NS}/{by_shard[1][0]}:" in operators[label].log_path.read_text()
                ]
                assert len(working) == 1, [operators[label].log_tail(20) for label in ("b1", "b2")]
                dead = working[0]
                operators[dead].kill()
                killed_at = operators["b2" if dead == "b1" else "b1"].log_size()
                for name in names:
                    done = cluster.kubectl.wait(NS, f"optimizationrun/{name}", "condition=Succeeded", timeout=240)
                    assert done.returncode == 0, done.stderr + cluster.debug(NS, name)
                time.sleep(2)
                for name in names:
                    status = cluster.run_status(NS, name)
                    assert [h["verdict"] for h in status["history"]] == ["Promoted"], (name, status["history"])
                    assert cluster.event_count(NS, name, "Promoted") == 1
                logs = {label: o.log_path.read_text(errors="replace") for label, o in operators.items()}
                for name in by_shard[0]:  # shard 0's runs: only shard 0's operator
                    assert f"run {NS}/{name}:" in logs["a"] and all(
                        f"run {NS}/{name}:" not in logs[b] for b in ("b1", "b2")
                    )
                for name in by_shard[1]:  # shard 1's runs: never shard 0's, and finished by the survivor
                    assert f"run {NS}/{name}:" not in logs["a"]
                    survivor = "b2" if dead == "b1" else "b1"
                    assert f"run {NS}/{name}: Proposing -> Succeeded" in logs[survivor][killed_at:], name
            finally:
                for operator in operators.values():
                    operator.stop()
    finally:
        exporter.stop()
