"""Two operator processes at once with Kopf peering: exactly one works, nothing happens twice.

Real `dwcp-autotuner operator` processes (their own emulator, Prometheus and exporter), both started with
`--peering`: Kopf gives each a random priority (handlers/kopf_handlers.py) and pauses every operator that sees
a peer of higher priority. A run with a better canary must be promoted once: one Promoted Event, one
promotion counted across both processes' /metrics, the stable configuration written once.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.kube import running_emulator
from tests.support.prometheus import VariantExporter, prometheus_available, running_prometheus
from tests.test_operator_e2e import (
    KUBECTL,
    REPO,
    Cluster,
    Kubectl,
    Operator,
    condition,
    configmap,
    profile,
    run,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(KUBECTL is None, reason="no kubectl (run .ci/install-k8s-tools.sh)"),
    pytest.mark.skipif(not prometheus_available(), reason="no Prometheus binary (apt-get install prometheus)"),
]


def test_two_operators_with_peering_promote_once(tmp_path):
    exporter = VariantExporter(seed=5)
    # (0.5 % noise: the last step's four stable samples decide a 10 % difference, `metric_names` says why)
    exporter.set("peer_objective", variant="stable", mean=100.0, noise_cv=0.005)
    exporter.set("peer_objective", variant="canary", mean=110.0, noise_cv=0.005)
    try:
        with (
            running_prometheus([exporter.target], scrape_interval="1s") as prom,
            running_emulator(crd_paths=[REPO / "crds"]) as (emulator, _url, kubeconfig),
        ):
            prom.wait_for('peer_objective{variant="canary"}', timeout=30)
            emulator.create_object(
                {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "dwcp"}}
            )
            operators = [Operator(kubeconfig, prom.url, tmp_path / f"op{i}", ("--peering", "dwcp")) for i in range(2)]
            for operator in operators:
                operator.workdir.mkdir()
                operator.start()
            cluster = Cluster(
                emulator, kubeconfig, Kubectl(kubeconfig, tmp_path / "kubectl"), prom, exporter, operators[0]
            )
            try:
                emulator.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "peers"}})
                cluster.kubectl.apply(
                    "peers",
                    configmap("svc-config"),
                    profile("svc", "svc-config", "peer_objective"),
                    run("tune", ["svc"]),
                )
                done = cluster.kubectl.wait("peers", "optimizationrun/tune", "condition=Succeeded", timeout=120)
                logs = "\n".join(o.log_tail(80) for o in operators)
                assert done.returncode == 0, done.stderr + json.dumps(cluster.run_status("peers", "tune"))[:3000] + logs
                time.sleep(2)  # a few more ticks of both: nothing more may happen
                status = cluster.run_status("peers", "tune")
                assert [h["verdict"] for h in status["history"]] == ["Promoted"]
                assert condition(status, "Succeeded")["status"] == "True"
                assert cluster.event_count("peers", "tune", "Promoted") == 1
                counted = 0.0
                for operator in operators:
                    cluster.operator = operator
                    counted += (
                        cluster.operator_metric("dwcp_autotuner_promotions_total", namespace="peers", run="tune") or 0
                    )
                assert counted == 1, logs
                acting = [o for o in operators if "run peers/tune:" in o.log_path.read_text(errors="replace")]
                assert len(acting) == 1, logs  # exactly one made the transitions; the other stood by
            finally:
                for operator in operators:
                    operator.stop()
    finally:
        exporter.stop()
