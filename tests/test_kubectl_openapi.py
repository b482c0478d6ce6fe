"""Real kubectl against the API emulator's OpenAPI documents (tests/kube/openapi.py), as against a cluster:
`kubectl explain` of our kinds, a typo rejected by kubectl's (server-side) field validation without
`--validate=false`, and `kubectl get optrun NAME` with the printer columns."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest

from tests.support.tools import REPO, find_tool

KUBECTL = find_tool("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is needed (scripts/setup-dev.sh)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.kube import running_emulator

    with running_emulator(crd_paths=[REPO / "crds"]) as (emulator, url, kubeconfig):
        cache = tmp_path_factory.mktemp("kubectl-cache")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        run = lambda *args, check=True, stdin=None: _kubectl(env, cache, *args, check=check, stdin=stdin)  # noqa: E731
        run("create", "namespace", "dwcp")
        yield run, url


def _kubectl(env, cache, *args, check=True, stdin=None):
    result = subprocess.run(
        [KUBECTL, "--cache-dir", str(cache), *args], env=env, capture_output=True, text=True, timeout=60, input=stdin
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_kubectl_explain_shows_the_fields_and_their_descriptions(cluster):
    kubectl, _ = cluster
    spec = kubectl("explain", "optimizationrun.spec").stdout
    assert "KIND:       OptimizationRun" in spec and "GROUP:      autotune.dwcp.io" in spec
    for field in ("profiles", "rollout", "budget", "paused", "mode"):
        assert f"\n  {field}\t<" in spec, spec
    assert "enum: Apply, Recommend" in spec
    leaf = kubectl("explain", "optrun.spec.rollout.requireApproval").stdout
    assert "FIELD: requireApproval <boolean>" in leaf and "confirm-promotion" in leaf
    profile = kubectl("explain", "parameterprofile.spec.parameters").stdout
    assert "<[]Object>" in profile and "scale" in profile
    missing = kubectl("explain", "optimizationrun.spec.stpe", check=False)
    assert missing.returncode != 0 and 'field "stpe" does not exist' in missing.stderr


RUN = """\
apiVersion: autotune.dwcp.io/v1alpha1
kind: OptimizationRun
metadata: {name: typo, namespace: dwcp}
spec:
  profiles: [hde]
  rollout: {%s: [5, 100]}
"""


def test_a_typo_is_rejected_without_validate_false_and_the_fixed_manifest_applies(cluster):
    kubectl, _ = cluster
    typo = kubectl("apply", "-f", "-", stdin=RUN % "stpe", check=False)
    assert typo.returncode != 0
    assert 'unknown field "spec.rollout.stpe"' in typo.stderr
    kubectl("apply", "-f", "-", stdin=RUN % "steps")
    shown = kubectl("get", "optrun", "typo", "-n", "dwcp").stdout.splitlines()
    assert shown[0].split() == [
        "NAME",
        "PHASE",
        "PROFILE",
        "STEP",
        "WEIGHT",
        "PROPOSALS",
        "IMPROVEMENT",
        "MESSAGE",
        "AGE",
    ]
    assert shown[1].split()[0] == "typo"
    wide = kubectl("get", "optrun", "typo", "-n", "dwcp", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-1] == "PROFILES" and wide[1].split()[-1] == "[hde]"


def test_the_examples_apply_with_kubectls_validation_on(cluster):
    kubectl, _ = cluster
    for path in ("examples/components/hde.yaml", "examples/hde-profile.yaml", "examples/run.yaml"):
        if (REPO / path).exists():
            kubectl("apply", "-n", "dwcp", "-f", str(REPO / path))


def test_openapi_v2_is_served_as_json_and_v3_per_group_version(cluster):
    _, url = cluster
    with urllib.request.urlopen(
        urllib.request.Request(f"{url}/openapi/v2", headers={"Accept": "application/json"})
    ) as r:
        v2 = json.loads(r.read())
    assert v2["swagger"] == "2.0" and "io.dwcp.autotune.v1alpha1.OptimizationRun" in v2["definitions"]
    with urllib.request.urlopen(f"{url}/openapi/v3") as r:
        paths = json.loads(r.read())["paths"]
    assert "apis/autotune.dwcp.io/v1alpha1" in paths and "api/v1" in paths
