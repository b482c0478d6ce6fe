"""The component SDK: routing, validation, the file and Kubernetes followers, and a real component process."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dwcp_autotuner.canary.protocol import CANARY_KEY, CANARY_REVISION_KEY, CANARY_WEIGHT_KEY
from dwcp_autotuner.components import ServiceLoop, make_component
from dwcp_autotuner.models.builtin import BUILTIN_SPACES, HDE, PBA
from dwcp_autotuner.models.space import TuningSpace
from dwcp_autotuner.sdk import (
    ConfigFollower,
    DirectorySource,
    KubernetesSource,
    StaticSource,
    VariantHistogram,
    api_client,
    bucket,
    parse_config,
    route,
    space_from_profile,
)
from tests.support.prometheus import free_port
from tests.support.tools import wait_for

ROOT = Path(__file__).resolve().parents[1]
PBA_DEFAULT = PBA.default_config()
PBA_TUNED = {"prediction_window": 20, "confidence_threshold": 0.85, "update_frequency": 5}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    value = registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def follower(space: TuningSpace = PBA, source=None, **kwargs) -> ConfigFollower:
    return ConfigFollower(space, source, registry=CollectorRegistry(), name="test", **kwargs)


def data(
    stable: dict | str | None = None,
    canary: dict | str | None = None,
    weight: int | str | None = None,
    revision: str = "run-pba-1",
) -> dict[str, str]:
    out: dict[str, str] = {}
    if stable is not None:
        out["config.json"] = stable if isinstance(stable, str) else json.dumps(stable)
    if canary is not None:
        out[CANARY_KEY] = canary if isinstance(canary, str) else json.dumps(canary)
        out[CANARY_REVISION_KEY] = revision
    if weight is not None:
        out[CANARY_WEIGHT_KEY] = str(weight)
    return out


# --- routing ---------------------------------------------------------------------------------------
KEYS = [f"unit-{i}" for i in range(20_000)]


def test_bucket_follows_the_documented_rule_and_its_test_vectors():
    import hashlib

    assert (bucket("unit-0"), bucket("unit-1"), bucket("unit-0", "run-hde-1")) == (90, 40, 23)
    for key in KEYS[:200]:
        digest = hashlib.sha256(f"rev/{key}".encode()).digest()
        assert bucket(key, "rev") == int.from_bytes(digest[:8], "big") % 100


def test_routing_is_deterministic_and_matches_the_weight():
    for weight in (1, 5, 25, 50, 90):
        first = [route(k, weight, "rev-a") for k in KEYS]
        assert first == [route(k, weight, "rev-a") for k in KEYS]  # same answer every time
        share = first.count("canary") / len(KEYS)
        # Binomial: sd = sqrt(p(1-p)/n) <= 0.0036 at n = 20,000; 4 sd.
        assert share == pytest.approx(weight / 100, abs=0.015), (weight, share)


def test_weight_0_is_all_stable_and_100_all_canary():
    assert {route(k, 0, "r") for k in KEYS} == {"stable"}
    assert {route(k, 100, "r") for k in KEYS} == {"canary"}


def test_raising_the_weight_only_moves_units_from_stable_to_canary():
    previous: set[str] = set()
    for weight in range(0, 101):
        canary = {k for k in KEYS[:5000] if route(k, weight, "rev") == "canary"}
        assert previous <= canary  # nothing ever moves back to stable
        previous = canary
    assert len(previous) == 5000


def test_the_revision_gives_each_proposal_a_fresh_split():
    a = {k for k in KEYS if route(k, 50, "run-hde-1") == "canary"}
    b = {k for k in KEYS if route(k, 50, "run-hde-2") == "canary"}
    overlap = len(a & b) / len(a)
    assert overlap == pytest.approx(0.5, abs=0.03)  # independent splits share half


# --- validation ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, reason, words",
    [
        ("{not json", "parse", "not valid JSON"),
        ("[1, 2]", "parse", "not a JSON object"),
        ('{"prediction_window": 60, "turbo": 1}', "unknown_key", "unknown parameter(s) turbo"),
        ('{"prediction_window": 1000}', "out_of_bounds", "prediction_window: 1000 is outside [10, 300]"),
        ('{"confidence_threshold": 0.1}', "out_of_bounds", "is outside [0.5, 0.99]"),
        ('{"prediction_window": "soon"}', "invalid_value", "is not a number"),
        ('{"prediction_window": true}', "invalid_value", "is not a number"),
        ('{"prediction_window": 60.5}', "invalid_value", "not a whole number"),
    ],
)
def test_parse_config_refuses_with_a_reason(text, reason, words):
    from dwcp_autotuner.sdk import ConfigRefused

    with pytest.raises(ConfigRefused) as info:
        parse_config(PBA, text)
    assert info.value.reason == reason and words in info.value.message


def test_parse_config_fills_defaults_and_may_keep_untuned_keys():
    assert parse_config(PBA, '{"prediction_window": 20}') == {**PBA_DEFAULT, "prediction_window": 20}
    assert (
        parse_config(PBA, '{"prediction_window": 20, "log_level": "debug"}', allow_extra_keys=True)["log_level"]
        == "debug"
    )


def test_follower_switches_configurations_and_routes_by_the_weight():
    f = follower()
    assert f.snapshot().stable == PBA_DEFAULT and not f.ready  # the defaults until a config is read
    f.apply(data(PBA_DEFAULT))
    assert f.ready and f.snapshot().canary is None and f.route("x") == "stable"
    state = f.apply(data(PBA_DEFAULT, PBA_TUNED, 30))
    assert state.canary == PBA_TUNED and state.weight == 30 and state.revision == "run-pba-1"
    variants = [f.assign(k) for k in KEYS[:4000]]
    assert sum(v == "canary" for v, _ in variants) / 4000 == pytest.approx(0.30, abs=0.03)
    assert all(c == (PBA_TUNED if v == "canary" else PBA_DEFAULT) for v, c in variants)
    assert sample(f.metrics.registry, "dwcp_sdk_canary_weight") == 30
    assert sample(f.metrics.registry, "dwcp_sdk_parameter_value", variant="canary", parameter="prediction_window") == 20
    assert sample(f.metrics.registry, "dwcp_sdk_units_total", variant="canary") == sum(
        v == "canary" for v, _ in variants
    )
    # Promotion: the candidate becomes stable and the canary keys go.
    state = f.apply(data(PBA_TUNED))
    assert state.stable == PBA_TUNED and state.canary is None and state.weight == 0
    assert (
        sample(f.metrics.registry, "dwcp_sdk_parameter_value", variant="canary", parameter="prediction_window") is None
    )


def test_an_invalid_stable_config_is_refused_the_last_good_one_kept_counted_and_logged(caplog):
    f = follower()
    f.apply(data(PBA_TUNED))
    with caplog.at_level(logging.WARNING, logger="dwcp_autotuner.sdk"):
        for _ in range(3):  # re-reads of the same bad value count once
            state = f.apply(data('{"prediction_window": 20,'))
        state = f.apply(data({"prediction_window": 2000}))
        state = f.apply({"unrelated": "x"})
    assert state.stable == PBA_TUNED
    registry = f.metrics.registry
    assert sample(registry, "dwcp_sdk_config_refusals_total", key="config.json", reason="parse") == 1
    assert sample(registry, "dwcp_sdk_config_refusals_total", key="config.json", reason="out_of_bounds") == 1
    assert sample(registry, "dwcp_sdk_config_refusals_total", key="config.json", reason="missing") == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "refused config.json (parse): not valid JSON" in lines[0]
    assert (
        'keeping the last good configuration {"confidence_threshold":0.85,"prediction_window":20,"update_frequency":5}'
        in lines[0]
    )
    assert "prediction_window: 2000 is outside [10, 300]" in lines[1]
    # A good value again is applied.
    assert f.apply(data(PBA_DEFAULT)).stable == PBA_DEFAULT


def test_an_invalid_canary_or_weight_sends_everything_to_stable(caplog):
    f = follower()
    with caplog.at_level(logging.WARNING, logger="dwcp_autotuner.sdk"):
        state = f.apply(data(PBA_DEFAULT, {"prediction_window": 5}, 50))
        assert state.canary is None and state.weight == 0 and {f.route(k) for k in KEYS[:500]} == {"stable"}
        state = f.apply(data(PBA_DEFAULT, PBA_TUNED, "fifty"))
        assert state.canary == PBA_TUNED and state.weight == 0 and {f.route(k) for k in KEYS[:500]} == {"stable"}
        state = f.apply(data(PBA_DEFAULT, PBA_TUNED, 250))
        assert state.weight == 0
        state = f.apply(data(PBA_DEFAULT, PBA_TUNED, 25))
        assert state.weight == 25
        state = f.apply(data(PBA_DEFAULT, PBA_TUNED))  # no weight key: nothing to the canary
        assert state.weight == 0
    registry = f.metrics.registry
    assert sample(registry, "dwcp_sdk_config_refusals_total", key=CANARY_KEY, reason="out_of_bounds") == 1
    assert sample(registry, "dwcp_sdk_config_refusals_total", key=CANARY_WEIGHT_KEY, reason="invalid_value") == 1
    assert sample(registry, "dwcp_sdk_config_refusals_total", key=CANARY_WEIGHT_KEY, reason="out_of_bounds") == 1
    assert any("every unit runs with the stable configuration" in r.getMessage() for r in caplog.records)


def test_snapshots_are_consistent_under_concurrent_changes():
    f = follower()
    f.apply(data(PBA_DEFAULT))
    stop = threading.Event()

    def flip() -> None:
        i = 0
        while not stop.is_set():
            f.apply(data(PBA_DEFAULT, PBA_TUNED, i % 101))
            f.apply(data(PBA_DEFAULT))
            i += 1

    thread = threading.Thread(target=flip)
    thread.start()
    try:
        for k in KEYS[:20_000]:
            state = f.snapshot()
            variant, config = state.assign(k)
            assert config == (PBA_TUNED if variant == "canary" else PBA_DEFAULT)
            assert state.canary is not None or variant == "stable"
    finally:
        stop.set()
        thread.join()


def test_space_from_profile_reads_the_example_profiles():
    assert space_from_profile(ROOT / "examples" / "hde-profile.yaml").parameters == HDE.parameters
    generic = space_from_profile(ROOT / "examples" / "generic" / "profile.yaml")
    assert "worker_connections" in generic.parameter_names


# --- the file follower -------------------------------------------------------------------------------
def test_file_follower_picks_up_a_change_without_restart(tmp_path):
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(PBA_DEFAULT))
    with follower(source=DirectorySource(folder, poll_seconds=0.02)) as f:
        assert f.wait_ready(5) and f.snapshot().stable == PBA_DEFAULT
        (folder / CANARY_KEY).write_text(json.dumps(PBA_TUNED))
        (folder / CANARY_REVISION_KEY).write_text("run-pba-1")
        (folder / CANARY_WEIGHT_KEY).write_text("25")
        wait_for(lambda: f.snapshot().weight == 25, 5, "the canary at 25 %")
        (folder / CANARY_WEIGHT_KEY).write_text("50")
        wait_for(lambda: f.snapshot().weight == 50, 5, "the canary at 50 %")
        for key in (CANARY_KEY, CANARY_REVISION_KEY, CANARY_WEIGHT_KEY):
            (folder / key).unlink()
        (folder / "config.json").write_text(json.dumps(PBA_TUNED))
        wait_for(lambda: f.snapshot().stable == PBA_TUNED and f.snapshot().canary is None, 5, "the promotion")
        (folder / "config.json").write_text("{oops")
        wait_for(
            lambda: (
                sample(f.metrics.registry, "dwcp_sdk_config_refusals_total", key="config.json", reason="parse") == 1
            ),
            5,
            "the refusal",
        )
        assert f.snapshot().stable == PBA_TUNED


def test_file_follower_sees_a_mounted_configmap_swap_its_data_symlink(tmp_path):
    """The kubelet writes a new timestamped folder and atomically repoints `..data` (keys are links into it)."""
    mount = tmp_path / "mount"
    mount.mkdir()

    def publish(version: int, content: dict[str, str]) -> None:
        target = mount / f"..2026_{version:04d}"
        target.mkdir()
        for key, value in content.items():
            (target / key).write_text(value)
        tmp = mount / "..data_tmp"
        tmp.symlink_to(target.name)
        os.replace(tmp, mount / "..data")
        for key in content:
            link = mount / key
            if not link.is_symlink():
                link.symlink_to(f"..data/{key}")

    publish(1, {"config.json": json.dumps(PBA_DEFAULT)})
    with follower(source=DirectorySource(mount, poll_seconds=0.02)) as f:
        assert f.wait_ready(5)
        publish(
            2,
            {
                "config.json": json.dumps(PBA_DEFAULT),
                CANARY_KEY: json.dumps(PBA_TUNED),
                CANARY_WEIGHT_KEY: "5",
                CANARY_REVISION_KEY: "r1",
            },
        )
        wait_for(lambda: f.snapshot().weight == 5 and f.snapshot().canary == PBA_TUNED, 5, "the canary via ..data")


def test_a_single_json_file_is_the_stable_configuration(tmp_path):
    path = tmp_path / "pba.json"
    path.write_text(json.dumps(PBA_TUNED))
    with follower(source=DirectorySource(path, poll_seconds=0.02)) as f:
        assert f.wait_ready(5) and f.snapshot().stable == PBA_TUNED


# --- the Kubernetes follower ---------------------------------------------------------------------------
def test_kubernetes_follower_sees_patches_and_survives_reconnects():
    kubernetes = pytest.importorskip("kubernetes")
    from tests.kube import running_emulator

    with running_emulator() as (_emulator, _url, kubeconfig):
        core = kubernetes.client.CoreV1Api(api_client(str(kubeconfig)))
        core.create_namespaced_config_map("default", {"metadata": {"name": "pba-config"}, "data": data(PBA_DEFAULT)})
        # The API server ends every watch after 1 s: the follower must resume from the last resourceVersion.
        source = KubernetesSource("default", "pba-config", kubeconfig=str(kubeconfig), watch_timeout_seconds=1)
        with follower(source=source) as f:
            assert f.wait_ready(10) and f.snapshot().stable == PBA_DEFAULT

            def patch(values: dict[str, str | None]) -> None:
                core.patch_namespaced_config_map("pba-config", "default", {"data": values})

            patch(data(canary=PBA_TUNED, weight=5))
            wait_for(lambda: f.snapshot().weight == 5, 10, "the canary at 5 %")
            patch({CANARY_WEIGHT_KEY: "25"})
            wait_for(lambda: f.snapshot().weight == 25, 10, "the canary weight patched to 25 %")
            connections = source.reconnects
            time.sleep(1.5)  # past the watch's end: the next change arrives through a resumed watch
            patch({CANARY_WEIGHT_KEY: "50"})
            wait_for(lambda: f.snapshot().weight == 50, 10, "the weight after a reconnect")
            assert source.reconnects > connections
            patch({"config.json": '{"prediction_window": -1}'})
            wait_for(
                lambda: (
                    sample(
                        f.metrics.registry, "dwcp_sdk_config_refusals_total", key="config.json", reason="out_of_bounds"
                    )
                    == 1
                ),
                10,
                "the refusal",
            )
            assert f.snapshot().stable == PBA_DEFAULT and f.snapshot().weight == 50
            patch(
                {
                    "config.json": json.dumps(PBA_TUNED),
                    CANARY_KEY: None,
                    CANARY_WEIGHT_KEY: None,
                    CANARY_REVISION_KEY: None,
                }
            )
            wait_for(lambda: f.snapshot().stable == PBA_TUNED and f.snapshot().canary is None, 10, "the promotion")
            # Deleted and re-created: the last good configuration runs meanwhile, the new one is picked up.
            core.delete_namespaced_config_map("pba-config", "default")
            time.sleep(0.5)
            assert f.snapshot().stable == PBA_TUNED
            core.create_namespaced_config_map(
                "default", {"metadata": {"name": "pba-config"}, "data": data(PBA_DEFAULT)}
            )
            wait_for(lambda: f.snapshot().stable == PBA_DEFAULT, 15, "the re-created ConfigMap")


# --- metrics and the service loop --------------------------------------------------------------------
def test_variant_histogram_exposes_cumulative_le_buckets():
    registry = CollectorRegistry()
    histogram = VariantHistogram("t_seconds", "test", [0.1, 1.0, 10.0], registry)
    histogram.observe_many("stable", [0.05, 0.1, 0.5, 1.0, 10.0, 20.0])
    histogram.observe_many("canary", [])
    assert sample(registry, "t_seconds_bucket", variant="stable", le="0.1") == 2  # le is inclusive
    assert sample(registry, "t_seconds_bucket", variant="stable", le="1.0") == 4
    assert sample(registry, "t_seconds_bucket", variant="stable", le="10.0") == 5
    assert sample(registry, "t_seconds_bucket", variant="stable", le="+Inf") == 6
    assert sample(registry, "t_seconds_count", variant="stable") == 6
    assert sample(registry, "t_seconds_sum", variant="stable") == pytest.approx(31.65)
    assert sample(registry, "t_seconds_count", variant="canary") == 0
    assert b"# TYPE t_seconds histogram" in generate_latest(registry)


@pytest.mark.parametrize("name", ["hde", "pba", "acp"])
def test_components_route_each_unit_and_label_their_series(name):
    registry = CollectorRegistry()
    space = BUILTIN_SPACES[name]
    component = make_component(name, registry, quick=True)
    f = ConfigFollower(space, StaticSource({}), registry=registry, name=name)
    candidate = (
        {p.name: p.grid()[0] for p in space.parameters}
        if name != "hde"
        else {"compression_level": 1, "chunk_size": 32768, "window_size": 131072}
    )
    f.apply(data(space.default_config(), candidate, 40, revision=f"run-{name}-1"))
    loop = ServiceLoop(component, f, registry)
    loop.run(threading.Event(), duration=1.5)
    assert loop.done["stable"] > 0 and loop.done["canary"] > 0
    assert sum(loop.done.values()) == sample(registry, "dwcp_sdk_units_total", variant="stable") + sample(
        registry, "dwcp_sdk_units_total", variant="canary"
    )
    assert sample(registry, "dwcp_component_unit_errors_total", variant="stable") == 0
    text = generate_latest(registry).decode()
    series = {
        re.match(r"(\w+)\{", line).group(1)
        for line in text.splitlines()
        if line.startswith(f"dwcp_{name}_") and 'variant="canary"' in line
    }
    assert len(series) >= 5, series


# --- a real component process -------------------------------------------------------------------------
def metrics_of(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        got = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == name and all(got.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def test_a_component_fed_an_invalid_configuration_keeps_working_on_the_last_good_one(tmp_path):
    folder = tmp_path / "pba-config"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(PBA_TUNED))
    port = free_port()
    log_path = tmp_path / "pba.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dwcp_autotuner.cli.main",
                "component",
                "pba",
                "--config-dir",
                str(folder),
                "--metrics-port",
                str(port),
                "--metrics-address",
                "127.0.0.1",
                "--quick",
                "--rate",
                "50",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:

        def units() -> float:
            try:
                return metric(metrics_of(port), "dwcp_sdk_units_total", variant="stable") or 0.0
            except OSError:
                assert process.poll() is None, log_path.read_text()
                return 0.0

        wait_for(lambda: units() > 5, 60, "the component to do work", interval=0.2)
        (folder / "config.json").write_text('{"prediction_window": 20, "confidence_threshold": 1.5}')
        wait_for(lambda: "refused config.json" in log_path.read_text(), 10, "the refusal in the log", interval=0.1)
        before = units()
        time.sleep(1.0)
        text = metrics_of(port)
        assert process.poll() is None
        assert metric(text, "dwcp_sdk_config_refusals_total", key="config.json", reason="out_of_bounds") == 1
        assert metric(text, "dwcp_sdk_units_total", variant="stable") > before  # still working
        assert (
            metric(text, "dwcp_sdk_parameter_value", variant="stable", parameter="confidence_threshold") == 0.85
        )  # the last good one
        assert metric(text, "dwcp_pba_predictions_total", variant="stable") > 0
        line = next(line for line in log_path.read_text().splitlines() if "refused config.json" in line)
        assert (
            "WARNING" in line
            and "confidence_threshold: 1.5 is outside [0.5, 0.99]" in line
            and "keeping the last good configuration" in line
        )
        # Fixed: applied without a restart (a value unlike the last good one, so the switch is visible).
        (folder / "config.json").write_text(json.dumps({**PBA_DEFAULT, "confidence_threshold": 0.95}))
        wait_for(
            lambda: (
                metric(metrics_of(port), "dwcp_sdk_parameter_value", variant="stable", parameter="confidence_threshold")
                == 0.95
            ),
            10,
            "the fixed configuration",
            interval=0.1,
        )
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert process.returncode == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()


def test_component_without_a_configuration_source_is_a_one_line_usage_error(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "DWCP_CONFIG_DIR", "DWCP_CONFIGMAP")
    }
    result = subprocess.run(
        [sys.executable, "-m", "dwcp_autotuner.cli.main", "component", "acp"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "no configuration source" in result.stderr


# --- the example manifests of the components ----------------------------------------------------------
def test_component_manifests_hold_valid_configs_and_run_the_component():
    import yaml

    for name in ("hde", "pba", "acp"):
        docs = [d for d in yaml.safe_load_all((ROOT / "examples" / "components" / f"{name}.yaml").read_text()) if d]
        kinds = {d["kind"]: d for d in docs}
        assert set(kinds) == {"ConfigMap", "Deployment", "Service"}
        configmap, deployment = kinds["ConfigMap"], kinds["Deployment"]
        assert configmap["metadata"]["name"] == f"{name}-config"
        # The profile targets it and the configuration is the built-in default, valid for the SDK.
        profile = yaml.safe_load((ROOT / "examples" / f"{name}-profile.yaml").read_text())
        assert profile["spec"]["target"]["name"] == f"{name}-config"
        assert (
            parse_config(BUILTIN_SPACES[name], configmap["data"]["config.json"])
            == BUILTIN_SPACES[name].default_config()
        )
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"][:2] == ["component", name] and f"{name}-config" in container["args"]
    kubectl = next((str(p) for p in (ROOT / ".tools" / "bin" / "kubectl",) if p.exists()), None)
    if kubectl is None:
        pytest.skip("kubectl not found")
    result = subprocess.run(
        [
            kubectl,
            "annotate",
            "--local",
            "--dry-run=client",
            "-o",
            "name",
            "-f",
            str(ROOT / "examples" / "components"),
            "dwcp.io/parsed=true",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": "/dev/null"},
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 12  # 3 × (ConfigMap, Deployment, Service) + ServiceAccount, Role, RoleBinding


@pytest.mark.parametrize(
    "config",
    [
        HDE.default_config(),
        {"compression_level": 1, "chunk_size": 65536, "window_size": 1048576},
        {"compression_level": 5, "chunk_size": 1024, "window_size": 32768},
    ],
)
def test_hde_service_encodes_regions_like_the_workload(config):
    """The service compresses every changed chunk of a region exactly as the workload's `_compress_chunk`."""
    from dwcp_autotuner.workloads.hde import _compress_chunk, _varint_len, snapshots

    component = make_component("hde", CollectorRegistry(), quick=True)
    pair = snapshots(0, component.pages, component.dirty_fraction)
    chunk = config["chunk_size"]
    for region in (0, 7, component.regions - 1):
        out, _wall, _cpu, peak = component.encode(0, region, config)
        expected, expected_peak = (65536 // chunk) / 8.0, 0
        for index in range(region * 65536 // chunk, (region + 1) * 65536 // chunk):
            if pair.prev[index * chunk : (index + 1) * chunk] != pair.new[index * chunk : (index + 1) * chunk]:
                frame, _, _, memory = _compress_chunk(
                    pair.prev, pair.new, index, chunk, config["window_size"], config["compression_level"]
                )
                expected += len(frame) + _varint_len(len(frame))
                expected_peak = max(expected_peak, memory)
        assert out == expected and peak == expected_peak


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        (["--config-dir", "/cfg"], {"DWCP_CONFIGMAP": "x", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}, ("dir", "/cfg")),
        (["--configmap", "hde-live", "-n", "prod"], {}, ("api", "prod/hde-live")),
        (["--kubeconfig", "/kc"], {"POD_NAMESPACE": "dwcp"}, ("api", "dwcp/hde-config")),
        # What the Helm chart sets in a pod: watch through the API (faster than the kubelet's volume refresh).
        (
            [],
            {
                "DWCP_CONFIGMAP": "hde-config",
                "DWCP_CONFIG_DIR": "/etc/dwcp/config",
                "KUBERNETES_SERVICE_HOST": "10.0.0.1",
                "POD_NAMESPACE": "dwcp",
            },
            ("api", "dwcp/hde-config"),
        ),
        ([], {"DWCP_CONFIGMAP": "hde-config", "DWCP_CONFIG_DIR": "/etc/dwcp/config"}, ("dir", "/etc/dwcp/config")),
        ([], {"KUBECONFIG": "/kc"}, ("api", "default/hde-config")),
    ],
)
def test_component_picks_its_configuration_source(monkeypatch, argv, env, expected):
    from dwcp_autotuner.cli import component_cmd
    from dwcp_autotuner.cli.main import build_parser

    for name in ("DWCP_CONFIGMAP", "DWCP_CONFIG_DIR", "KUBERNETES_SERVICE_HOST", "KUBECONFIG", "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(component_cmd, "IN_CLUSTER_NAMESPACE", Path("/nonexistent"))
    args = build_parser().parse_args(["component", "hde", *argv])
    source = component_cmd.build_source(args, "config.json")
    if expected[0] == "dir":
        assert isinstance(source, DirectorySource) and str(source.path) == expected[1]
    else:
        assert isinstance(source, KubernetesSource) and f"{source.namespace}/{source.name}" == expected[1]


def test_unchanged_configurations_keep_their_identity_across_weight_changes():
    f = follower()
    f.apply(data(PBA_DEFAULT, PBA_TUNED, 5))
    first = f.snapshot()
    second = f.apply(data(PBA_DEFAULT, PBA_TUNED, 25))
    assert second.weight == 25 and second.stable is first.stable and second.canary is first.canary
