"""The port adapters against real backends: a real Prometheus scraping a test exporter, the
Kubernetes API emulator (tests/kube), and files."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import statistics
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from prometheus_api_client.exceptions import PrometheusApiClientException

from dwcp_autotuner.canary.protocol import CANARY_KEY, CANARY_REVISION_KEY, CANARY_WEIGHT_KEY, ConfigRef
from dwcp_autotuner.ports import prometheus as prometheus_port
from dwcp_autotuner.ports.base import Conflict, NotFound, OwnerRef, Unavailable
from dwcp_autotuner.ports.kubernetes import KubernetesConfigStore, KubernetesEvents
from dwcp_autotuner.ports.local import FileConfigStore, InProcessMetrics
from dwcp_autotuner.ports.prometheus import PrometheusMetrics, QueryRejected, _parse_client_error
from tests.support.prometheus import PrometheusServer, VariantExporter, running_prometheus

pytestmark = pytest.mark.timeout(120)

OBJECTIVE = "dwcp_test_objective"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ================================================================================================
# Prometheus
# ================================================================================================


@pytest.fixture(scope="module")
def prom_env() -> Iterator[tuple[VariantExporter, PrometheusServer]]:
    exporter = VariantExporter(seed=7)
    exporter.set(OBJECTIVE, variant="stable", mean=100.0, noise_cv=0.02)
    exporter.set(OBJECTIVE, variant="canary", mean=110.0, noise_cv=0.02)
    try:
        with running_prometheus([exporter.target], scrape_interval="1s") as prom:
            prom.wait_for(f'{OBJECTIVE}{{variant="canary"}}', min_samples=5, timeout=30)
            yield exporter, prom
    finally:
        exporter.stop()


@pytest.fixture
def metrics(prom_env: tuple[VariantExporter, PrometheusServer]) -> PrometheusMetrics:
    return PrometheusMetrics(prom_env[1].url, timeout_seconds=2)


def test_samples_of_a_variant_are_near_its_mean(metrics: PrometheusMetrics) -> None:
    end = _now()
    start = end - dt.timedelta(seconds=30)
    canary = metrics.samples(f'{OBJECTIVE}{{variant="canary"}}', start, end, 1.0)
    stable = metrics.samples(f'{OBJECTIVE}{{variant="stable"}}', start, end, 1.0)
    assert len(canary) >= 4 and len(stable) >= 4
    assert all(start.timestamp() - 1 <= s.timestamp <= end.timestamp() + 1 for s in canary)
    assert [s.timestamp for s in canary] == sorted(s.timestamp for s in canary)
    canary_mean = statistics.fmean(s.value for s in canary)
    stable_mean = statistics.fmean(s.value for s in stable)
    assert canary_mean == pytest.approx(110.0, rel=0.04)
    assert stable_mean == pytest.approx(100.0, rel=0.04)
    assert canary_mean - stable_mean > 5
    # the noise is real: values are not all equal
    assert len({round(s.value, 6) for s in canary}) > 1


def test_several_series_are_summed_per_timestamp(metrics: PrometheusMetrics) -> None:
    end = _now()
    start = end - dt.timedelta(seconds=20)
    both = metrics.samples(OBJECTIVE, start, end, 1.0)
    assert both
    assert statistics.fmean(s.value for s in both) == pytest.approx(210.0, rel=0.04)


def test_no_data_and_nan_give_no_samples(metrics: PrometheusMetrics) -> None:
    end = _now()
    start = end - dt.timedelta(seconds=20)
    assert metrics.samples('dwcp_test_absent_metric{variant="canary"}', start, end, 1.0) == []
    # 0/0 is NaN at every step: dropped, not returned as a value
    nan = f'({OBJECTIVE}{{variant="canary"}} - {OBJECTIVE}{{variant="canary"}}) / 0'
    assert metrics.samples(nan, start, end, 1.0) == []


def test_validate_returns_prometheus_message(metrics: PrometheusMetrics) -> None:
    message = metrics.validate("sum(rate(x[5m])")
    assert message is not None and "parse error" in message
    assert "HTTP Status Code" not in message and "b'" not in message  # the client's wrapping is gone
    assert metrics.validate("up") is None
    assert metrics.validate(f'sum(rate({OBJECTIVE}{{variant="canary"}}[1m]))') is None
    # a range vector cannot be evaluated by samples() (a range query): rejected as such
    assert "range vector" in (metrics.validate("up[5m]") or "")


def test_rejected_query_in_samples_is_query_rejected(metrics: PrometheusMetrics) -> None:
    end = _now()
    with pytest.raises(QueryRejected) as info:
        metrics.samples("sum(rate(x[5m])", end - dt.timedelta(seconds=10), end, 1.0)
    assert isinstance(info.value, Unavailable)
    assert "parse error" in info.value.message


def test_parse_client_error_unwraps_the_body() -> None:
    body = json.dumps({"status": "error", "errorType": "bad_data", "error": "1:5: parse error: boom"}).encode()
    status, message = _parse_client_error(PrometheusApiClientException(f"HTTP Status Code 400 ({body!r})"))
    assert (status, message) == (400, "1:5: parse error: boom")
    status, message = _parse_client_error(PrometheusApiClientException("HTTP Status Code 502 (b'Bad Gateway')"))
    assert (status, message) == (502, "Bad Gateway")


class _Answer503(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"upstream overloaded")

    def log_message(self, *args: Any) -> None:
        pass


def test_http_5xx_is_unavailable_without_retry_delays() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer503)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        source = PrometheusMetrics(f"http://127.0.0.1:{server.server_port}", timeout_seconds=2)
        end = _now()
        t0 = time.monotonic()
        with pytest.raises(Unavailable) as info:
            source.samples("up", end - dt.timedelta(seconds=10), end, 1.0)
        assert not isinstance(info.value, QueryRejected)
        assert "503" in str(info.value)
        with pytest.raises(Unavailable):
            source.validate("up")
        assert time.monotonic() - t0 < 2.0  # the client's default Retry would back off for seconds
    finally:
        server.shutdown()
        server.server_close()


def test_hung_prometheus_times_out(prom_env: tuple[VariantExporter, PrometheusServer]) -> None:
    _, prom = prom_env
    source = PrometheusMetrics(prom.url, timeout_seconds=1)
    end = _now()
    prom.freeze()
    try:
        t0 = time.monotonic()
        with pytest.raises(Unavailable, match="did not answer"):
            source.samples("up", end - dt.timedelta(seconds=10), end, 1.0)
        assert time.monotonic() - t0 < 5
    finally:
        prom.thaw()
    assert source.samples("up", end - dt.timedelta(seconds=10), end, 1.0)


def test_validation_is_remembered_for_a_while_but_an_unreachable_prometheus_never(
    prom_env: tuple[VariantExporter, PrometheusServer], monkeypatch
) -> None:
    # A profile edit that leaves its queries alone re-validates them: one round trip per query per
    # `validation_seconds`, a verdict (accepted or rejected) answered from memory in between.
    _, prom = prom_env
    source, now = PrometheusMetrics(prom.url, timeout_seconds=2, validation_seconds=10), [1000.0]
    monkeypatch.setattr(prometheus_port, "time", types.SimpleNamespace(monotonic=lambda: now[0]))  # its clock only
    asked = []
    real_range = source._range
    monkeypatch.setattr(source, "_range", lambda query, *a: asked.append(query) or real_range(query, *a))
    for _ in range(3):
        assert source.validate("up") is None
        assert "parse error" in (source.validate("sum(up") or "")
        now[0] += 3
    assert asked == ["up", "sum(up"]
    now[0] += 2  # 11 s after the first check
    source.validate("up")
    assert asked == ["up", "sum(up", "up"]

    prom.stop()
    try:
        now[0] += 11
        for _ in range(2):
            with pytest.raises(Unavailable):  # not answered from memory, and the failure is not remembered
                source.validate("up")
    finally:
        prom.start()
    assert source.validate("up") is None and asked[-3:] == ["up", "up", "up"]


def test_stopped_prometheus_is_unavailable_then_recovers(prom_env: tuple[VariantExporter, PrometheusServer]) -> None:
    _, prom = prom_env
    source = PrometheusMetrics(prom.url, timeout_seconds=2)
    before = _now()
    prom.stop()
    try:
        t0 = time.monotonic()
        with pytest.raises(Unavailable, match="cannot connect") as info:
            source.samples(f'{OBJECTIVE}{{variant="canary"}}', before - dt.timedelta(seconds=10), before, 1.0)
        assert len(str(info.value)) < 200  # short, no urllib3 object reprs
        with pytest.raises(Unavailable):
            source.validate("up")
        assert time.monotonic() - t0 < 3
    finally:
        prom.start()
    # same port, same TSDB: the data scraped before the outage is still there
    assert source.samples(f'{OBJECTIVE}{{variant="canary"}}', before - dt.timedelta(seconds=10), before, 1.0)


# ================================================================================================
# FileConfigStore & InProcessMetrics
# ================================================================================================


def test_file_store_read_write_and_conflict(tmp_path: Path) -> None:
    store = FileConfigStore(tmp_path)
    ref = ConfigRef("team", "svc")
    with pytest.raises(NotFound):
        store.read(ref)
    store.put("team", "svc", {"config.json": '{"a": 1}'})
    first = store.read(ref)
    assert first.stable == '{"a": 1}' and first.canary is None

    second = store.write(
        ref,
        expected_resource_version=first.resource_version,
        set_keys={CANARY_KEY: '{"a": 2}', CANARY_WEIGHT_KEY: "10", CANARY_REVISION_KEY: "svc-r1"},
    )
    assert second.resource_version != first.resource_version
    assert second.canary == '{"a": 2}' and second.canary_weight == 10 and second.canary_revision == "svc-r1"
    assert store.read(ref) == second

    with pytest.raises(Conflict):  # stale resourceVersion
        store.write(ref, expected_resource_version=first.resource_version, set_keys={CANARY_WEIGHT_KEY: "50"})
    assert store.read(ref).canary_weight == 10  # unchanged

    third = store.write(
        ref,
        expected_resource_version=second.resource_version,
        remove_keys=(CANARY_KEY, CANARY_WEIGHT_KEY, CANARY_REVISION_KEY, "never-there"),
    )
    assert dict(third.data) == {"config.json": '{"a": 1}'}
    on_disk = json.loads((tmp_path / "team" / "svc.json").read_text())
    assert on_disk == {"resourceVersion": third.resource_version, "data": {"config.json": '{"a": 1}'}}
    assert not [p for p in (tmp_path / "team").iterdir() if p.suffix == ".tmp"]  # atomic replace, no leftovers

    with pytest.raises(NotFound):
        store.write(ConfigRef("team", "other"), expected_resource_version="1", set_keys={"k": "v"})


def test_file_store_revisions_are_immutable_and_idempotent(tmp_path: Path) -> None:
    store = FileConfigStore(tmp_path)
    owner = OwnerRef("autotune.dwcp.io/v1", "AutoTune", "svc", "uid-1")
    store.create_revision("team", "svc-r1", {"config.json": "{}"}, owner=owner, labels={"app": "svc"})
    store.create_revision("team", "svc-r1", {"config.json": "{}"}, owner=owner, labels={"app": "svc"})  # no-op
    assert store.read_revision("team", "svc-r1") == {"config.json": "{}"}
    with pytest.raises(Conflict):
        store.create_revision("team", "svc-r1", {"config.json": '{"x": 1}'}, owner=owner, labels={})
    rev = store.read(ConfigRef("team", "svc-r1"))
    with pytest.raises(Conflict):
        store.write(
            ConfigRef("team", "svc-r1"), expected_resource_version=rev.resource_version, set_keys={"config.json": "{}"}
        )
    with pytest.raises(NotFound):
        store.read_revision("team", "svc-r2")


def test_in_process_metrics() -> None:
    source = InProcessMetrics()
    source.register("q", lambda t: float("nan") if int(t) % 2 else 5.0)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    samples = source.samples("q", start, start + dt.timedelta(seconds=9), 1.0)
    assert [s.value for s in samples] == [5.0] * 5
    assert samples[0].timestamp == start.timestamp()
    assert source.samples("other", start, start + dt.timedelta(seconds=9), 1.0) == []
    assert source.validate("other") is None
    assert InProcessMetrics(strict=True).validate("other") is not None
    source.fail_with(Unavailable("down"))
    with pytest.raises(Unavailable):
        source.samples("q", start, start, 1.0)
    source.fail_with(None)
    assert source.calls == ["q", "other"]


# ================================================================================================
# Kubernetes (the emulator in tests/kube)
# ================================================================================================


@pytest.fixture(scope="module")
def kube() -> Iterator[tuple[Any, kubernetes.client.CoreV1Api]]:
    from tests.kube import running_emulator

    with running_emulator() as (emulator, _url, kubeconfig):
        api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        try:
            yield emulator, kubernetes.client.CoreV1Api(api_client)
        finally:
            api_client.close()
        assert emulator.internal_errors == []


def _make_target(emulator: Any, name: str, data: dict[str, str] | None = None) -> ConfigRef:
    emulator.create_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"},
            "data": data if data is not None else {"config.json": '{"threads": 4}'},
        }
    )
    return ConfigRef("default", name)


def test_kube_read_write_with_precondition(kube: tuple[Any, kubernetes.client.CoreV1Api]) -> None:
    emulator, api = kube
    store = KubernetesConfigStore(api)
    ref = _make_target(emulator, "target-rw")
    first = store.read(ref)
    assert first.stable == '{"threads": 4}' and first.canary is None

    n_requests = len(list(emulator))
    second = store.write(
        ref,
        expected_resource_version=first.resource_version,
        set_keys={CANARY_KEY: '{"threads": 8}', CANARY_WEIGHT_KEY: "10"},
        remove_keys=(CANARY_REVISION_KEY,),
    )  # absent: must not break the patch
    assert second.canary == '{"threads": 8}' and second.canary_weight == 10
    assert int(second.resource_version) > int(first.resource_version)
    patches = [r for r in list(emulator)[n_requests:] if str(r.method.value).upper() == "PATCH"]
    assert len(patches) == 1
    assert patches[0].headers.get("Content-Type") == "application/json-patch+json"
    ops = patches[0].data
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": first.resource_version}
    assert {op["op"] for op in ops[1:]} == {"add"}

    stored = emulator.get_object("configmaps", "target-rw", "default")
    assert stored["data"] == dict(second.data)

    with pytest.raises(Conflict):  # stale resourceVersion
        store.write(ref, expected_resource_version=first.resource_version, set_keys={CANARY_WEIGHT_KEY: "50"})

    third = store.write(
        ref,
        expected_resource_version=second.resource_version,
        set_keys={CANARY_WEIGHT_KEY: "50"},
        remove_keys=(CANARY_KEY, "not-there"),
    )
    assert dict(third.data) == {"config.json": '{"threads": 4}', CANARY_WEIGHT_KEY: "50"}

    with pytest.raises(NotFound):
        store.read(ConfigRef("default", "no-such-target"))
    with pytest.raises(NotFound):
        store.write(ConfigRef("default", "no-such-target"), expected_resource_version="1", set_keys={"a": "b"})


def test_kube_write_racing_another_writer_is_conflict(kube: tuple[Any, kubernetes.client.CoreV1Api]) -> None:
    """Someone writes between the adapter's read and its patch: the `test` op fails (422) → Conflict."""
    emulator, api = kube
    ref = _make_target(emulator, "target-race")

    class RacingApi:
        def __init__(self, inner: kubernetes.client.CoreV1Api) -> None:
            self.inner = inner
            self.reads = 0

        def read_namespaced_config_map(self, *args: Any, **kwargs: Any) -> Any:
            result = self.inner.read_namespaced_config_map(*args, **kwargs)
            self.reads += 1
            if self.reads == 2:  # the read inside write(): another writer sneaks in right after it
                emulator.apply_object(
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": "target-race", "namespace": "default"},
                        "data": {"config.json": '{"threads": 5}'},
                    }
                )
            return result

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    racing = RacingApi(api)
    store = KubernetesConfigStore(racing)  # type: ignore[arg-type]
    snap = store.read(ref)
    with pytest.raises(Conflict, match="changed since resourceVersion"):  # from the patch, not the pre-check
        store.write(ref, expected_resource_version=snap.resource_version, set_keys={CANARY_WEIGHT_KEY: "10"})
    stored = emulator.get_object("configmaps", "target-race", "default")
    assert stored["data"] == {"config.json": '{"threads": 5}'}  # the other writer's data, untouched


def test_kube_revisions(kube: tuple[Any, kubernetes.client.CoreV1Api]) -> None:
    emulator, api = kube
    store = KubernetesConfigStore(api)
    owner = OwnerRef("autotune.dwcp.io/v1", "AutoTune", "svc", "0b7c3f1e-uid")
    data = {"config.json": '{"threads": 8}'}
    store.create_revision("default", "svc-rev-1", data, owner=owner, labels={"autotune.dwcp.io/run": "svc"})
    store.create_revision("default", "svc-rev-1", data, owner=owner, labels={"autotune.dwcp.io/run": "svc"})
    assert store.read_revision("default", "svc-rev-1") == data

    stored = emulator.get_object("configmaps", "svc-rev-1", "default")
    assert stored["immutable"] is True
    assert stored["metadata"]["labels"] == {"autotune.dwcp.io/run": "svc"}
    (ref,) = stored["metadata"]["ownerReferences"]
    assert ref["uid"] == owner.uid and ref["kind"] == "AutoTune" and ref["apiVersion"] == owner.api_version
    assert not ref.get("controller") and ref.get("blockOwnerDeletion") is False

    with pytest.raises(Conflict):
        store.create_revision("default", "svc-rev-1", {"config.json": "{}"}, owner=owner, labels={})
    with pytest.raises(NotFound):
        store.read_revision("default", "svc-rev-404")


def test_kube_events(kube: tuple[Any, kubernetes.client.CoreV1Api]) -> None:
    emulator, api = kube
    involved = {
        "apiVersion": "autotune.dwcp.io/v1",
        "kind": "AutoTune",
        "name": "svc-events",
        "namespace": "default",
        "uid": "uid-events",
    }
    events = KubernetesEvents(api, involved)
    events.emit("Normal", "CanaryStarted", "canary at 10%")
    events.emit("Normal", "CanaryStarted", "canary at 10%")  # aggregated: count 2
    events.emit("Warning", "Rollback", "objective worse by 12%")
    mine = [e for e in emulator.list_objects("events", "default") if e["involvedObject"].get("name") == "svc-events"]
    assert len(mine) == 2
    assert len({e["metadata"]["name"] for e in mine}) == 2
    by_reason = {e["reason"]: e for e in mine}
    started, rollback = by_reason["CanaryStarted"], by_reason["Rollback"]
    assert started["count"] == 2 and started["type"] == "Normal" and started["message"] == "canary at 10%"
    assert rollback["count"] == 1 and rollback["type"] == "Warning"
    for event in mine:
        assert event["reportingComponent"] == "dwcp-autotuner"
        assert event["source"]["component"] == "dwcp-autotuner"
        assert event["involvedObject"]["uid"] == "uid-events"
        assert event["firstTimestamp"] and event["lastTimestamp"]


def test_kube_events_tell_which_keyed_actions_were_reported(kube: tuple[Any, kubernetes.client.CoreV1Api]) -> None:
    """A keyed action's Event is found again by key, also by another process (a new sink, as after a restart): the
    evidence a pending promotion's resume uses once a person has overwritten the promoted values."""
    emulator, api = kube
    involved = {"apiVersion": "autotune.dwcp.io/v1", "kind": "AutoTune", "name": "svc-keys", "uid": "uid-keys"}
    involved["namespace"] = "default"
    assert KubernetesEvents(api, involved).emit("Normal", "Promoted", "promoted 3", key="3/Promoted")
    restarted = KubernetesEvents(api, involved)
    assert restarted.reported("3/Promoted") and not restarted.reported("4/Promoted")
    assert not KubernetesEvents(api, {**involved, "uid": "uid-other"}).reported("3/Promoted")  # another run's
    mine = [e for e in emulator.list_objects("events", "default") if e["involvedObject"].get("name") == "svc-keys"]
    name = next(e["metadata"]["name"] for e in mine if e["reason"] == "Promoted")
    emulator[f"get /api/v1/namespaces/default/events/{name}"] << 503
    assert not restarted.reported("3/Promoted")  # the API failing is no evidence either way


def test_kube_unavailable() -> None:
    from tests.support.prometheus import free_port

    config = kubernetes.client.Configuration()
    config.host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config.retries = False
    with kubernetes.client.ApiClient(config) as api_client:
        api = kubernetes.client.CoreV1Api(api_client)
        store = KubernetesConfigStore(api, timeout_seconds=2)
        with pytest.raises(Unavailable):
            store.read(ConfigRef("default", "x"))
        with pytest.raises(Unavailable):
            store.create_revision("default", "r", {"a": "b"}, owner=None, labels={})
        KubernetesEvents(api, {"kind": "AutoTune", "name": "x", "namespace": "default"}).emit("Normal", "R", "m")


def test_kube_server_error_is_unavailable(kube: tuple[Any, kubernetes.client.CoreV1Api]) -> None:
    emulator, api = kube
    _make_target(emulator, "target-5xx")
    emulator["get /api/v1/namespaces/default/configmaps/target-5xx"] << 503
    store = KubernetesConfigStore(api)
    with pytest.raises(Unavailable) as info:
        store.read(ConfigRef("default", "target-5xx"))
    assert not isinstance(info.value, (NotFound, Conflict))
    assert "503" in str(info.value)
