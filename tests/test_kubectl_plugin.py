"""`kubectl autotune` (cli/kubectl_plugin.py): the tree view of a run, and the actions, through the real kubectl
against the API emulator (kubectl finds plugins on PATH as `kubectl-<name>`, exactly as on a real cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes
import pytest

from dwcp_autotuner.cli.kubectl_plugin import render_list, render_run
from dwcp_autotuner.models.run import ABORT_ANNOTATION, PROMOTE_ANNOTATION, RETRY_ANNOTATION
from tests.support.tools import REPO, find_tool
from tests.test_controller import CANDIDATE, Harness

KUBECTL = find_tool("kubectl")
PLUGIN_DIR = Path(sys.executable).parent  # the venv's bin holds the console script kubectl-autotune


def _promoted_then_rolled_back(tmp_path) -> dict:
    """A run object whose status the real controller wrote: proposal 1 promoted, proposal 2 rolled back."""
    h = Harness(tmp_path, proposals=(CANDIDATE, {"batch": 40, "timeout": 1000}))
    h.spec = h.spec.model_copy(update={"budget": h.spec.budget.model_copy(update={"max_proposals": 2})})
    for _ in range(40):
        h.tick()
        if h.status.history and h.status.history[-1].verdict == "Promoted":
            break
    h.means["canary"] = 80.0  # the second proposal is worse
    h.run_until({"Succeeded"})
    return {
        "metadata": {"name": "tune", "namespace": "dwcp"},
        "spec": h.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": h.status.model_dump(mode="json", by_alias=True),
    }


def test_the_tree_shows_profiles_proposals_steps_and_verdicts(tmp_path):
    text = render_run(_promoted_then_rolled_back(tmp_path))
    lines = text.splitlines()
    assert "Phase:        Succeeded" in text and "Proposals:    2/2" in text and "svc +" in text
    tree = lines[lines.index("OptimizationRun tune") :]
    assert tree[1].startswith("└── profile svc  (improvement +")
    promoted = next(i for i, line in enumerate(tree) if "#1 Promoted (CanaryBetter)" in line)
    rolled_back = next(i for i, line in enumerate(tree) if "#2 RolledBack (CanaryWorse)" in line)
    assert promoted < rolled_back
    steps_of_1 = tree[promoted + 1 : rolled_back]
    assert [line.split("step ")[1][:3] for line in steps_of_1] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("score canary" in line and "n=" in line for line in steps_of_1)
    assert tree[promoted].startswith("    ├── #1") and tree[-1].startswith("        └── step 1/4")
    assert "Successful" in steps_of_1[0] and "Failed (CanaryWorse)" in tree[-1]


def test_the_list_has_one_row_per_run(tmp_path):
    obj = _promoted_then_rolled_back(tmp_path)
    rows = render_list([obj, {"metadata": {"name": "fresh"}}]).splitlines()
    assert rows[0].split() == ["NAME", "PHASE", "PROFILE", "STEP", "PROPOSALS", "IMPROVEMENT"]
    assert rows[1].split()[:2] == ["tune", "Succeeded"] and rows[2].split()[:2] == ["fresh", "Pending"]


@pytest.fixture
def cluster():
    if KUBECTL is None:
        pytest.skip("kubectl is needed (scripts/setup-dev.sh installs it into .tools/bin)")
    if not (PLUGIN_DIR / "kubectl-autotune").exists():
        pytest.skip("the kubectl-autotune console script is not installed (pip install -e .)")
    from tests.kube import running_emulator

    with running_emulator(crd_paths=[REPO / "crds"]) as (emulator, _url, kubeconfig):
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{PLUGIN_DIR}:{os.environ.get('PATH', '')}"}
        api = kubernetes.client.ApiClient(kubernetes.config.new_client_from_config(str(kubeconfig)).configuration)
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": "dwcp"}})
        yield env, kubernetes.client.CustomObjectsApi(api)


def _kubectl(env, *args, check=True):
    result = subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_the_plugin_through_kubectl_shows_a_run_and_acts_on_it(cluster, tmp_path):
    env, custom = cluster
    obj = _promoted_then_rolled_back(tmp_path)
    body = {"apiVersion": "autotune.dwcp.io/v1alpha1", "kind": "OptimizationRun", **obj}
    custom.create_namespaced_custom_object("autotune.dwcp.io", "v1alpha1", "dwcp", "optimizationruns", body)
    custom.patch_namespaced_custom_object_status(
        "autotune.dwcp.io", "v1alpha1", "dwcp", "optimizationruns", "tune", {"status": obj["status"]}
    )
    shown = _kubectl(env, "autotune", "get", "tune", "-n", "dwcp").stdout
    assert "#1 Promoted (CanaryBetter)" in shown and "#2 RolledBack (CanaryWorse)" in shown
    assert shown == render_run(
        custom.get_namespaced_custom_object("autotune.dwcp.io", "v1alpha1", "dwcp", "optimizationruns", "tune")
    )
    listed = _kubectl(env, "autotune", "get", "-n", "dwcp").stdout
    assert listed.splitlines()[1].split()[:2] == ["tune", "Succeeded"]

    for action, annotation in (
        ("promote", PROMOTE_ANNOTATION),
        ("abort", ABORT_ANNOTATION),
        ("retry", RETRY_ANNOTATION),
    ):
        said = _kubectl(env, "autotune", action, "tune", "-n", "dwcp").stdout
        assert f"{action} requested" in said
        got = custom.get_namespaced_custom_object("autotune.dwcp.io", "v1alpha1", "dwcp", "optimizationruns", "tune")
        value = got["metadata"]["annotations"][annotation]
        assert value in said
    first = value
    _kubectl(env, "autotune", "retry", "tune", "-n", "dwcp")
    got = custom.get_namespaced_custom_object("autotune.dwcp.io", "v1alpha1", "dwcp", "optimizationruns", "tune")
    assert got["metadata"]["annotations"][RETRY_ANNOTATION] != first  # each request a new value: acted on once each

    _kubectl(env, "autotune", "pause", "tune", "-n", "dwcp")
    got = custom.get_namespaced_custom_object("autotune.dwcp.io", "v1alpha1", "dwcp", "optimizationruns", "tune")
    assert got["spec"]["paused"] is True
    _kubectl(env, "autotune", "resume", "tune", "-n", "dwcp")
    got = custom.get_namespaced_custom_object("autotune.dwcp.io", "v1alpha1", "dwcp", "optimizationruns", "tune")
    assert got["spec"]["paused"] is False and got["status"]["phase"] == "Succeeded"


def test_a_missing_run_is_one_line_and_exit_1(cluster):
    env, _ = cluster
    result = _kubectl(env, "autotune", "get", "nope", "-n", "dwcp", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "kubectl autotune get: error: optimizationrun dwcp/nope: not found"
    assert "Traceback" not in result.stderr + result.stdout
    json.dumps(result.stdout)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, namespace: dwcp}}]\ncurrent-context: c\n"
    )
    return path


@pytest.mark.parametrize("command", [["get"], ["get", "tune"], ["pause", "tune"]])
def test_an_api_server_that_cannot_be_reached_is_one_line_and_exit_1(tmp_path, capsys, command):
    from dwcp_autotuner.cli.kubectl_plugin import main

    kubeconfig = _kubeconfig(tmp_path / "config", f"http://127.0.0.1:{_closed_port()}")
    assert main([*command, "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"kubectl autotune {command[0]}: error: " in err and "cannot reach the API server" in err
    assert "Connection refused" in err and "dwcp" in err  # why, and the context's namespace


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "No configuration found"),
        ("clusters: [\n", "while parsing"),
        ("[1, 2]\n", "list indices"),
        ("apiVersion: v1\n", "Expected key current-context"),
    ],
)
def test_a_kubeconfig_that_cannot_be_used_is_named_in_one_line(tmp_path, capsys, monkeypatch, content, said):
    from dwcp_autotuner.cli.kubectl_plugin import main

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not inside a pod: no in-cluster fallback
    kubeconfig = tmp_path / "config"
    if content is not None:
        kubeconfig.write_text(content)
    assert main(["get", "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"no cluster to talk to: kubeconfig {kubeconfig}: " in err and said in err


def test_an_empty_namespace_is_refused_before_the_api_is_asked(capsys):
    from dwcp_autotuner.cli.kubectl_plugin import main

    assert main(["get", "-n", ""]) == 1
    assert capsys.readouterr().err.strip() == (
        "kubectl autotune get: error: -n/--namespace: empty (leave it out for the context's namespace)"
    )
