"""
End-to-end checks of the Kubernetes API emulator (tests/kube/emulator.py) over real HTTP:
the official ``kubernetes`` client, watches, CRD schemas, a real Kopf operator, real kubectl.
"""

from __future__ import annotations

import asyncio
import base64
import json
import pathlib
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import kopf
import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.kube import KubeEmulator, running_emulator
from tests.support.tools import find_tool, wait_for

REPO = pathlib.Path(__file__).resolve().parent.parent
GROUP = "example.dwcp.io"

CRD_YAML = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.dwcp.io
spec:
  group: example.dwcp.io
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd], categories: [dwcp]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Mode, type: string, jsonPath: .spec.mode}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [mode]
            properties:
              mode: {type: string, enum: [fast, slow]}
              replicas: {type: integer, minimum: 1, maximum: 10, default: 2}
              name: {type: string, pattern: '^[a-z]+$'}
          status:
            type: object
            properties:
              phase: {type: string}
              observedGeneration: {type: integer}
              conditions:
                type: array
                items:
                  type: object
                  required: [type, status]
                  properties:
                    type: {type: string}
                    status: {type: string, enum: ["True", "False", "Unknown"]}
                    reason: {type: string}
"""

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.dwcp.io"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 1}}},
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture()
def crd_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "crds"
    path.mkdir()
    (path / "gadgets.yaml").write_text(CRD_YAML)
    return path


@pytest.fixture()
def cluster(crd_dir: pathlib.Path) -> Iterator[tuple[KubeEmulator, str, pathlib.Path]]:
    with running_emulator(crd_paths=[crd_dir], bookmark_interval=0.5) as (emulator, url, kubeconfig):
        yield emulator, url, kubeconfig
        assert emulator.internal_errors == []


@pytest.fixture()
def api(cluster: tuple[KubeEmulator, str, pathlib.Path]) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(cluster[2]))
    yield client
    client.close()


def status_body(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


# ----------------------------------------------------------------------------------------------
# (a) The official kubernetes client: CRUD, conflicts, selectors.
# ----------------------------------------------------------------------------------------------


def test_core_crud_with_official_client(api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api)
    V1ConfigMap, V1ObjectMeta = kubernetes.client.V1ConfigMap, kubernetes.client.V1ObjectMeta

    created = core.create_namespaced_config_map(
        "default",
        V1ConfigMap(
            metadata=V1ObjectMeta(name="cm1", labels={"app": "a", "tier": "web"}),
            data={"k": "v"},
            binary_data={"blob": base64.b64encode(b"\x00\x01").decode()},
        ),
    )
    assert created is not None  # i.e. 201 with a body
    assert created.metadata.uid and created.metadata.creation_timestamp
    rv1 = int(created.metadata.resource_version)
    assert created.binary_data == {"blob": "AAE="}

    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="cm1")))
    assert err.value.status == 409 and status_body(err.value)["reason"] == "AlreadyExists"

    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="cm2", labels={"app": "b"})))
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="cm3")))

    def names(selector: str) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map("default", label_selector=selector).items]

    assert names("app=a") == ["cm1"]
    assert names("app==b") == ["cm2"]
    assert names("app!=a") == ["cm2", "cm3"]
    assert names("app in (a,b)") == ["cm1", "cm2"]
    assert names("app notin (a)") == ["cm2", "cm3"]
    assert names("app") == ["cm1", "cm2"]
    assert names("!app") == ["cm3"]
    assert names("app=a,tier=web") == ["cm1"]
    assert names("app=a,tier=db") == []
    fields = core.list_namespaced_config_map("default", field_selector="metadata.name=cm2").items
    assert [i.metadata.name for i in fields] == ["cm2"]
    page = core.list_namespaced_config_map("default", limit=2)
    assert len(page.items) == 2 and page.metadata._continue
    rest = core.list_namespaced_config_map("default", limit=2, _continue=page.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["cm3"] and not rest.metadata._continue

    # Replace (PUT) with a stale resourceVersion: 409; with the fresh one: OK and a newer RV.
    fresh = core.read_namespaced_config_map("cm1", "default")
    fresh.data = {"k": "v2"}
    replaced = core.replace_namespaced_config_map("cm1", "default", fresh)
    assert replaced.data == {"k": "v2"} and int(replaced.metadata.resource_version) > rv1
    fresh.data = {"k": "v3"}  # still carries the previous (now stale) resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cm1", "default", fresh)
    assert err.value.status == 409 and status_body(err.value)["reason"] == "Conflict"

    # Patches: a dict body goes as a strategic merge patch (≈ merge patch here), a list as JSON patch.
    patched = core.patch_namespaced_config_map("cm1", "default", {"data": {"extra": "x"}})
    assert patched.data == {"k": "v2", "extra": "x"}
    with pytest.raises(ApiException) as err:  # a stale RV in a merge patch: 409
        core.patch_namespaced_config_map("cm1", "default", {"metadata": {"resourceVersion": str(rv1)}})
    assert err.value.status == 409
    rv = patched.metadata.resource_version
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, {"op": "remove", "path": "/data/extra"}]
    patched = core.patch_namespaced_config_map("cm1", "default", ops)
    assert patched.data == {"k": "v2"}
    with pytest.raises(ApiException) as err:  # the same test op with a now-stale RV: 422 (as Kopf expects)
        core.patch_namespaced_config_map("cm1", "default", ops)
    assert err.value.status == 422
    unchanged = core.patch_namespaced_config_map("cm1", "default", {"data": {"k": "v2"}})
    assert unchanged.metadata.resource_version == patched.metadata.resource_version  # no-op: no new RV

    # Deletion, with finalizers: only marked; gone when the finalizers are removed.
    core.patch_namespaced_config_map("cm2", "default", {"metadata": {"finalizers": ["example.com/hold"]}})
    core.delete_namespaced_config_map("cm2", "default")
    held = core.read_namespaced_config_map("cm2", "default")
    assert held.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as err:  # no new finalizers on a deleted object
        core.patch_namespaced_config_map("cm2", "default", {"metadata": {"finalizers": ["example.com/hold", "x/y"]}})
    assert err.value.status == 422
    core.patch_namespaced_config_map("cm2", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("cm2", "default")
    assert err.value.status == 404 and status_body(err.value)["reason"] == "NotFound"
    status = core.delete_namespaced_config_map("cm1", "default")  # v37 returns a plain dict here
    assert status["kind"] == "Status" and status["status"] == "Success"

    # Namespaces & secrets.
    assert {"default", "kube-system"} <= {n.metadata.name for n in core.list_namespace().items}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("nowhere", V1ConfigMap(metadata=V1ObjectMeta(name="x")))
    assert err.value.status == 404
    core.create_namespace(kubernetes.client.V1Namespace(metadata=V1ObjectMeta(name="team-a")))
    assert core.read_namespace("team-a").status.phase == "Active"
    secret = core.create_namespaced_secret(
        "team-a", kubernetes.client.V1Secret(metadata=V1ObjectMeta(name="s1"), string_data={"password": "hunter2"})
    )
    assert secret.data == {"password": base64.b64encode(b"hunter2").decode()} and not secret.string_data
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("team-a", V1ConfigMap(metadata=V1ObjectMeta(name="Bad_Name")))
    assert err.value.status == 422 and "metadata.name" in status_body(err.value)["message"]

    # Namespace deletion cascades to its content.
    core.delete_namespace("team-a")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_secret("s1", "team-a")
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:
        core.read_namespace("team-a")
    assert err.value.status == 404

    # Events (core & events.k8s.io) and leases are served.
    core.create_namespaced_event(
        "default",
        kubernetes.client.CoreV1Event(
            metadata=V1ObjectMeta(name="ev1"),
            involved_object=kubernetes.client.V1ObjectReference(name="cm1"),
            reason="Test",
            message="hello",
            type="Normal",
        ),
    )
    assert [
        e.reason for e in core.list_namespaced_event("default", field_selector="involvedObject.name=cm1").items
    ] == ["Test"]
    coord = kubernetes.client.CoordinationV1Api(api)
    lease = coord.create_namespaced_lease(
        "default",
        kubernetes.client.V1Lease(
            metadata=V1ObjectMeta(name="leader"), spec=kubernetes.client.V1LeaseSpec(holder_identity="me")
        ),
    )
    assert lease.spec.holder_identity == "me"


# ----------------------------------------------------------------------------------------------
# (b) Watches from a resourceVersion, bookmarks, WatchList, selectors, compaction.
# ----------------------------------------------------------------------------------------------


def _stream_watch(url: str, path: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    events = []
    with urllib.request.urlopen(url + path, timeout=timeout) as response:
        assert response.status == 200
        while len(events) < count:
            line = response.readline()
            if not line:
                break
            events.append(json.loads(line))
    return events


def test_watch_from_resource_version(
    cluster: tuple[KubeEmulator, str, pathlib.Path], api: kubernetes.client.ApiClient
) -> None:
    _, url, _ = cluster
    core = kubernetes.client.CoreV1Api(api)
    V1ConfigMap, V1ObjectMeta = kubernetes.client.V1ConfigMap, kubernetes.client.V1ObjectMeta
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="a", labels={"w": "1"})))
    listing = core.list_namespaced_config_map("default")
    rv = listing.metadata.resource_version
    assert [i.metadata.name for i in listing.items] == ["a"]

    # Changes between the list and the watch must not be lost; 'a' must not be replayed as ADDED.
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="b")))
    core.patch_namespaced_config_map("a", "default", {"data": {"x": "1"}})
    core.delete_namespaced_config_map("b", "default")

    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            watch.stop()
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]

    # Live events after the replay, with a label selector: leaving the selection is DELETED.
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    results: list[list[dict[str, Any]]] = []
    thread = threading.Thread(
        target=lambda: results.append(
            _stream_watch(
                url, f"/api/v1/namespaces/default/configmaps?watch=true&labelSelector=w%3D1&resourceVersion={rv}", 3
            )
        )
    )
    thread.start()
    time.sleep(0.2)
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="c")))  # not selected
    core.patch_namespaced_config_map("c", "default", {"metadata": {"labels": {"w": "1"}}})  # enters → ADDED
    core.patch_namespaced_config_map("a", "default", {"data": {"x": "2"}})  # MODIFIED
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"w": None}}})  # leaves → DELETED
    thread.join(timeout=5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in results[0]] == [
        ("ADDED", "c"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]

    # WatchList (sendInitialEvents=true), as kubectl ≥1.32 and Kopf's initial_streaming do.
    events = _stream_watch(
        url,
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true"
        "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
        3,
    )
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "c"),
        ("ADDED", "a"),
        ("BOOKMARK", None),
    ]
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv)

    # Periodic bookmarks on idle watches (the fixture sets bookmark_interval=0.5s).
    events = _stream_watch(
        url,
        f"/api/v1/namespaces/default/configmaps?watch=true&allowWatchBookmarks=true"
        f"&resourceVersion={core.list_namespaced_config_map('default').metadata.resource_version}",
        1,
    )
    assert events[0]["type"] == "BOOKMARK"

    # The server-side timeout ends the stream.
    latest = core.list_namespaced_config_map("default").metadata.resource_version
    started = time.monotonic()
    assert (
        _stream_watch(
            url, f"/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1&resourceVersion={latest}", 99
        )
        == []
    )
    assert time.monotonic() - started < 4


def test_watch_from_compacted_resource_version_is_gone() -> None:
    with running_emulator(history_limit=4) as (emulator, url, _):
        for idx in range(10):
            emulator.create_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{idx}"}})
        events = _stream_watch(url, "/api/v1/configmaps?watch=true&resourceVersion=2", 1)
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


# ----------------------------------------------------------------------------------------------
# (c) CRDs: schema validation (422), defaults, pruning, status subresource, generation, discovery.
# ----------------------------------------------------------------------------------------------


def test_crd_schema_defaults_and_status_subresource(
    cluster: tuple[KubeEmulator, str, pathlib.Path], api: kubernetes.client.ApiClient
) -> None:
    emulator, url, _ = cluster
    custom = kubernetes.client.CustomObjectsApi(api)

    def gadget(obj_name: str, /, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/v1", "kind": "Gadget", "metadata": {"name": obj_name}, "spec": spec}

    # Invalid: the enum, the minimum, a pattern, a missing required field — all named in the 422.
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(
            GROUP, "v1", "default", "gadgets", gadget("bad", mode="turbo", replicas=0, name="X1")
        )
    assert err.value.status == 422
    body = status_body(err.value)
    assert body["reason"] == "Invalid" and body["kind"] == "Status"
    assert body["message"].startswith('Gadget.example.dwcp.io "bad" is invalid: [')
    assert {c["field"] for c in body["details"]["causes"]} == {"spec.mode", "spec.replicas", "spec.name"}
    assert 'Unsupported value: "turbo": supported values: "fast", "slow"' in body["message"]
    assert "should be greater than or equal to 1" in body["message"]
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(
            GROUP, "v1", "default", "gadgets", gadget("bad1", mode="slow", replicas=11)
        )
    assert err.value.status == 422
    assert status_body(err.value)["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.replicas",
            "message": "Invalid value: 11: spec.replicas in body should be less than or equal to 10",
        }
    ]
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, "v1", "default", "gadgets", gadget("bad2"))
    assert err.value.status == 422
    assert status_body(err.value)["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.mode"}
    ]
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(
            GROUP, "v1", "default", "gadgets", gadget("bad3", mode="fast", replicas="x")
        )
    assert err.value.status == 422 and "must be of type integer" in status_body(err.value)["message"]

    # Valid: defaults applied, unknown fields pruned, status dropped on create, generation 1.
    obj = gadget("g1", mode="fast", unknown="dropped")
    obj["status"] = {"phase": "Hacked"}
    created = custom.create_namespaced_custom_object(GROUP, "v1", "default", "gadgets", obj)
    assert created["spec"] == {"mode": "fast", "replicas": 2}
    assert "status" not in created and created["metadata"]["generation"] == 1

    # Writes to the main resource ignore .status; generation bumps on spec changes only.
    patched = custom.patch_namespaced_custom_object(
        GROUP, "v1", "default", "gadgets", "g1", {"spec": {"replicas": 5}, "status": {"phase": "Ignored"}}
    )
    assert patched["spec"]["replicas"] == 5 and "status" not in patched and patched["metadata"]["generation"] == 2
    patched = custom.patch_namespaced_custom_object(
        GROUP, "v1", "default", "gadgets", "g1", {"metadata": {"labels": {"x": "y"}}}
    )
    assert patched["metadata"]["generation"] == 2

    # Writes to /status change only .status and never bump the generation; they are validated too.
    patched = custom.patch_namespaced_custom_object_status(
        GROUP,
        "v1",
        "default",
        "gadgets",
        "g1",
        {
            "spec": {"replicas": 9},
            "metadata": {"labels": {"x": "z"}},
            "status": {"phase": "Running", "observedGeneration": 2, "bogus": 1},
        },
    )
    assert patched["status"] == {"phase": "Running", "observedGeneration": 2}  # 'bogus' pruned
    assert patched["spec"]["replicas"] == 5 and patched["metadata"]["labels"] == {"x": "y"}
    assert patched["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object_status(
            GROUP, "v1", "default", "gadgets", "g1", {"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}}
        )
    assert (
        err.value.status == 422
        and status_body(err.value)["details"]["causes"][0]["field"] == "status.conditions[0].status"
    )

    # Replace (PUT) of a CR needs a resourceVersion and keeps the status.
    current = custom.get_namespaced_custom_object(GROUP, "v1", "default", "gadgets", "g1")
    current["spec"]["mode"] = "slow"
    del current["status"]
    replaced = custom.replace_namespaced_custom_object(GROUP, "v1", "default", "gadgets", "g1", current)
    assert replaced["spec"]["mode"] == "slow" and replaced["status"]["phase"] == "Running"
    with pytest.raises(ApiException) as err:  # stale
        custom.replace_namespaced_custom_object(GROUP, "v1", "default", "gadgets", "g1", current)
    assert err.value.status == 409
    del current["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as err:
        custom.replace_namespaced_custom_object(GROUP, "v1", "default", "gadgets", "g1", current)
    assert err.value.status == 422 and "metadata.resourceVersion" in status_body(err.value)["message"]

    # A strategic merge patch is refused for CRs (as by a real apiserver).
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(
            GROUP,
            "v1",
            "default",
            "gadgets",
            "g1",
            {"spec": {"replicas": 3}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert err.value.status == 415

    # Discovery sees the CRD with its short names, categories, and the status subresource.
    resources = json.loads(urllib.request.urlopen(f"{url}/apis/{GROUP}/v1").read())
    assert resources["groupVersion"] == f"{GROUP}/v1"
    by_name = {r["name"]: r for r in resources["resources"]}
    assert by_name["gadgets"]["shortNames"] == ["gd"] and by_name["gadgets"]["categories"] == ["dwcp"]
    assert by_name["gadgets"]["namespaced"] is True and "watch" in by_name["gadgets"]["verbs"]
    assert "gadgets/status" in by_name
    groups = json.loads(urllib.request.urlopen(f"{url}/apis").read())
    assert GROUP in {g["name"] for g in groups["groups"]}
    core = json.loads(urllib.request.urlopen(f"{url}/api/v1").read())
    assert core["groupVersion"] == "v1"

    # A CRD POSTed via the API (as `kubectl apply` does) registers a new resource; deleting it unregisters.
    ext = kubernetes.client.ApiextensionsV1Api(api)
    crd = ext.create_custom_resource_definition(WIDGET_CRD)
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    widget = custom.create_namespaced_custom_object(
        GROUP,
        "v1",
        "default",
        "widgets",
        {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {}},
    )
    assert widget["spec"] == {"size": 1}  # NB: as in the apiserver, an absent `spec` would not be defaulted
    with pytest.raises(ApiException) as err:
        ext.create_custom_resource_definition({**WIDGET_CRD, "metadata": {"name": "wrong.example.dwcp.io"}})
    assert err.value.status == 422
    ext.delete_custom_resource_definition("widgets.example.dwcp.io")
    with pytest.raises(ApiException) as err:
        custom.list_namespaced_custom_object(GROUP, "v1", "default", "widgets")
    assert err.value.status == 404
    assert emulator.get_object("gadgets", "g1", "default", group=GROUP)["spec"]["mode"] == "slow"


# ----------------------------------------------------------------------------------------------
# (d) A real Kopf operator: finalizer, handler, status patch, deletion.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "peering, initial_streaming",
    [(False, False), (True, False), (False, True)],
    ids=["standalone", "peering", "initial-streaming"],
)
def test_kopf_operator(
    cluster: tuple[KubeEmulator, str, pathlib.Path],
    api: kubernetes.client.ApiClient,
    peering: bool,
    initial_streaming: bool,
) -> None:
    emulator, url, _ = cluster
    emulator.create_object(WIDGET_CRD)
    if peering:
        emulator.create_object(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {"name": "default", "namespace": "default"},
            }
        )
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True, scheme="Bearer", token="dummy")

    @kopf.on.create(GROUP, "v1", "widgets", registry=registry)
    def created(body: kopf.Body, spec: Any, patch: kopf.Patch, **_: Any) -> None:
        kopf.info(body, reason="Tuned", message="the widget is ready")  # a k8s Event via Kopf's poster
        patch.status["phase"] = "Ready"
        patch.status["size"] = spec.get("size")

    @kopf.on.delete(GROUP, "v1", "widgets", registry=registry)
    def removed(name: str, **_: Any) -> None:
        deleted.append(name)

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    settings.watching.initial_streaming = initial_streaming  # WatchList instead of list+watch
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    settings=settings,
                    standalone=not peering,
                    peering_name="default" if peering else None,
                    namespaces=["default"],
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        assert ready.wait(timeout=15), errors
        custom = kubernetes.client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(
            GROUP,
            "v1",
            "default",
            "widgets",
            {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}},
        )

        def handled() -> dict[str, Any] | None:
            obj = custom.get_namespaced_custom_object(GROUP, "v1", "default", "widgets", "w1")
            return obj if obj.get("status", {}).get("phase") == "Ready" else None

        obj = wait_for(handled, 15, "the handler to mark w1 Ready")
        assert obj["status"]["size"] == 3
        assert "kopf.zalando.org/KopfFinalizerMarker" in obj["metadata"]["finalizers"]
        events = wait_for(
            lambda: [
                e for e in emulator.list_objects("events", "default") if e.get("involvedObject", {}).get("name") == "w1"
            ],
            10,
            "an event for w1",
        )
        assert events[0]["reason"] == "Tuned" and events[0]["message"] == "the widget is ready"

        custom.delete_namespaced_custom_object(GROUP, "v1", "default", "widgets", "w1")

        def gone() -> bool:
            try:
                custom.get_namespaced_custom_object(GROUP, "v1", "default", "widgets", "w1")
            except ApiException as e:
                return e.status == 404
            return False

        wait_for(gone, 15, "w1 to be deleted")
        assert deleted == ["w1"]
        if peering:
            peer = emulator.get_object("kopfpeerings", "default", "default", group="kopf.dev")
            assert peer is not None and peer.get("status"), "Kopf did not announce itself in the peering object"
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    assert not errors


# ----------------------------------------------------------------------------------------------
# (e) Real kubectl: apply a CRD & a CR, get, wait for a condition.
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(find_tool("kubectl") is None, reason="no kubectl binary (neither .tools/bin/kubectl nor on PATH)")
def test_kubectl(tmp_path: pathlib.Path) -> None:
    kubectl = find_tool("kubectl")
    assert kubectl is not None
    with running_emulator() as (emulator, url, kubeconfig):

        def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            cmd = [kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"), *args]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if check:
                assert result.returncode == 0, f"{cmd}: {result.stdout}{result.stderr}"
            return result

        (tmp_path / "crd.yaml").write_text(CRD_YAML)
        (tmp_path / "cr.yaml").write_text(
            f"apiVersion: {GROUP}/v1\nkind: Gadget\nmetadata: {{name: g1, labels: {{app: demo}}}}\nspec: {{mode: fast}}\n"
        )
        (tmp_path / "cm.yaml").write_text('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm1}\ndata: {a: "1"}\n')

        assert "created" in run("apply", "--validate=false", "-f", str(tmp_path / "crd.yaml")).stdout
        run("wait", "--for=condition=Established", "--timeout=10s", "crd/gadgets.example.dwcp.io")
        assert (
            "gadget.example.dwcp.io/g1 created"
            in run("apply", "--validate=false", "-f", str(tmp_path / "cr.yaml")).stdout
        )
        assert "configmap/cm1 created" in run("apply", "--validate=false", "-f", str(tmp_path / "cm.yaml")).stdout

        table = run("get", "gadgets").stdout.split("\n")
        assert table[0].split() == ["NAME", "MODE", "READY"] and table[1].split() == ["g1", "fast"]
        assert run("get", "gd", "-l", "app=demo", "-o", "name").stdout.strip() == "gadget.example.dwcp.io/g1"
        got = json.loads(run("get", "gadget", "g1", "-o", "json").stdout)
        assert got["spec"] == {"mode": "fast", "replicas": 2}  # defaulted
        assert "kubectl.kubernetes.io/last-applied-configuration" in got["metadata"]["annotations"]

        # Re-apply with changes: GET + merge PATCH of the CR (client-side apply); SMP for the ConfigMap.
        (tmp_path / "cr.yaml").write_text(
            f"apiVersion: {GROUP}/v1\nkind: Gadget\nmetadata: {{name: g1}}\nspec: {{mode: slow, replicas: 3}}\n"
        )
        assert "configured" in run("apply", "--validate=false", "-f", str(tmp_path / "cr.yaml")).stdout
        (tmp_path / "cm.yaml").write_text('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm1}\ndata: {b: "2"}\n')
        assert "configured" in run("apply", "--validate=false", "-f", str(tmp_path / "cm.yaml")).stdout
        got = json.loads(run("get", "gadget", "g1", "-o", "json").stdout)
        assert got["spec"] == {"mode": "slow", "replicas": 3} and got["metadata"]["generation"] == 2
        assert "labels" not in got["metadata"]  # removed from the applied config → removed
        assert json.loads(run("get", "cm", "cm1", "-o", "json").stdout)["data"] == {"b": "2"}

        # An invalid CR is refused with the field named.
        (tmp_path / "bad.yaml").write_text(
            f"apiVersion: {GROUP}/v1\nkind: Gadget\nmetadata: {{name: bad}}\nspec: {{mode: turbo}}\n"
        )
        bad = run("apply", "--validate=false", "-f", str(tmp_path / "bad.yaml"), check=False)
        assert bad.returncode != 0 and "spec.mode" in bad.stderr and "Unsupported value" in bad.stderr

        # kubectl wait (list+watch with a field selector) sees a condition patched in later.
        cmd = [
            kubectl,
            "--kubeconfig",
            str(kubeconfig),
            "--cache-dir",
            str(tmp_path / "cache"),
            "wait",
            "--for=condition=Ready",
            "--timeout=20s",
            "gadget/g1",
        ]
        waiter = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            assert waiter.poll() is None, waiter.communicate()
            request = urllib.request.Request(
                f"{url}/apis/{GROUP}/v1/namespaces/default/gadgets/g1/status",
                method="PATCH",
                headers={"Content-Type": "application/merge-patch+json"},
                data=json.dumps({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}).encode(),
            )
            urllib.request.urlopen(request).read()
            out, err = waiter.communicate(timeout=25)
        finally:
            if waiter.poll() is None:
                waiter.kill()
        assert waiter.returncode == 0, out + err
        assert "condition met" in out
        assert run("get", "gadgets").stdout.split("\n")[1].split() == ["g1", "slow", "True"]

        # Imperative typed commands send protobuf bodies (decoded for Namespace/ConfigMap/Secret).
        assert "namespace/team-a created" in run("create", "namespace", "team-a").stdout
        run("-n", "team-a", "create", "configmap", "cfg", "--from-literal=k=v")
        run("-n", "team-a", "create", "secret", "generic", "sec", "--from-literal=p=hunter2")
        assert emulator.get_object("configmaps", "cfg", "team-a")["data"] == {"k": "v"}
        assert emulator.get_object("secrets", "sec", "team-a")["data"] == {"p": base64.b64encode(b"hunter2").decode()}
        assert "deleted" in run("delete", "namespace", "team-a").stdout
        assert emulator.get_object("configmaps", "cfg", "team-a") is None

        assert "deleted" in run("delete", "-f", str(tmp_path / "cr.yaml")).stdout
        assert run("get", "gadgets", "-o", "name").stdout.strip() == ""
        assert emulator.internal_errors == []
