"""The Helm chart (charts/dwcp-autotuner), the image recipe, the docs and the README's quickstart.

Checked with the real tools: helm v4 and kubectl v1.35 from .tools/bin (scripts/setup-dev.sh installs them;
the tests that need one skip, naming it, when it is missing) and `kubernetes-validate` with the Kubernetes
1.35 schemas. What no machine without Docker can run (kind, docker build) is checked as far as it can be:
the Dockerfile's build context, the kind config, and every other quickstart command against the Kubernetes
API emulator in tests/kube (real helm install/upgrade, real kubectl apply/wait/get).
"""

from __future__ import annotations

import ast
import atexit
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import find_tool

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "dwcp-autotuner"
CRD_DIR = ROOT / "crds"
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PACKAGE = ROOT / "operator" / "dwcp_autotuner"
KUBERNETES_VERSION = "1.35"
RELEASE, NAMESPACE = "dwcp-autotuner", "dwcp"
HELM, KUBECTL = find_tool("helm"), find_tool("kubectl")
needs_helm = pytest.mark.skipif(
    HELM is None, reason="helm not found (neither .tools/bin/helm nor on PATH; scripts/setup-dev.sh installs it)"
)
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl not found (neither .tools/bin/kubectl nor on PATH; scripts/setup-dev.sh installs it)",
)


# --- strict YAML: a duplicated key (e.g. a label rendered twice) is an error, not "last one wins" ----------
class _StrictLoader(yaml.SafeLoader):
    pass


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    duplicated = sorted({str(k) for k in keys if keys.count(k) > 1})
    if duplicated:
        raise yaml.constructor.ConstructorError(None, None, f"duplicated key(s) {duplicated}", node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


# --- helm -----------------------------------------------------------------------------------------------
_HELM_HOME = tempfile.mkdtemp(prefix="dwcp-helm-home-")
atexit.register(shutil.rmtree, _HELM_HOME, True)


def _helm_env(kubeconfig: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "HELM_NAMESPACE", "HELM_KUBECONTEXT")}
    env.update(
        HOME=_HELM_HOME,
        HELM_CACHE_HOME=f"{_HELM_HOME}/cache",
        HELM_CONFIG_HOME=f"{_HELM_HOME}/config",
        HELM_DATA_HOME=f"{_HELM_HOME}/data",
    )  # nothing here reads or writes the user's helm/kube config
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def _run(argv: list[str], *, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env or _helm_env(), cwd=ROOT)
    if check and result.returncode != 0:
        pytest.fail(f"`{shlex.join(argv)}` failed ({result.returncode}):\n{result.stderr}{result.stdout[-2000:]}")
    return result


# --- the README's quickstart ----------------------------------------------------------------------------
def _quickstart_commands() -> list[list[str]]:
    """The commands of the README's "Quickstart on kind" code block, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Quickstart on kind\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, "README.md has no '## Quickstart on kind' section"
    block = re.search(r"```bash\n(.*?)```", match.group(1), re.S)
    assert block, "the quickstart section has no ```bash block"
    commands, pending = [], ""
    for line in block.group(1).splitlines():
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line and not line.startswith("#"):
            commands.append(shlex.split(line, comments=True))
    return commands


def _quickstart(prefix: list[str]) -> list[list[str]]:
    return [c for c in _quickstart_commands() if c[: len(prefix)] == prefix]


def _quickstart_helm_install() -> list[str]:
    installs = [c for c in _quickstart(["helm", "install"]) if "charts/dwcp-autotuner" in c]
    assert len(installs) == 1, f"expected one `helm install ... charts/dwcp-autotuner` in the quickstart: {installs}"
    return installs[0]


def _quickstart_values_args() -> list[str]:
    """The quickstart's `helm install` flags that affect the rendering (--set, -f, --namespace)."""
    cmd = _quickstart_helm_install()
    args, i = [], 4
    while i < len(cmd):
        flag = cmd[i]
        if flag in ("--set", "--set-string", "-f", "--values", "--namespace", "-n"):
            args += [flag, cmd[i + 1]]
            i += 2
        else:
            i += 1
    return args


VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "all": ["-f", str(CHART / "ci" / "all-values.yaml")],
    "namespaced": ["-f", str(CHART / "ci" / "namespaced-values.yaml")],
    "quickstart": _quickstart_values_args(),
}


@functools.cache
def _render(args: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    argv = [HELM, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds", *args]
    text = _run(argv).stdout
    return tuple(d for d in yaml.load_all(text, Loader=_StrictLoader) if d)


def render(name: str, *extra: str) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(d)) for d in _render(tuple(VALUE_SETS[name]) + extra)]  # deep copies


def of_kind(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]


def operator_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployments = [
        d
        for d in of_kind(docs, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    assert len(deployments) == 1, [d["metadata"]["name"] for d in of_kind(docs, "Deployment")]
    return deployments[0]


def operator_args(docs: list[dict[str, Any]]) -> list[str]:
    return operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]


def _flag(args: list[str], name: str) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]


ALL_SETS = pytest.mark.parametrize("values", list(VALUE_SETS))


# ===========================================================================================================
# helm lint, schema validation of everything rendered
# ===========================================================================================================
@needs_helm
@ALL_SETS
def test_helm_lint_strict(values):
    result = _run([HELM, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *VALUE_SETS[values]])
    assert "0 chart(s) failed" in result.stdout


# Kinds whose schemas kubernetes-validate cannot know (CRDs of other projects); checked by hand below.
NOT_IN_KUBERNETES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("kopf.dev/v1", "ClusterKopfPeering"),
    ("kopf.dev/v1", "KopfPeering"),
}


@needs_helm
@ALL_SETS
def test_rendered_documents_validate_strictly_against_kubernetes(values):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    problems = []
    docs = render(values)
    for doc in docs:
        where = f"{doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
        if (doc["apiVersion"], doc["kind"]) in NOT_IN_KUBERNETES:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(
                f"{where}: no Kubernetes {KUBERNETES_VERSION} schema ({error}); add it to NOT_IN_KUBERNETES "
                "only if it is another project's CRD"
            )
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {error.message} at {'/'.join(map(str, error.path))}")
    assert not problems, "\n".join(problems)
    # The hand checks of the kinds kubernetes-validate skips.
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            assert set(doc["spec"]) <= {"namespaceSelector", "selector", "endpoints", "jobLabel"}
            assert doc["spec"]["selector"]["matchLabels"] and doc["spec"]["endpoints"]
            for endpoint in doc["spec"]["endpoints"]:
                assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels"}
                assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint.get("interval", "30s"))
        if doc["kind"] in ("ClusterKopfPeering", "KopfPeering"):
            assert set(doc) == {"apiVersion", "kind", "metadata"}
            assert ("namespace" in doc["metadata"]) == (doc["kind"] == "KopfPeering")
    assert len(docs) == len({(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs}), (
        "two rendered objects share kind, namespace and name"
    )


SCHEMA_REJECTS = [
    (["--set", "replicaCount=0"], "/replicaCount"),
    (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
    (["--set", "watchNamespaces={a,a}"], "/watchNamespaces"),
    (["--set", "tickSeconds=0"], "/tickSeconds"),
    (["--set", "metrics.port=80"], "/metrics/port"),
    (["--set", "podSecurityContext.runAsUser=0"], "/podSecurityContext/runAsUser"),
    (["--set", "components.hde.enabled=yes"], "/components/hde/enabled"),
    (["--set", "prometheusUrl=prometheus:9090"], "/prometheusUrl"),
    (["--set", "resources.limits.memory=lots"], "/resources/limits/memory"),
    (["--set", "replicas=2"], "replicas"),  # a typo of replicaCount: unknown keys are errors
    (["--set", "peering.enabeld=true"], "enabeld"),
]


@needs_helm
@pytest.mark.parametrize("args, named", SCHEMA_REJECTS, ids=[a[1] for a, _ in SCHEMA_REJECTS])
def test_values_schema_rejects_bad_values_naming_them(args, named):
    result = _run([HELM, "template", RELEASE, str(CHART), *args], check=False)
    assert result.returncode != 0, f"{args} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert named in result.stderr, result.stderr


@needs_helm
def test_target_namespaces_without_watch_namespaces_is_refused():
    result = _run([HELM, "template", RELEASE, str(CHART), "--set", "targetNamespaces={shared}"], check=False)
    assert result.returncode != 0 and "targetNamespaces: only meaningful with watchNamespaces" in result.stderr


# ===========================================================================================================
# CRDs: one source
# ===========================================================================================================
def test_chart_crds_are_byte_identical_to_crds():
    ours = {p.name: p.read_bytes() for p in sorted(CRD_DIR.glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").iterdir())}
    fix = "regenerate both with `.venv/bin/python -m dwcp_autotuner.models.crd` (from the repository root)"
    assert sorted(chart) == sorted(ours), f"charts/dwcp-autotuner/crds/ has other files than crds/: {fix}"
    stale = [name for name in ours if chart[name] != ours[name]]
    assert not stale, f"charts/dwcp-autotuner/crds/ differs from crds/ in {stale}: {fix}"


def test_crd_generator_writes_the_chart_copy_by_default():
    from dwcp_autotuner.models import crd as crdgen

    assert Path("charts/dwcp-autotuner/crds") in crdgen.DEFAULT_OUTS and Path("crds") in crdgen.DEFAULT_OUTS
    assert (ROOT / "charts/dwcp-autotuner/crds").resolve() == (CHART / "crds").resolve()
    assert not crdgen.check(CHART / "crds"), "the chart's CRDs are stale: run `python -m dwcp_autotuner.models.crd`"


@needs_helm
def test_helm_installs_the_crds_and_kopf_peering_crds_only_when_asked():
    names = {d["metadata"]["name"] for d in of_kind(render("default"), "CustomResourceDefinition")}
    ours = {yaml.safe_load(p.read_text(encoding="utf-8"))["metadata"]["name"] for p in CRD_DIR.glob("*.yaml")}
    kopf = {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    assert names == ours | kopf
    names = {
        d["metadata"]["name"]
        for d in of_kind(render("default", "--set", "peering.installCRDs=false"), "CustomResourceDefinition")
    }
    assert names == ours


def test_kopf_peering_crds_are_kopfs():
    """The kopf-peering subchart ships Kopf's own peering CRDs (as in Kopf's docs/peering.yaml)."""
    from tests.kube import KOPF_PEERING_CRDS

    path = CHART / "charts" / "kopf-peering" / "crds" / "kopf-peering.yaml"
    ours = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert ours == KOPF_PEERING_CRDS


def test_crds_have_printer_columns_short_names_and_categories():
    for path in CRD_DIR.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        names = crd["spec"]["names"]
        assert names.get("shortNames") and names.get("categories") == ["autotune"], path.name
        version = crd["spec"]["versions"][0]
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert "Age" in columns and len(columns) >= 4, (path.name, columns)
        assert version["subresources"] == {"status": {}}


# ===========================================================================================================
# RBAC: least privilege
# ===========================================================================================================
# (apiGroup, resource) -> the verbs the operator may have on it, and why (see templates/rbac.yaml).
OPERATOR_MAY = {
    ("autotune.dwcp.io", "parameterprofiles"): {"get", "list", "watch", "patch"},
    ("autotune.dwcp.io", "optimizationruns"): {"get", "list", "watch", "patch"},
    ("autotune.dwcp.io", "parameterprofiles/status"): {"get", "patch"},
    ("autotune.dwcp.io", "optimizationruns/status"): {"get", "patch"},
    ("", "configmaps"): {"get", "patch", "create"},
    ("", "events"): {"get", "create", "patch"},  # get: a pending promotion's Event, by its name
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
COMPONENTS_MAY = {("", "configmaps"): {"get", "list", "watch"}}
POWERFUL_ROLES = {"cluster-admin", "admin", "edit", "system:masters"}


def _rules(docs):
    for role in of_kind(docs, "Role", "ClusterRole"):
        for rule in role.get("rules") or []:
            yield role, rule


@needs_helm
@ALL_SETS
def test_rbac_has_no_wildcards_no_secrets_no_admin_and_only_what_the_operator_needs(values):
    docs = render(values)
    assert of_kind(docs, "Role", "ClusterRole"), "no RBAC rendered"
    for role, rule in _rules(docs):
        where = f"{role['kind']} {role['metadata']['name']}"
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert not any("*" in item for item in rule.get(key, [])), f"{where}: '*' in {key}: {rule}"
        assert "nonResourceURLs" not in rule, f"{where}: {rule}"
        assert not {"secrets", "secrets/status"} & set(rule["resources"]), f"{where} touches Secrets: {rule}"
        assert not {"escalate", "bind", "impersonate", "delete", "deletecollection"} & set(rule["verbs"]), (
            f"{where}: {rule}"
        )
        allowed = COMPONENTS_MAY if role["metadata"]["name"].endswith("-components") else OPERATOR_MAY
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) in allowed, f"{where}: {group or 'core'}/{resource} is not needed"
                extra = set(rule["verbs"]) - allowed[(group, resource)]
                assert not extra, f"{where}: verbs {sorted(extra)} on {group or 'core'}/{resource} are not needed"
        if role["metadata"]["name"].endswith("-components"):
            assert rule.get("resourceNames"), f"{where}: the components may read their own ConfigMaps only"
    for binding in of_kind(docs, "RoleBinding", "ClusterRoleBinding"):
        assert binding["roleRef"]["name"] not in POWERFUL_ROLES, binding
        assert binding["roleRef"]["name"].startswith(RELEASE), binding
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE, subject
    assert "cluster-admin" not in yaml.safe_dump_all(docs)


def _grants(docs, kind: str) -> dict[tuple[str | None, str, str], set[str]]:
    """(namespace, group, resource) -> verbs granted by the Roles/ClusterRoles of `kind`."""
    out: dict[tuple[str | None, str, str], set[str]] = {}
    for role, rule in _rules(docs):
        if role["kind"] == kind and not role["metadata"]["name"].endswith("-components"):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((role["metadata"].get("namespace"), group, resource), set()).update(rule["verbs"])
    return out


@needs_helm
@needs_helm
def test_where_a_target_may_be_follows_what_rbac_grants_and_metrics_bind_as_asked():
    # Cluster-wide: a profile targets its own namespace only, unless the chart allows more.
    assert _flag(operator_args(render("default")), "--allowed-target-namespace") == [""]
    assert _flag(
        operator_args(render("default", "--set", "allowCrossNamespaceTargets=true")), "--allowed-target-namespace"
    ) == ["*"]
    # Namespaced: exactly the namespaces that have a Role.
    docs = render("default", "--set", "watchNamespaces={a,b}", "--set", "targetNamespaces={c,a}")
    assert _flag(operator_args(docs), "--allowed-target-namespace") == ["", "a", "b", "c"]
    assert {r["metadata"]["namespace"] for r in of_kind(docs, "Role")} == {"a", "b", "c"}
    assert _flag(operator_args(render("default")), "--metrics-address") == ["0.0.0.0"]
    assert _flag(operator_args(render("default", "--set", "metrics.address=127.0.0.1")), "--metrics-address") == [
        "127.0.0.1"
    ]


@needs_helm
def test_the_optional_network_policy_allows_dns_the_api_server_and_prometheus_only():
    assert not of_kind(render("default"), "NetworkPolicy")
    [policy] = of_kind(render("default", "--set", "networkPolicy.enabled=true"), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    ports = [sorted(p["port"] for p in rule["ports"]) for rule in spec["egress"]]
    assert ports == [[53, 53], [443, 6443], [9090]]
    assert spec["egress"][2]["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert [p["port"] for p in spec["ingress"][0]["ports"]] == [8081]


def test_rbac_scope_follows_watch_namespaces():
    # Every namespace: one ClusterRole with the workload rules; no Roles.
    docs = render("default")
    cluster = _grants(docs, "ClusterRole")
    assert cluster[(None, "", "configmaps")] == {"get", "patch", "create"}
    assert cluster[(None, "autotune.dwcp.io", "optimizationruns/status")] == {"get", "patch"}
    assert cluster[(None, "", "events")] == {"get", "create", "patch"}
    assert not _grants(docs, "Role")
    assert not _flag(operator_args(docs), "--namespace")
    assert not any(r == "namespaces" for _, _, r in cluster), "Kopf does not list namespaces when cluster-wide"

    # A list: a Role + RoleBinding per namespace, --namespace flags, and nothing cluster-wide but the
    # (here disabled) read-only CRD observer.
    docs = render("namespaced")
    assert _flag(operator_args(docs), "--namespace") == ["team-a", "team-b"]
    assert not of_kind(docs, "ClusterRole", "ClusterRoleBinding")
    roles = _grants(docs, "Role")
    for ns in ("team-a", "team-b"):
        assert roles[(ns, "", "configmaps")] == {"get", "patch", "create"}
        assert roles[(ns, "autotune.dwcp.io", "parameterprofiles")] == {"get", "list", "watch", "patch"}
        assert roles[(ns, "kopf.dev", "kopfpeerings")] == {"get", "list", "watch", "patch"}  # replicaCount: 2
        assert any(b["metadata"]["namespace"] == ns for b in of_kind(docs, "RoleBinding"))
    # targetNamespaces: ConfigMaps only.
    assert {(g, r) for (ns, g, r) in roles if ns == "shared-config"} == {("", "configmaps")}
    # With the CRD observer on, its ClusterRole is read-only on CRDs and nothing else.
    docs = render("namespaced", "--set", "rbac.observeCRDs=true")
    assert _grants(docs, "ClusterRole") == {
        (None, "apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}
    }


@needs_helm
def test_rbac_can_be_left_to_a_cluster_admin():
    docs = render("default", "--set", "rbac.create=false")
    assert not of_kind(docs, "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")


# ===========================================================================================================
# The Deployment
# ===========================================================================================================
def _pods(docs):
    for deployment in of_kind(docs, "Deployment"):
        yield deployment["metadata"]["name"], deployment["spec"]["template"]["spec"]


@needs_helm
@ALL_SETS
def test_every_pod_is_locked_down(values):
    pods = list(_pods(render(values)))
    assert pods
    for name, pod in pods:
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0 and security["runAsGroup"] != 0, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        assert all("hostPath" not in v for v in pod.get("volumes", [])), name
        for container in pod["containers"] + pod.get("initContainers", []):
            c = container["securityContext"]
            assert c["readOnlyRootFilesystem"] is True, name
            assert c["allowPrivilegeEscalation"] is False and c.get("privileged") is False, name
            assert c["capabilities"] == {"drop": ["ALL"]}, name
            assert c["runAsNonRoot"] is True and c["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert container["resources"]["requests"] and container["resources"]["limits"], name
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: a read-only root filesystem needs a writable /tmp"
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


@needs_helm
@ALL_SETS
def test_operator_container_flags_probes_and_cache(values):
    docs = render(values)
    deployment = operator_deployment(docs)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[0] == "operator"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    # Probes all hit Kopf's liveness endpoint, on the port the flag opens.
    (liveness,) = _flag(args, "--liveness")
    match = re.fullmatch(r"http://0\.0\.0\.0:(\d+)(/\S*)", liveness)
    assert match, liveness
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == match.group(2), probe
        assert ports[get["port"]] == int(match.group(1)), probe
    # /metrics on the flag's port.
    assert ports["metrics"] == int(_flag(args, "--metrics-port")[0])

    # The twin cache: --cache-dir is a mounted writable volume (emptyDir, or the claim asked for).
    (cache,) = _flag(args, "--cache-dir")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = {v["name"]: v for v in pod["volumes"]}[mounts[cache]]
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume
    # Kopf's peering identity is the pod name.
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pod["serviceAccountName"] and pod["automountServiceAccountToken"] is True


@needs_helm
@ALL_SETS
def test_operator_args_parse_with_the_real_command_line(values):
    """The chart's flags are the CLI's flags (a renamed flag fails here, not in a crash-looping pod)."""
    from dwcp_autotuner.cli.main import build_parser

    docs = render(values)
    parsed = build_parser().parse_args(operator_args(docs))
    assert parsed.command == "operator"
    assert parsed.cache_dir is not None and parsed.liveness and parsed.metrics_port > 0
    assert parsed.prometheus_url.startswith("http")
    # Reference components: `dwcp-autotuner component <name>`, once that command exists.
    subcommands = build_parser()._subparsers._group_actions[0].choices
    for deployment in of_kind(docs, "Deployment"):
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if args[0] == "component" and "component" in subcommands:
            build_parser().parse_args(args)


@needs_helm
def test_twin_conditions_are_measured_unless_the_values_turn_them_off():
    from dwcp_autotuner.cli.main import build_parser

    on = build_parser().parse_args(operator_args(render("default")))
    off = build_parser().parse_args(operator_args(render("default", "--set", "workers.twinConditions=false")))
    assert on.twin_conditions is True and off.twin_conditions is False


@needs_helm
def test_replicas_above_one_run_with_kopf_peering():
    docs = render("default")
    assert not _flag(operator_args(docs), "--peering")
    assert operator_deployment(docs)["spec"]["strategy"] == {"type": "Recreate"}  # never two standalone operators
    assert not of_kind(docs, "ClusterKopfPeering", "KopfPeering", "PodDisruptionBudget")

    docs = render("default", "--set", "replicaCount=2")
    (name,) = _flag(operator_args(docs), "--peering")
    (peering,) = of_kind(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == name
    assert _grants(docs, "ClusterRole")[(None, "kopf.dev", "clusterkopfpeerings")] == {"get", "list", "watch", "patch"}
    assert operator_deployment(docs)["spec"]["strategy"]["type"] == "RollingUpdate"
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1

    docs = render("namespaced")
    (name,) = _flag(operator_args(docs), "--peering")
    peerings = of_kind(docs, "KopfPeering")
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings} == {
        ("team-a", name),
        ("team-b", name),
    }
    assert not of_kind(docs, "ClusterKopfPeering")

    docs = render("all")
    assert _flag(operator_args(docs), "--peering") == ["dwcp-autotuner-ha"]


# ===========================================================================================================
# Metrics: Service, ServiceMonitor, Grafana dashboard
# ===========================================================================================================
def _exported_metrics() -> set[str]:
    """The series names the operator exports, read from handlers/runtime.py (prometheus_client conventions)."""
    source = (PACKAGE / "handlers" / "runtime.py").read_text(encoding="utf-8")
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("Counter", "Gauge", "Histogram"):
            name = node.args[0].value
            kind = node.func.id
            if kind == "Counter":
                names.add(name.removesuffix("_total") + "_total")
            elif kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
    return names


def test_the_operator_exports_the_metrics_the_chart_documents():
    assert _exported_metrics() >= {
        "dwcp_autotuner_proposals_total",
        "dwcp_autotuner_promotions_total",
        "dwcp_autotuner_rollbacks_total",
        "dwcp_autotuner_canary_weight_percent",
        "dwcp_autotuner_improvement_percent",
        "dwcp_autotuner_reconcile_seconds_bucket",
    }


@needs_helm
def test_metrics_service_and_service_monitor_select_the_operator():
    docs = render("all")
    deployment = operator_deployment(docs)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (service,) = [s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitors = {m["metadata"]["name"]: m for m in of_kind(docs, "ServiceMonitor")}
    monitor = monitors[RELEASE]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # from ci/all-values.yaml
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True  # keep the run's `namespace` label
    # The components' ServiceMonitor selects each component's Service and nothing of the operator.
    components = monitors[f"{RELEASE}-components"]["spec"]["selector"]["matchLabels"]
    component_services = [s for s in of_kind(docs, "Service") if s is not service]
    assert len(component_services) == 3
    assert all(components.items() <= s["metadata"]["labels"].items() for s in component_services)
    assert not components.items() <= service["metadata"]["labels"].items()
    assert not of_kind(render("default"), "ServiceMonitor")  # off by default


REQUIRED_PANELS = {
    "canaries started": ["dwcp_autotuner_proposals_total"],
    "canary weight": ["dwcp_autotuner_canary_weight_percent"],
    "promotions and rollbacks": ["dwcp_autotuner_promotions_total", "dwcp_autotuner_rollbacks_total"],
    "improvement": ["dwcp_autotuner_improvement_percent"],
    "reconcile latency p50 / p99": ["dwcp_autotuner_reconcile_seconds_bucket"],
    "canary vs stable score": ["dwcp_autotuner_analysis_score"],
}


@needs_helm
def test_grafana_dashboard_parses_and_queries_only_exported_metrics():
    docs = render("default")
    (configmap,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = configmap["data"].values()
    dashboard = json.loads(text)
    assert dashboard == json.loads((CHART / "dashboards" / "dwcp-autotuner.json").read_text(encoding="utf-8"))
    exported = _exported_metrics()
    panels = {p["title"].lower(): p for p in dashboard["panels"] if p["type"] == "timeseries"}
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            metrics = set(re.findall(r"\b(dwcp_autotuner_[a-z_]+)\b", target["expr"]))
            assert metrics, f"{panel['title']}: {target['expr']}"
            unknown = metrics - exported
            assert not unknown, (
                f"panel {panel['title']!r} queries {sorted(unknown)}; the operator exports {sorted(exported)}"
            )
            used |= metrics
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    for title, metrics in REQUIRED_PANELS.items():
        assert title in panels, f"no timeseries panel {title!r}: {sorted(panels)}"
        exprs = " ".join(t["expr"] for t in panels[title]["targets"])
        assert all(m in exprs for m in metrics), (title, exprs)
    latency = " ".join(t["expr"] for t in panels["reconcile latency p50 / p99"]["targets"])
    assert "histogram_quantile(0.5," in latency and "histogram_quantile(0.99," in latency
    assert {m.removesuffix("_bucket") for m in used} >= {
        m for m in exported if not m.endswith(("_sum", "_count", "_bucket"))
    }
    assert not [
        c
        for c in of_kind(render("default", "--set", "dashboard.enabled=false"), "ConfigMap")
        if c["metadata"]["name"].endswith("-dashboard")
    ]
    # Promotions and rollbacks are annotations too, per profile.
    annotations = {a["name"]: a["expr"] for a in dashboard["annotations"]["list"]}
    assert "dwcp_autotuner_promotions_total" in annotations["Promotions"]
    assert "dwcp_autotuner_rollbacks_total" in annotations["Rollbacks"]
    # The file is what scripts/gen_dashboard.py writes (the panels are defined there once).
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_dashboard.py"), "--check"], capture_output=True)
    assert check.returncode == 0, check.stderr


# ===========================================================================================================
# Reference components
# ===========================================================================================================
def _example_documents() -> list[dict[str, Any]]:
    """Every object `kubectl apply -f examples/` creates (the top folder only, as the README runs it)."""
    return [
        doc
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if doc
    ]


def _example_profiles(*, dwcp_only: bool = False) -> dict[str, dict[str, Any]]:
    """The example ParameterProfiles; `dwcp_only`: those of the three reference components (with a twin)."""
    return {
        doc["metadata"]["name"]: doc
        for doc in _example_documents()
        if doc["kind"] == "ParameterProfile" and (not dwcp_only or doc["spec"].get("twin"))
    }


@needs_helm
def test_reference_components_serve_the_example_profiles():
    from dwcp_autotuner.models.builtin import BUILTIN_SPACES

    assert len(of_kind(render("default"), "Deployment")) == 1, "the components are off by default"
    docs = render("quickstart")
    configmaps = {c["metadata"]["name"]: c for c in of_kind(docs, "ConfigMap")}
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for name, profile in _example_profiles(dwcp_only=True).items():
        target = profile["spec"]["target"]
        configmap = configmaps[target["name"]]
        stable = json.loads(configmap["data"][target.get("key", "config.json")])
        defaults = {p.name: p.default for p in BUILTIN_SPACES[name].parameters}
        assert stable == defaults, f"{target['name']}: the chart's initial config is not {name}'s defaults"
        assert set(stable) == {p["name"] for p in profile["spec"]["parameters"]}
        pod = deployments[f"{RELEASE}-{name}"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["args"][:2] == ["component", name]
        assert {"name": "config", "configMap": {"name": target["name"]}} in pod["volumes"]
    (role,) = [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("-components")]
    assert sorted(role["rules"][0]["resourceNames"]) == ["acp-config", "hde-config", "pba-config"]


# ===========================================================================================================
# Docs
# ===========================================================================================================
CONDITION_KWARGS = {
    "progressing": "Progressing",
    "succeeded": "Succeeded",
    "rolled_back": "RolledBack",
    "degraded": "Degraded",
}


def _constants(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _constants(node.body) | _constants(node.orelse)
    if isinstance(node, ast.BoolOp):
        return set().union(*(_constants(v) for v in node.values))
    return set()


def condition_reasons_and_types(paths: list[Path]) -> tuple[set[str], set[str]]:
    """Every literal condition reason and type in the given modules.

    A reason is a string passed as the `reason` parameter of any function defined there (`set_condition`,
    `_degraded`, `_rollback`, `fail`, `ready`, ...) or as the second element of a condition tuple
    (`progressing=("True", "Started", ...)`), directly, through an `x if c else y`/`a or b`, or through a local
    variable assigned from a constant or from a function whose returns are constants (`_budget_left`).
    """
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in paths]
    functions = [n for t in trees for n in ast.walk(t) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    reason_index, returns = {}, {}
    for fn in functions:
        names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        if "reason" in names:
            reason_index[fn.name] = names.index("reason")
        returns[fn.name] = set().union(
            set(), *(_constants(r.value) for r in ast.walk(fn) if isinstance(r, ast.Return) and r.value is not None)
        )
    reasons, types = set(), set()
    for fn in functions:
        assigned: dict[str, set[str]] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                found = _constants(node.value)
                if isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name):
                    found |= returns.get(node.value.func.id, set())
                assigned.setdefault(node.targets[0].id, set()).update(found)

        def resolve(expr: ast.AST) -> set[str]:
            return _constants(expr) | (assigned.get(expr.id, set()) if isinstance(expr, ast.Name) else set())

        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in reason_index and len(node.args) > reason_index[name]:
                reasons |= resolve(node.args[reason_index[name]])
            if name == "set_condition" and len(node.args) > 1:
                types |= _constants(node.args[1])
            for keyword in node.keywords:
                if keyword.arg in ("reason", "pending_reason"):
                    reasons |= resolve(keyword.value)
                if (
                    keyword.arg in CONDITION_KWARGS
                    and isinstance(keyword.value, ast.Tuple)
                    and len(keyword.value.elts) > 1
                ):
                    types.add(CONDITION_KWARGS[keyword.arg])
                    reasons |= resolve(keyword.value.elts[1])
    return reasons, types


def _statistics_reasons() -> set[str]:
    """The canary statistics' `Reason` literal: a verdict's reason becomes a condition's reason."""
    tree = ast.parse((PACKAGE / "rollout" / "statistics.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "Reason":
            return {e.value for e in node.value.slice.elts}
    raise AssertionError("rollout/statistics.py has no `Reason = Literal[...]`")


def test_conditions_doc_lists_every_reason_and_type_the_operator_sets():
    from dwcp_autotuner.controller.transitions import RULES

    sources = sorted((PACKAGE / "controller").glob("*.py")) + [
        PACKAGE / "handlers" / "runtime.py",
        PACKAGE / "proposers" / "store.py",
    ]
    reasons, types = condition_reasons_and_types(sources)
    # The extractor must keep finding the reasons it is known to find; else it silently checks nothing.
    assert {"Valid", "InvalidQuery", "InvalidSpec", "Superseded"} <= reasons, sorted(reasons)
    # Runs: every transition's reason, and the reasons its conditions carry (the table is the complete list).
    reasons |= {rule.reason for rule in RULES} | {r for rule in RULES for _, _, r in rule.extra if "{" not in r}
    reasons |= {"Inconclusive", "SpecValid", "AsExpected"}  # rollout/decision.py's and apply()'s own
    types |= {t for rule in RULES for t, _, _ in rule.extra} | {"Ready", "Progressing", "Degraded"}
    doc = (DOCS / "conditions.md").read_text(encoding="utf-8")
    hand_written = doc.split("<!-- BEGIN GENERATED")[0] + doc.split("<!-- END GENERATED -->")[-1]
    documented = (
        set(re.findall(r"`([A-Za-z]+)`", hand_written))
        | set(re.findall(r"^\| ([A-Z][A-Za-z]+) \|", hand_written, re.M))
        | set(re.findall(r"^#+ ([A-Z][A-Za-z]+)$", hand_written, re.M))
    )
    missing = sorted((reasons | _statistics_reasons()) - documented)
    assert not missing, f"docs/conditions.md does not explain the reason(s) {missing}"
    missing_types = sorted(types - documented)
    assert not missing_types, f"docs/conditions.md does not explain the condition type(s) {missing_types}"


def test_configuration_doc_is_generated_from_the_current_crds():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_configuration_md.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_docs_exist_and_every_relative_link_resolves():
    for name in ("concepts", "configuration", "conditions", "troubleshooting", "security"):
        assert (DOCS / f"{name}.md").is_file(), name
    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([\w./-]+?)(?:#[\w-]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
    concepts = (DOCS / "concepts.md").read_text(encoding="utf-8")
    from dwcp_autotuner.canary.protocol import CANARY_KEYS

    assert all(f"`{key}`" in concepts for key in CANARY_KEYS), "docs/concepts.md must name every canary key"
    assert 'variant="stable"' in concepts and 'variant="canary"' in concepts


# ===========================================================================================================
# Image and kind
# ===========================================================================================================
def _dockerignore_allows(path: str) -> bool:
    import fnmatch

    allowed = False
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        parts = path.split("/")
        if any(
            fnmatch.fnmatch("/".join(parts[:i]), pattern.replace("**/", "*/").replace("/**", "/*"))
            or fnmatch.fnmatch("/".join(parts[:i]), pattern)
            for i in range(1, len(parts) + 1)
        ):
            allowed = negate
    return allowed


def test_dockerfile_builds_a_wheel_and_runs_it_as_non_root_with_cpu_torch():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2 and all("slim" in image for image, _ in stages), stages
    assert re.search(r"pip wheel .*--wheel-dir", text), "the first stage builds the project's wheel"
    assert "--index-url https://download.pytorch.org/whl/cpu" in text, "CPU-only torch"
    assert re.search(r"^USER 10001(:10001)?$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["dwcp-autotuner"\]$', text, re.M)
    # Everything COPYed from the build context is there and not excluded by .dockerignore.
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert _dockerignore_allows(source.rstrip("/")), f".dockerignore excludes {source}"
    assert not _dockerignore_allows(".venv") and not _dockerignore_allows(".tools")
    # The image tag the chart and the quickstart use is the project's version.
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M).group(1)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == version


def test_kind_config_is_one_control_plane_and_a_worker():
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text(encoding="utf-8"))
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and set(roles) <= {"control-plane", "worker"}


def test_quickstart_commands_agree_with_each_other():
    """kind/docker cannot run here: check what they would do against the chart and the config instead."""
    commands = _quickstart_commands()
    (create,) = _quickstart(["kind", "create", "cluster"])
    cluster = create[create.index("--name") + 1]
    assert create[create.index("--config") + 1] == "kind-config.yaml" and (ROOT / "kind-config.yaml").is_file()
    (build,) = _quickstart(["docker", "build"])
    image = build[build.index("-t") + 1]
    assert build[-1] == "."
    (load,) = _quickstart(["kind", "load", "docker-image"])
    assert load[3] == image and load[load.index("--name") + 1] == cluster
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert image == f"{values['image']['repository']}:{chart['appVersion']}", (
        "the chart's default image is the built one"
    )
    assert values["image"]["pullPolicy"] == "IfNotPresent", "kind-loaded images must not be pulled"
    # The Prometheus the operator is pointed at is the one the quickstart installs.
    (prometheus,) = [c for c in _quickstart(["helm", "install"]) if "kube-prometheus-stack" in " ".join(c[3:4])]
    release, namespace = prometheus[2], prometheus[prometheus.index("--namespace") + 1]
    install = _quickstart_helm_install()
    url = [a.split("=", 1)[1] for a in install if a.startswith("prometheusUrl=")]
    assert url == [f"http://{release}-prometheus.{namespace}.svc:9090"], url
    assert ["kubectl", "apply", "-n", NAMESPACE, "-f", "examples/"] in commands
    assert install[2] == RELEASE and install[install.index("--namespace") + 1] == NAMESPACE


# ===========================================================================================================
# The quickstart, run against the Kubernetes API emulator
# ===========================================================================================================
@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """An emulated API server (real HTTP; CRDs, ConfigMaps, Deployments, ...) plus the RBAC and policy kinds."""
    if HELM is None or KUBECTL is None:
        pytest.skip("helm and kubectl are needed (scripts/setup-dev.sh installs them into .tools/bin)")
    from tests.kube import running_emulator
    from tests.kube.emulator import ResourceType

    with running_emulator() as (emulator, _url, kubeconfig):
        for plural, kind, namespaced in (
            ("clusterroles", "ClusterRole", False),
            ("clusterrolebindings", "ClusterRoleBinding", False),
            ("roles", "Role", True),
            ("rolebindings", "RoleBinding", True),
        ):
            emulator.register_resource(
                ResourceType(
                    group="rbac.authorization.k8s.io", versions=["v1"], plural=plural, kind=kind, namespaced=namespaced
                )
            )
        emulator.register_resource(
            ResourceType(
                group="policy",
                versions=["v1"],
                plural="poddisruptionbudgets",
                kind="PodDisruptionBudget",
                namespaced=True,
            )
        )
        # Installed by the quickstart's kube-prometheus-stack, which comes from the internet.
        emulator.register_resource(
            ResourceType(
                group="monitoring.coreos.com",
                versions=["v1"],
                plural="servicemonitors",
                kind="ServiceMonitor",
                namespaced=True,
            )
        )
        yield _helm_env(kubeconfig)


def _kubectl(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([KUBECTL, *args, "--request-timeout=20s"], env=env, check=check)


def _adapt_helm_install(cmd: list[str]) -> list[str]:
    """The quickstart's `helm install`, as far as an emulator allows: it runs no controllers (no pod ever becomes
    ready for --wait), and the namespace is created with kubectl first. Helm validates the manifests as against a
    cluster (the emulator serves OpenAPI v3, so Helm asks the server for strict field validation)."""
    out = [HELM if cmd[0] == "helm" else cmd[0]]
    out += [a for a in cmd[1:] if a not in ("--create-namespace", "--wait")]
    return out + ["--timeout", "60s"]


def test_quickstart_on_the_emulator(cluster):
    env = cluster
    commands = _quickstart_commands()
    ran = []
    for cmd in commands:
        if cmd[0] in ("kind", "docker"):
            continue  # need Docker: see test_quickstart_commands_agree_with_each_other
        if cmd[:3] == ["helm", "repo", "add"] or (
            cmd[:2] == ["helm", "install"] and "charts/dwcp-autotuner" not in cmd
        ):
            continue  # kube-prometheus-stack comes from the internet
        if cmd[:2] == ["helm", "install"]:
            _kubectl(env, "create", "namespace", cmd[cmd.index("--namespace") + 1])
            result = _run(_adapt_helm_install(cmd), env=env)
            assert "STATUS: deployed" in result.stdout, result.stdout
        elif cmd[:2] == ["kubectl", "apply"]:
            # First what a reviewer would run: a client-side dry run, validated like the real apply.
            dry = _kubectl(env, *cmd[1:], "--dry-run=client")
            assert dry.stdout.count("(dry run)") == len(_example_documents()), dry.stdout
            applied = _kubectl(env, *cmd[1:])
            assert "optimizationrun.autotune.dwcp.io/dwcp-tune created" in applied.stdout, applied.stdout
            _pretend_the_operator_validated_the_profiles(env)
        elif cmd[:2] == ["kubectl", "wait"]:
            result = _kubectl(env, *cmd[1:])
            assert result.stdout.count("condition met") == len(_example_profiles()), result.stdout
        elif cmd[:2] == ["kubectl", "get"]:
            result = _kubectl(env, *[a for a in cmd[1:] if a not in ("-w", "--watch")])
            header = result.stdout.splitlines()[0].split()
            assert header == [
                "NAME",
                "PHASE",
                "PROFILE",
                "STEP",
                "WEIGHT",
                "PROPOSALS",
                "IMPROVEMENT",
                "MESSAGE",
                "AGE",
            ], result.stdout
            assert "dwcp-tune" in result.stdout and "RollingOut" in result.stdout and "25" in result.stdout
        else:
            pytest.fail(f"the quickstart has a command this test does not know how to check: {shlex.join(cmd)}")
        ran.append(cmd[:2])
    assert (
        ["helm", "install"] in ran
        and ["kubectl", "apply"] in ran
        and ["kubectl", "wait"] in ran
        and ["kubectl", "get"] in ran
    )

    # What the install created, as a cluster sees it.
    crds = _kubectl(env, "get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/optimizationruns.autotune.dwcp.io" in crds
    names = _kubectl(
        env, "get", "deployments,configmaps,services,serviceaccounts", "-n", NAMESPACE, "-o", "name"
    ).stdout
    for expected in (
        f"deployment.apps/{RELEASE}",
        f"deployment.apps/{RELEASE}-hde",
        "configmap/hde-config",
        f"configmap/{RELEASE}-dashboard",
        f"service/{RELEASE}-metrics",
        f"serviceaccount/{RELEASE}",
    ):
        assert expected in names.split(), names
    assert (
        f"clusterrole.rbac.authorization.k8s.io/{RELEASE}" in _kubectl(env, "get", "clusterroles", "-o", "name").stdout
    )
    # Printer columns, short names and the category of the profiles, as the README's prose uses them.
    profiles = _kubectl(env, "get", "pprof", "-n", NAMESPACE).stdout.splitlines()
    assert profiles[0].split() == ["NAME", "READY", "TARGET", "PARAMETERS", "TWIN", "AGE"], profiles
    assert any(line.split()[:5] == ["hde", "True", "hde-config", "3", "hde"] for line in profiles[1:]), profiles
    assert (
        "optimizationrun.autotune.dwcp.io/dwcp-tune"
        in _kubectl(env, "get", "autotune", "-n", NAMESPACE, "-o", "name").stdout
    )
    # The README's wait for a finished run.
    _patch_status(
        env,
        "optimizationrun",
        "dwcp-tune",
        {
            "phase": "Succeeded",
            "conditions": [
                _condition("Succeeded", "True", "BudgetExhausted"),
                _condition("Progressing", "False", "BudgetExhausted"),
            ],
        },
    )
    result = _kubectl(env, "wait", "-n", NAMESPACE, "--for=condition=Succeeded", "optrun/dwcp-tune", "--timeout=20s")
    assert "condition met" in result.stdout


def _condition(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def _patch_status(env, kind: str, name: str, status: dict[str, Any]) -> None:
    _kubectl(
        env,
        "patch",
        kind,
        name,
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def _pretend_the_operator_validated_the_profiles(env) -> None:
    """What the operator writes (no operator runs here): Ready profiles and a run at its second canary step."""
    for name, profile in _example_profiles().items():
        _patch_status(
            env,
            "parameterprofile",
            name,
            {
                "observedGeneration": 1,
                "parameters": len(profile["spec"]["parameters"]),
                "twin": profile["spec"].get("twin"),
                "conditions": [_condition("Ready", "True", "Valid")],
            },
        )
    _patch_status(
        env,
        "optimizationrun",
        "dwcp-tune",
        {
            "phase": "RollingOut",
            "proposals": 1,
            "improvementPct": 0.0,
            "current": {
                "number": 1,
                "profile": "hde",
                "config": {"compression_level": 2},
                "stableConfig": {"compression_level": 3},
                "stepIndex": 1,
                "canaryWeight": 25,
            },
            "conditions": [_condition("Ready", "True", "SpecValid"), _condition("Progressing", "True", "StepAdvanced")],
        },
    )


def test_helm_upgrade_keeps_what_the_operator_promoted(cluster):
    """The components' ConfigMaps keep the live config.json (and the canary keys) across `helm upgrade`."""
    env = cluster
    release, namespace = "upgrade-check", "upgrade-check"
    _kubectl(env, "create", "namespace", namespace)
    base = [
        HELM,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "components.pba.enabled=true",
        "--set",
        "components.pba.configMapName=pba-upgrade",
        "--set",
        "dashboard.enabled=false",
        "--set",
        "rbac.create=false",
    ]
    _run(base, env=env)
    promoted = '{"confidence_threshold":0.85,"prediction_window":20,"update_frequency":5}'
    _kubectl(
        env,
        "patch",
        "configmap",
        "pba-upgrade",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(
            {
                "data": {
                    "config.json": promoted,
                    "autotune.dwcp.io.canary": '{"update_frequency":4}',
                    "autotune.dwcp.io.canary-weight": "5",
                    "autotune.dwcp.io.canary-revision": "r-pba-2",
                }
            }
        ),
    )
    _run([HELM, "upgrade", *base[2:], "--set", "components.pba.replicas=2"], env=env)
    data = json.loads(_kubectl(env, "get", "configmap", "pba-upgrade", "-n", namespace, "-o", "json").stdout)["data"]
    assert data["config.json"] == promoted
    assert data["autotune.dwcp.io.canary-weight"] == "5" and data["autotune.dwcp.io.canary-revision"] == "r-pba-2"
    deployment = json.loads(
        _kubectl(env, "get", "deployment", f"{release}-dwcp-autotuner-pba", "-n", namespace, "-o", "json").stdout
    )
    assert deployment["spec"]["replicas"] == 2  # the upgrade did apply


def test_helm_install_with_replicas_creates_the_peering_object(cluster):
    env = cluster
    _kubectl(env, "create", "namespace", "ha-check")
    _run(
        [
            HELM,
            "install",
            "ha",
            str(CHART),
            "--namespace",
            "ha-check",
            "--set",
            "replicaCount=2",
            "--set",
            "rbac.create=false",
            "--set",
            "dashboard.enabled=false",
        ],
        env=env,
    )
    peerings = _kubectl(env, "get", "clusterkopfpeerings", "-o", "name").stdout.split()
    assert "clusterkopfpeering.kopf.dev/ha-dwcp-autotuner" in peerings
    assert (
        "poddisruptionbudget.policy/ha-dwcp-autotuner"
        in _kubectl(env, "get", "poddisruptionbudgets", "-n", "ha-check", "-o", "name").stdout
    )


@needs_helm
def test_notification_webhooks_render_as_flags_with_secret_urls_in_the_environment():
    docs = render(
        "default",
        "--set",
        "notifications.webhooks[0].url=https://alerts.example.com/dwcp",
        "--set",
        "notifications.webhooks[1].format=slack",
        "--set",
        "notifications.webhooks[1].urlSecret.name=slack-webhook",
        "--set",
        "networkPolicy.enabled=true",
    )
    args = operator_args(docs)
    assert _flag(args, "--webhook") == ["json=https://alerts.example.com/dwcp", "slack=env:DWCP_WEBHOOK_1"]
    env = {e["name"]: e for e in operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DWCP_WEBHOOK_1"]["valueFrom"]["secretKeyRef"] == {"name": "slack-webhook", "key": "url"}
    [policy] = of_kind(docs, "NetworkPolicy")
    assert [p["port"] for p in policy["spec"]["egress"][-1]["ports"]] == [443]  # egress to the webhooks
    assert not _flag(operator_args(render("default")), "--webhook")
    [plain] = of_kind(render("default", "--set", "networkPolicy.enabled=true"), "NetworkPolicy")
    assert len(plain["spec"]["egress"]) == 3  # no webhook: no egress beyond DNS, the API server and Prometheus


@needs_helm
def test_a_webhook_needs_a_url_or_a_secret():
    result = subprocess.run(
        [HELM, "template", RELEASE, str(CHART), "--set", "notifications.webhooks[0].format=slack"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "urlSecret" in result.stderr


@needs_helm
def test_install_notes_name_the_watched_namespace_helm_show_crds_and_the_components_being_off():
    def notes(*values: str) -> str:
        result = _run([HELM, "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE, *values])
        return result.stdout.split("NOTES:", 1)[1]

    default = notes()
    assert "kubectl get -n <namespace> autotune" in default  # cluster-wide: the user picks a namespace
    assert "helm show crds" in default and "checkout" not in default
    assert "reference components (hde, pba, acp) are off" in default
    assert "--for=condition=Progressing=False" in default
    scoped = notes("--set", "watchNamespaces={team-a,team-b}", "--set", "components.hde.enabled=true")
    assert "kubectl apply -n team-a -f examples/" in scoped and "kubectl get -n team-a autotune" in scoped
    assert "are off" not in scoped


@needs_helm
def test_shards_render_one_peered_deployment_per_shard_with_disjoint_selectors():
    docs = render("default", "--set", "shards=2", "--set", "replicaCount=2")
    deployments = [
        d
        for d in of_kind(docs, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    base = operator_deployment(render("default"))["metadata"]["name"]
    assert [d["metadata"]["name"] for d in deployments] == [f"{base}-shard-0", f"{base}-shard-1"]
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deployments]
    assert selectors[0] != selectors[1] and all(s["autotune.dwcp.io/shard"] == str(i) for i, s in enumerate(selectors))
    for i, d in enumerate(deployments):
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        assert _flag(args, "--shard") == [f"{i}/2"]
        assert _flag(args, "--peering") == [f"{base}-shard-{i}"]
        assert d["spec"]["template"]["metadata"]["labels"]["autotune.dwcp.io/shard"] == str(i)
    peerings = sorted(p["metadata"]["name"] for p in of_kind(docs, "ClusterKopfPeering"))
    assert peerings == [f"{base}-shard-0", f"{base}-shard-1"]
    assert len(of_kind(docs, "PodDisruptionBudget")) == 2
    lint = subprocess.run([HELM, "lint", "--strict", str(CHART), "--set", "shards=3"], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    single = render("default")
    assert not _flag(operator_args(single), "--shard")  # one shard: no flag, the Deployment keeps its name


@needs_helm
def test_worker_jobs_render_flags_and_least_privilege_rbac_in_the_release_namespace():
    docs = render("default", "--set", "workers.jobs.enabled=true", "--set", "workers.jobs.parallelism=3")
    args = operator_args(docs)
    assert _flag(args, "--worker-jobs-parallelism") == ["3"] and _flag(args, "--worker-jobs-namespace") == [NAMESPACE]
    assert _flag(args, "--worker-jobs-image") == [
        operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]["image"]
    ]
    roles = {r["metadata"]["name"]: r for r in of_kind(docs, "Role")}
    jobs_role = next(r for n, r in roles.items() if n.endswith("-jobs"))
    worker_role = next(r for n, r in roles.items() if n.endswith("-worker"))
    assert {tuple(rule["resources"]): rule["verbs"] for rule in jobs_role["rules"]} == {
        ("jobs",): ["create", "get", "delete"],
        ("pods",): ["list"],
        ("configmaps",): ["get", "create", "patch"],
    }
    assert [rule["resources"] for rule in worker_role["rules"]] == [["configmaps"]]  # no Secrets, nothing else
    assert all(r["metadata"]["namespace"] == NAMESPACE for r in (jobs_role, worker_role))
    assert not [r for r in of_kind(render("default"), "Role") if r["metadata"]["name"].endswith("-worker")]
