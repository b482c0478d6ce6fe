"""
A Kubernetes API emulator for tests: real HTTP, real Kopf, real kubectl, no real cluster.

Built on ``kmock`` (``kmock.KubernetesScaffold``: request parsing, the reaction DSL, error
rendering). All Kubernetes semantics live here; user-defined kmock reactions
(``emulator['get /api/v1/...'] << 500``) still take precedence over the emulated behaviour.

How to use::

    from tests.kube import running_emulator
    with running_emulator(crd_paths=['crds/']) as (emulator, url, kubeconfig_path):
        ...  # KUBECONFIG=kubeconfig_path kubectl get ns; kubernetes.config.new_client_from_config(...)

or in asyncio code: ``async with serve_emulator(KubeEmulator(...)) as url: ...``,
or standalone: ``python -m tests.kube.emulator --port 8001 --crds crds/ --kubeconfig /tmp/kc``.

What IS emulated (the gaps of stock kmock 0.8 closed here):

* metadata: uid, creationTimestamp, a monotonic cluster-wide resourceVersion on every write,
  generation for CRs/CRDs/Deployments/StatefulSets (bumped on any change outside ``metadata`` —
  and outside ``status`` when the status subresource is on — as the apiserver does);
  name / generateName / label validation; ``metadata.resourceVersion`` preconditions on
  PUT/PATCH (409 Conflict), DeleteOptions preconditions (uid/resourceVersion);
* create → 201 (409 AlreadyExists), get, list (limit/continue), replace (PUT), patch
  (merge, JSON patch incl. ``test`` ops → 422 on failure, strategic-merge ≈ merge, apply-patch
  ≈ create-or-merge), delete (finalizers → deletionTimestamp; gone when finalizers are empty),
  deletecollection; no-op writes do not bump the resourceVersion (as the apiserver);
* watch: ``resourceVersion=N`` replays only newer events from a per-resource event log, then
  streams live; RV unset/"0" → synthetic ADDED then live; ``sendInitialEvents=true`` (WatchList,
  kubectl ≥1.32 / Kopf's initial_streaming) → ADDED events then a BOOKMARK annotated
  ``k8s.io/initial-events-end: "true"``; periodic BOOKMARKs with ``allowWatchBookmarks``;
  ``timeoutSeconds``; selectors (an object leaving/entering the selection becomes DELETED/ADDED);
  410 Gone (ERROR event) when the requested RV was compacted out of the log (``history_limit``);
* label selectors (=, ==, !=, in, notin, exists, !exists), field selectors (metadata.name,
  metadata.namespace, any dotted path for built-ins, CRD ``selectableFields`` for CRs);
* the status subresource: main-resource writes keep ``.status``, ``/status`` writes change only
  ``.status``; create drops ``.status``;
* CRDs: loaded from YAML files/dirs or POSTed/applied to apiextensions.k8s.io/v1; become
  Established at once; CRs are processed as the apiserver does: null-dropping, pruning of unknown
  fields (a Warning header; 400 with ``fieldValidation=Strict``), defaulting, validation against
  openAPIV3Schema (422 Invalid with apiserver-style causes & messages); multi-version CRDs are
  served with the ``None`` conversion strategy (apiVersion rewritten only);
  strategic-merge patches of CRs are refused with 415, as in a real cluster;
* discovery: /api, /api/v1, /apis, /apis/<g>, /apis/<g>/<v> (shortNames, categories, verbs,
  ``x/status``), /version (v1.35), /healthz|/livez|/readyz;
* OpenAPI: /openapi/v3 and a document per group-version, /openapi/v2 as JSON, built from the CRDs' schemas
  (tests/kube/openapi.py): ``kubectl explain`` works, and kubectl/Helm send ``fieldValidation=Strict`` so an
  unknown field (a typo) is rejected by the server, as by a real apiserver;
* Table output for ``kubectl get``, ``kubectl get KIND NAME`` and ``kubectl get -w`` (Name, Age, CRD additionalPrinterColumns
  with simple JSONPath: ``.a.b``, ``[0]``, ``[*]``, ``[?(@.type=="Ready")]``);
* protobuf request bodies for Namespace/ConfigMap/Secret (``kubectl create ns|configmap|secret``);
* ``dryRun=All``; the apiserver's size limits (3 MiB request, 1 MiB ConfigMap/Secret data → 422,
  1.5 MiB object → 500 ``etcdserver: request is too large``);
* namespaces (default, kube-system, kube-public, kube-node-lease pre-created; creating in a missing
  namespace → 404, in a terminating one → 403; deleting a namespace deletes its content, honouring
  finalizers), configmaps (data/binaryData, 1 MiB limit), secrets (stringData → data),
  events (core v1 & events.k8s.io/v1), pods, services, serviceaccounts, deployments,
  statefulsets, leases (coordination.k8s.io/v1), Kopf's peering CRDs (kopf.dev/v1
  KopfPeering & ClusterKopfPeering); more via :meth:`KubeEmulator.register_resource`.

LIMITS (what a real cluster does and this emulator does NOT):

* no server-side apply semantics: ``application/apply-patch+yaml`` is create-or-merge-patch,
  without field managers, ownership, conflicts, or removal of fields dropped from the config;
  no ``managedFields``;
* strategic-merge patch is a JSON merge patch (+ ``$patch: delete/replace`` on maps): lists are
  replaced as a whole, never merged by ``patchMergeKey``; other ``$`` directives are ignored;
* no garbage collection: ownerReferences are stored but never cascade; ``propagationPolicy``
  (Foreground/Orphan) is ignored; deleting a CRD drops its CRs immediately (finalizers ignored);
* no controllers at all: Deployments never roll out, Pods never run, no ReplicaSets/Endpoints,
  no ServiceAccount tokens; nothing fills any ``.status`` except CRDs' and Namespaces';
* no RBAC, no authentication/authorization (any token is accepted), no admission webhooks
  (validating/mutating), no ValidatingAdmissionPolicies, no CEL ``x-kubernetes-validations``,
  no ``x-kubernetes-list-type`` uniqueness checks, no ``format`` checks, no conversion webhooks;
* schema validation covers custom resources only; built-in kinds are stored as given
  (only names, labels, ConfigMap/Secret keys & sizes are checked);
* no ``/scale``, ``/log``, ``/exec``, ``/eviction``, ``/binding`` or other subresources besides
  ``/status`` (and ``namespaces/x/finalize``); responses are JSON only; protobuf request bodies
  are decoded only for Namespace/ConfigMap/Secret (what ``kubectl create ns|cm|secret`` sends),
  other protobuf bodies (e.g. ``kubectl create deployment``) and CBOR get 415;
* no graceful deletion periods (``gracePeriodSeconds`` is ignored: deletion is immediate unless
  finalizers are present); no TTLs (events never expire); no ``resourceVersionMatch`` semantics
  on lists (always the latest state); ``continue`` tokens page over the live state, not a snapshot;
* built-in kinds have open OpenAPI schemas (see tests/kube/openapi.py); /openapi/v2 is JSON only (kubectl asks
  for protobuf and uses v3); no aggregated discovery (clients fall back to the legacy discovery endpoints);
* Tables of built-in kinds have only NAME/AGE (no pod STATUS, no deployment READY columns);
* namespaces get no ``spec.finalizers: [kubernetes]``; a namespace disappears as soon as its last
  object is gone;
* everything is in memory in one process; the event log holds ``history_limit`` events
  per resource type (older RVs → 410 Gone).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import collections
import concurrent.futures
import contextlib
import copy
import datetime
import json
import logging
import pathlib
import random
import re
import tempfile
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal.rendering import StreamingError  # not re-exported by kmock 0.8

from . import openapi, patching, protobuf, selectors
from . import schema as schemas

logger = logging.getLogger(__name__)

__all__ = [
    "ApiError",
    "ResourceType",
    "KubeEmulator",
    "EmulatorServer",
    "serve_emulator",
    "running_emulator",
    "write_kubeconfig",
    "KOPF_PEERING_CRDS",
]

SERVER_VERSION = {
    "major": "1",
    "minor": "35",
    "gitVersion": "v1.35.0-kmock",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2025-12-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
MAX_BODY_SIZE = 3 * 1024 * 1024  # the apiserver's request body limit
MAX_OBJECT_SIZE = 1536 * 1024  # etcd's default request limit
MAX_CONFIG_DATA = 1024 * 1024  # ConfigMap/Secret data limit

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class ApiError(Exception):
    """An error answered as a Kubernetes ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


class _ServeNatively(Exception):
    """Internal: raised by the lowest-priority kmock reaction to hand the request to the emulator."""


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return "<unknown>"
    seconds = int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds())
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


@attrs.define(kw_only=True)
class ResourceType:
    """A served resource: a built-in one or one defined by a CRD."""

    group: str
    versions: list[str]  # served versions; the first one is the preferred/storage one
    plural: str
    kind: str
    singular: str = ""
    list_kind: str = ""
    namespaced: bool = True
    short_names: list[str] = attrs.field(factory=list)
    categories: list[str] = attrs.field(factory=list)
    status_subresource: bool = False
    has_generation: bool = False
    custom: bool = False  # defined by a CRD (unstructured, schema-validated, no strategic merge)
    schemas: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # version -> openAPIV3Schema
    printer_columns: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)  # version -> cols
    selectable_fields: list[str] = attrs.field(factory=list)
    crd_name: str | None = None

    def __attrs_post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()
        self.list_kind = self.list_kind or f"{self.kind}List"

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """As in the apiserver's messages: ``widgets.example.dwcp.io`` or ``configmaps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def api_version(self, version: str | None = None) -> str:
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version


def _builtin(
    group: str,
    plural: str,
    kind: str,
    *,
    version: str = "v1",
    namespaced: bool = True,
    short: Iterable[str] = (),
    status: bool = False,
    generation: bool = False,
    categories: Iterable[str] = (),
) -> ResourceType:
    return ResourceType(
        group=group,
        versions=[version],
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        short_names=list(short),
        categories=list(categories),
        status_subresource=status,
        has_generation=generation,
    )


def _request_resource(path: str) -> str:
    """What a request is about, for the request counts: `configmaps`, `optimizationruns/status`, `discovery`."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return "/".join(parts[:2]) or "/"
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if not rest:
        return "discovery"
    return rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")


def _builtin_types() -> list[ResourceType]:
    return [
        _builtin("", "namespaces", "Namespace", namespaced=False, short=["ns"], status=True),
        _builtin("", "configmaps", "ConfigMap", short=["cm"]),
        _builtin("", "secrets", "Secret"),
        _builtin("", "events", "Event", short=["ev"]),
        _builtin("", "pods", "Pod", short=["po"], status=True, categories=["all"]),
        _builtin("", "services", "Service", short=["svc"], status=True, categories=["all"]),
        _builtin("", "serviceaccounts", "ServiceAccount", short=["sa"]),
        _builtin(
            "apps", "deployments", "Deployment", short=["deploy"], status=True, generation=True, categories=["all"]
        ),
        _builtin(
            "apps", "statefulsets", "StatefulSet", short=["sts"], status=True, generation=True, categories=["all"]
        ),
        _builtin("events.k8s.io", "events", "Event", short=["ev"]),
        _builtin("coordination.k8s.io", "leases", "Lease"),
        _builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
            short=["crd", "crds"],
            status=True,
            generation=True,
            categories=["api-extensions"],
        ),
    ]


def _kopf_peering_crd(scope: str, kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "scope": scope,
            "group": "kopf.dev",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }


#: The CRDs of Kopf's peering (as in Kopf's docs/peering.yaml), pre-registered by default.
KOPF_PEERING_CRDS = [
    _kopf_peering_crd("Cluster", "ClusterKopfPeering", "clusterkopfpeerings"),
    _kopf_peering_crd("Namespaced", "KopfPeering", "kopfpeerings"),
]


@attrs.frozen
class _Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None


@attrs.frozen
class _Target:
    """A parsed resource URL."""

    rtype: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _jsonpath(obj: Any, expr: str) -> Any:
    """A tiny JSONPath subset for printer columns: ``.a.b``, ``[0]``, ``[*]``, ``[?(@.k=="v")]``."""
    expr = expr.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1]
    token_re = re.compile(
        r"\.(?P<field>[A-Za-z0-9_\-]+)|\[(?P<index>-?\d+)\]|\[\*\]"
        r'|\[\?\(@\.(?P<fpath>[A-Za-z0-9_.\-]+)\s*==\s*["\'](?P<fvalue>[^"\']*)["\']\)\]'
    )
    values = [obj]
    pos = 0
    while pos < len(expr):
        m = token_re.match(expr, pos)
        if not m:
            return None
        pos = m.end()
        result = []
        for value in values:
            if m["field"] is not None:
                if isinstance(value, dict) and m["field"] in value:
                    result.append(value[m["field"]])
            elif m["index"] is not None:
                if isinstance(value, list) and -len(value) <= int(m["index"]) < len(value):
                    result.append(value[int(m["index"])])
            elif m["fpath"] is not None:
                if isinstance(value, list):
                    for item in value:
                        found = _jsonpath(item, "." + m["fpath"])
                        if found is not None and str(found) == m["fvalue"]:
                            result.append(item)
            else:  # [*]
                if isinstance(value, list):
                    result.extend(value)
                elif isinstance(value, dict):
                    result.extend(value.values())
        values = result
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@attrs.define(kw_only=True, repr=False)
class KubeEmulator(kmock.KubernetesScaffold):
    """
    An in-memory Kubernetes apiserver: see the module docstring for what is (not) emulated.

    Thread-safety: the public methods may be called from any thread; they are executed
    in the serving event loop when the emulator is being served.
    """

    crd_paths: Iterable[str | pathlib.Path] = ()
    kopf_peering: bool = True  # pre-register Kopf's peering CRDs
    enforce_namespaces: bool = True  # namespaced objects need an existing namespace
    prune_unknown_fields: bool = True  # as the apiserver does for CRs (structural schemas)
    bookmark_interval: float = 5.0  # seconds between BOOKMARK events on idle watches
    history_limit: int = 10_000  # events kept per resource type (for watches from an old RV)
    server_version: dict[str, str] = attrs.field(factory=lambda: dict(SERVER_VERSION))

    _types: dict[tuple[str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _store: dict[tuple[str, str], dict[tuple[str | None, str], dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _logs: dict[tuple[str, str], list[_Event]] = attrs.field(factory=dict, init=False)
    _log_offsets: dict[tuple[str, str], int] = attrs.field(factory=dict, init=False)
    _log_floors: dict[tuple[str, str], int] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _wakeup: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False)
    _loop_thread: int | None = attrs.field(default=None, init=False)
    _mutex: threading.RLock = attrs.field(factory=threading.RLock, init=False)

    keep_requests: int = 10_000  # requests kept for kmock assertions (e.g. `len(emulator["get /api"])`)

    #: Unexpected exceptions inside the emulator (answered as 500); assert it is empty in tests.
    internal_errors: list[BaseException] = attrs.field(factory=list, init=False)
    # (method, resource, watch?) -> requests served: what a client costs the API server (bench/operator_scale.py)
    requests: collections.Counter = attrs.field(factory=collections.Counter, init=False)

    def __repr__(self) -> str:
        objects = sum(len(objs) for objs in self._store.values())
        return f"<KubeEmulator rv={self._rv} types={len(self._types)} objects={objects}>"

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # All requests not intercepted by user-defined kmock reactions go to the emulator.
        (self.fallback**1) << _ServeNatively
        for rtype in _builtin_types():
            self._types[rtype.key] = rtype
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._create(
                self._types[("", "namespaces")],
                "v1",
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                {},
            )
        if self.kopf_peering:
            for crd in KOPF_PEERING_CRDS:
                self.create_object(crd)
        if self.crd_paths:
            self.load_crds(*self.crd_paths)

    # ------------------------------------------------------------------------------------------
    # Public, thread-safe API for tests.
    # ------------------------------------------------------------------------------------------

    def _sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = self._loop
        if loop is None or not loop.is_running() or self._loop_thread == threading.get_ident():
            with self._mutex:
                return fn(*args, **kwargs)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as e:
                future.set_exception(e)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=60)

    def register_resource(self, rtype: ResourceType) -> None:
        """Serve an extra built-in-like resource (no schema, unless given)."""
        self._sync(self._types.__setitem__, rtype.key, rtype)

    def load_crds(self, *paths: str | pathlib.Path) -> list[str]:
        """Load CRDs from YAML/JSON files or directories of them; returns the CRD names."""
        names: list[str] = []
        for doc in _load_documents(paths):
            if doc.get("kind") == "CustomResourceDefinition":
                names.append(self.apply_object(doc)["metadata"]["name"])
        return names

    def create_object(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object as if POSTed (validated, defaulted); returns the stored object."""
        return self._sync(self._create_from_manifest, copy.deepcopy(dict(obj)), False)

    def apply_object(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or merge-patch an object (a simplified ``kubectl apply``)."""
        return self._sync(self._create_from_manifest, copy.deepcopy(dict(obj)), True)

    def get_object(
        self, plural: str, name: str, namespace: str | None = None, *, group: str = ""
    ) -> dict[str, Any] | None:
        """A deep copy of a stored object, or None."""

        def get() -> dict[str, Any] | None:
            obj = self._store.get((group, plural), {}).get((namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

        return self._sync(get)

    def list_objects(self, plural: str, namespace: str | None = None, *, group: str = "") -> list[dict[str, Any]]:
        """Deep copies of the stored objects of a resource (all namespaces if None)."""

        def lst() -> list[dict[str, Any]]:
            objs = self._store.get((group, plural), {})
            return [
                copy.deepcopy(o)
                for (ns, _), o in sorted(objs.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
                if namespace is None or ns == namespace
            ]

        return self._sync(lst)

    @property
    def resource_version(self) -> int:
        """The latest cluster-wide resourceVersion."""
        return self._rv

    def resource_types(self) -> list[ResourceType]:
        return self._sync(lambda: list(self._types.values()))

    # ------------------------------------------------------------------------------------------
    # Serving (kmock integration).
    # ------------------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """As ``kmock.RawHandler.__call__``, but tolerant to URLs kmock 0.8 cannot parse."""
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            try:
                request = await kmock.Request._parse(raw_request, id=len(self._requests))
            except ValueError:  # kmock 0.8 fails on GET /api/v1/namespaces & on binary (protobuf) bodies
                request = await self._parse_plain(raw_request)
            self._requests.append(request)
            if self.keep_requests and len(self._requests) > self.keep_requests:
                del self._requests[: len(self._requests) - self.keep_requests // 2]  # for long-running use
            try:
                return await self._handle(request)
            except StreamingError as e:
                raw_response = e.args[0]
                raise (e.__cause__ or e) from None
        except Exception as e:
            if not self._errors:
                raise
            self._errors[-1].append(e)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _parse_plain(self, raw_request: aiohttp.web.BaseRequest) -> kmock.Request:
        body = await raw_request.read()
        text = body.decode("utf-8", errors="replace")  # protobuf bodies are binary
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        return kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=body,
            text=text,
        )

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        try:
            return await super()._handle(request)
        except _ServeNatively:
            return await self._serve(request)

    def _bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closing = False

    def _close_watches(self) -> None:
        self._closing = True
        self._notify()

    def _notify(self) -> None:
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    async def _serve(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        watch = request.url.query.get("watch") in ("true", "1")
        self.requests[(str(request.method.value).upper(), _request_resource(request.url.path), watch)] += 1
        try:
            return await self._route(request)
        except ApiError as e:
            return self._json(e.as_status(), status=e.code)
        except selectors.SelectorError as e:
            return self._json(ApiError(400, "BadRequest", str(e)).as_status(), status=400)
        except Exception as e:
            logger.exception("Internal error in the Kubernetes emulator")
            self.internal_errors.append(e)
            error = ApiError(
                500, "InternalError", f"emulator failure: {e!r}", {"causes": [{"message": traceback.format_exc()}]}
            )
            return self._json(error.as_status(), status=500)

    @staticmethod
    def _json(data: Any, status: int = 200, warnings: Iterable[str] = ()) -> aiohttp.web.Response:
        response = aiohttp.web.json_response(data, status=status)
        for warning in warnings:
            response.headers.add("Warning", f"299 - {json.dumps(warning)}")
        return response

    async def _route(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip("/") or "/"
        method = str(request.method.value).upper()
        parts = [p for p in path.split("/") if p]

        if method == "GET":
            if path == "/":
                return self._json({"paths": self._root_paths()})
            if path == "/version":
                return self._json(self.server_version)
            if parts and parts[0] in ("healthz", "livez", "readyz"):
                return aiohttp.web.Response(text="ok")
            if parts[:2] == ["openapi", "v3"]:
                return self._openapi_v3("/".join(parts[2:]))
            if parts[:2] == ["openapi", "v2"] and "json" in request.headers.get("Accept", "application/json"):
                return self._json(openapi.v2_document(list(self._types.values())))
            if parts and parts[0] in ("openapi", "swagger.json", ".well-known"):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if parts == ["api"]:
                return self._json(self._api_versions(request))
            if parts == ["apis"]:
                return self._json(self._group_list())
            if len(parts) == 2 and parts[0] == "api":
                return self._json(self._resource_list("", parts[1]))
            if len(parts) == 2 and parts[0] == "apis":
                return self._json(self._api_group(parts[1]))
            if len(parts) == 3 and parts[0] == "apis":
                return self._json(self._resource_list(parts[1], parts[2]))

        target, watch_prefix = self._parse_target(parts)
        params = dict(request.params)
        if method == "GET":
            if watch_prefix or params.get("watch") in ("true", "1"):
                return await self._watch(request, target, params)
            if target.name is None:
                return self._list_response(request, target, params)
            obj = self._present(target.rtype, target.version, self._get(target))
            if "as=Table" in request.headers.get("Accept", ""):  # `kubectl get KIND NAME`: a one-row Table
                return self._json(
                    self._table(target, [obj], {"resourceVersion": _meta(obj).get("resourceVersion")}, params)
                )
            return self._json(obj)
        if watch_prefix:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if method == "POST" and target.name is None and target.subresource is None:
            body = self._body(request)
            obj, warnings = self._create(target.rtype, target.version, target.namespace, body, params)
            return self._json(self._present(target.rtype, target.version, obj), status=201, warnings=warnings)
        if method == "PUT" and target.name is not None:
            body = self._body(request)
            obj, warnings = self._replace(target, body, params)
            return self._json(self._present(target.rtype, target.version, obj), warnings=warnings)
        if method == "PATCH" and target.name is not None:
            body = self._body(request)
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            obj, warnings, code = self._patch(target, content_type, body, params)
            return self._json(self._present(target.rtype, target.version, obj), status=code, warnings=warnings)
        if method == "DELETE" and target.name is not None and target.subresource is None:
            options = request.data if isinstance(request.data, dict) else {}
            result = self._delete(target, options, params)
            return self._json(result)
        if method == "DELETE" and target.name is None:
            options = request.data if isinstance(request.data, dict) else {}
            return self._json(self._delete_collection(target, options, params))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    @staticmethod
    def _body(request: kmock.Request) -> Any:
        content_type = request.headers.get("Content-Type", "").lower()
        if "protobuf" in content_type:
            try:
                return protobuf.decode(request.body)
            except protobuf.UnsupportedProtobuf as e:
                raise ApiError(
                    415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {e}"
                ) from None
        if "cbor" in content_type:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"application/json, application/yaml (got {content_type})",
            )
        if request.data is not None and not isinstance(request.data, (dict, list)):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object or list")
        if request.data is not None:
            return request.data
        if not request.body:
            raise ApiError(400, "BadRequest", "the request body is empty")
        try:
            return yaml.safe_load(request.text)
        except yaml.YAMLError as e:
            raise ApiError(400, "BadRequest", f"unable to decode the request body: {e}") from None

    def _parse_target(self, parts: list[str]) -> tuple[_Target, bool]:
        not_found = ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise not_found
        watch_prefix = False
        if rest and rest[0] == "watch":
            watch_prefix, rest = True, rest[1:]
        namespace: str | None = None
        if (
            group == ""
            and rest
            and rest[0] == "namespaces"
            and (len(rest) <= 2 or (len(rest) == 3 and rest[2] in ("status", "finalize")))
        ):
            plural, name, sub = "namespaces", (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
        elif rest and rest[0] == "namespaces" and len(rest) >= 3:
            namespace, plural = rest[1], rest[2]
            name = rest[3] if len(rest) > 3 else None
            sub = "/".join(rest[4:]) or None
        elif rest:
            plural = rest[0]
            name = rest[1] if len(rest) > 1 else None
            sub = "/".join(rest[2:]) or None
        else:
            raise not_found
        rtype = self._types.get((group, plural))
        if rtype is None or version not in rtype.versions:
            raise not_found
        if namespace is not None and not rtype.namespaced:
            raise not_found
        if rtype.namespaced and namespace is None and name is not None:
            raise not_found
        if sub is not None:
            allowed = {"status"} if rtype.status_subresource else set()
            if rtype.key == ("", "namespaces"):
                allowed.add("finalize")
            if sub not in allowed:
                raise not_found
        return _Target(rtype, version, namespace, name, sub), watch_prefix

    # ------------------------------------------------------------------------------------------
    # Discovery.
    # ------------------------------------------------------------------------------------------

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rtype in self._types.values():
            if rtype.group:
                versions = groups.setdefault(rtype.group, [])
                for version in rtype.versions:
                    if version not in versions:
                        versions.append(version)
        return groups

    def _openapi_v3(self, gv: str) -> aiohttp.web.Response:
        """``/openapi/v3`` (the group-versions) or one group-version's document (tests/kube/openapi.py)."""
        rtypes = list(self._types.values())
        if not gv:
            return self._json(openapi.v3_paths(rtypes))
        for group, versions in [("", ["v1"]), *self._groups().items()]:
            for version in versions:
                if openapi.gv_path(group, version) == gv:
                    return self._json(openapi.v3_document(rtypes, group, version))
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _root_paths(self) -> list[str]:
        paths = {"/api", "/api/v1", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi/v2", "/openapi/v3"}
        for group, versions in self._groups().items():
            paths.add(f"/apis/{group}")
            paths.update(f"/apis/{group}/{v}" for v in versions)
        return sorted(paths)

    @staticmethod
    def _api_versions(request: kmock.Request) -> dict[str, Any]:
        host = request.url.host or "127.0.0.1"
        port = request.url.port
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{host}:{port}"}],
        }

    def _group_entry(self, group: str, versions: list[str]) -> dict[str, Any]:
        return {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    def _group_list(self) -> dict[str, Any]:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group_entry(g, vs) for g, vs in self._groups().items()],
        }

    def _api_group(self, group: str) -> dict[str, Any]:
        versions = self._groups().get(group)
        if not versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_entry(group, versions)}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        rtypes = [r for r in self._types.values() if r.group == group and version in r.versions]
        if not rtypes:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources: list[dict[str, Any]] = []
        for r in rtypes:
            entry: dict[str, Any] = {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(ALL_VERBS),
            }
            if r.short_names:
                entry["shortNames"] = list(r.short_names)
            if r.categories:
                entry["categories"] = list(r.categories)
            resources.append(entry)
            subresources = ["status"] if r.status_subresource else []
            if r.key == ("", "namespaces"):
                subresources.append("finalize")
            for sub in subresources:
                resources.append(
                    {
                        "name": f"{r.plural}/{sub}",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"] if sub == "status" else ["update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # ------------------------------------------------------------------------------------------
    # Storage, event log, presentation.
    # ------------------------------------------------------------------------------------------

    def _objects(self, rtype: ResourceType) -> dict[tuple[str | None, str], dict[str, Any]]:
        return self._store.setdefault(rtype.key, {})

    def _present(self, rtype: ResourceType, version: str, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as served in the requested version (the ``None`` conversion strategy)."""
        api_version = rtype.api_version(version)
        if obj.get("apiVersion") == api_version:
            return obj
        return {**obj, "apiVersion": api_version}

    def _commit(
        self, rtype: ResourceType, event_type: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Persist a write: new RV, store, event log, wake up the watchers."""
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        key = (meta.get("namespace") if rtype.namespaced else None, meta["name"])
        if event_type == "DELETED":
            self._objects(rtype).pop(key, None)
        else:
            self._objects(rtype)[key] = obj
        log = self._logs.setdefault(rtype.key, [])
        log.append(_Event(self._rv, event_type, obj, old))
        if self.history_limit and len(log) > self.history_limit:
            drop = len(log) - self.history_limit // 2
            self._log_floors[rtype.key] = log[drop - 1].rv
            self._log_offsets[rtype.key] = self._log_offsets.get(rtype.key, 0) + drop
            self._logs[rtype.key] = log[drop:]
        self._notify()
        return obj

    def _get(self, target: _Target) -> dict[str, Any]:
        assert target.name is not None
        obj = self._objects(target.rtype).get((target.namespace, target.name))
        if obj is None:
            raise self._not_found(target.rtype, target.name)
        return obj

    @staticmethod
    def _not_found(rtype: ResourceType, name: str) -> ApiError:
        return ApiError(
            404,
            "NotFound",
            f'{rtype.qualified} "{name}" not found',
            {"name": name, "group": rtype.group, "kind": rtype.plural},
        )

    @staticmethod
    def _conflict(
        rtype: ResourceType,
        name: str,
        why: str = ("the object has been modified; please apply your changes to the latest version and try again"),
    ) -> ApiError:
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rtype.qualified} "{name}": {why}',
            {"name": name, "group": rtype.group, "kind": rtype.plural},
        )

    @staticmethod
    def _invalid(rtype: ResourceType, name: str, causes: list[dict[str, str]]) -> ApiError:
        texts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
        summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        return ApiError(
            422,
            "Invalid",
            f'{rtype.qualified_kind} "{name}" is invalid: {summary}',
            {"name": name, "group": rtype.group, "kind": rtype.kind, "causes": causes},
        )

    # ------------------------------------------------------------------------------------------
    # Reading: list & watch.
    # ------------------------------------------------------------------------------------------

    def _field_allowed(self, rtype: ResourceType) -> Callable[[str], bool] | None:
        if not rtype.custom:
            return None  # lenient for built-ins: any dotted path
        allowed = {"metadata.name", "metadata.namespace"} | {f.lstrip(".") for f in rtype.selectable_fields}
        return allowed.__contains__

    def _matcher(self, target: _Target, params: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
        labels = selectors.parse_label_selector(params.get("labelSelector"))
        fields = selectors.parse_field_selector(params.get("fieldSelector"), self._field_allowed(target.rtype))

        def matches(obj: Mapping[str, Any]) -> bool:
            meta = _meta(obj)
            if target.namespace is not None and meta.get("namespace") != target.namespace:
                return False
            if target.name is not None and meta.get("name") != target.name:
                return False
            return labels(obj) and fields(obj)

        return matches

    def _list(self, target: _Target, params: Mapping[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        matches = self._matcher(target, params)
        items = sorted(
            (obj for obj in self._objects(target.rtype).values() if matches(obj)),
            key=lambda o: (_meta(o).get("namespace") or "", _meta(o)["name"]),
        )
        list_meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        token = params.get("continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()).decode())["start"]
            except Exception:
                raise ApiError(400, "BadRequest", "continue key is not valid") from None
            items = [o for o in items if [_meta(o).get("namespace") or "", _meta(o)["name"]] > start]
        try:
            limit = int(params.get("limit") or 0)
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid limit: {params.get('limit')!r}") from None
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]
            start = [_meta(last).get("namespace") or "", _meta(last)["name"]]
            list_meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": start}).encode()).decode()
            list_meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return [self._present(target.rtype, target.version, o) for o in items], list_meta

    def _list_response(
        self, request: kmock.Request, target: _Target, params: Mapping[str, str]
    ) -> aiohttp.web.Response:
        items, list_meta = self._list(target, params)
        accept = request.headers.get("Accept", "")
        if "as=Table" in accept:
            return self._json(self._table(target, items, list_meta, params))
        return self._json(
            {
                "kind": target.rtype.list_kind,
                "apiVersion": target.rtype.api_version(target.version),
                "metadata": list_meta,
                "items": items,
            }
        )

    def _table(
        self, target: _Target, items: list[dict[str, Any]], list_meta: dict[str, Any], params: Mapping[str, str]
    ) -> dict[str, Any]:
        columns: list[dict[str, Any]] = [
            {
                "name": "Name",
                "type": "string",
                "format": "name",
                "priority": 0,
                "description": "Name must be unique within a namespace.",
            },
        ]
        custom_columns = target.rtype.printer_columns.get(target.version, [])
        for col in custom_columns:
            columns.append(
                {
                    "name": col.get("name", ""),
                    "type": col.get("type", "string"),
                    "format": col.get("format", ""),
                    "priority": col.get("priority", 0),
                    "description": col.get("description", ""),
                }
            )
        if not custom_columns:
            columns.append(
                {
                    "name": "Age",
                    "type": "string",
                    "format": "",
                    "priority": 0,
                    "description": "CreationTimestamp of the object.",
                }
            )
        include = params.get("includeObject", "Metadata")
        rows = []
        for obj in items:
            cells: list[Any] = [_meta(obj).get("name")]
            for col in custom_columns:
                value = _jsonpath(obj, col.get("jsonPath", ""))
                if col.get("type") == "date" and isinstance(value, str):
                    value = _age(value)
                cells.append(value)
            if not custom_columns:
                cells.append(_age(_meta(obj).get("creationTimestamp")))
            row: dict[str, Any] = {"cells": cells}
            if include == "Object":
                row["object"] = obj
            elif include != "None":
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": _meta(obj),
                }
            rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": list_meta,
            "columnDefinitions": columns,
            "rows": rows,
        }

    async def _watch(
        self,
        request: kmock.Request,
        target: _Target,
        params: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        rtype = target.rtype
        matches = self._matcher(target, params)
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        send_initial = params.get("sendInitialEvents") in ("true", "1")
        rv_param = params.get("resourceVersion") or ""
        if send_initial and not bookmarks:
            raise ApiError(422, "Invalid", "sendInitialEvents requires setting allowWatchBookmarks to true")
        if send_initial and params.get("resourceVersionMatch") != "NotOlderThan":
            raise ApiError(422, "Invalid", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")
        start_rv: int | None = None
        if rv_param not in ("", "0") and not send_initial:
            try:
                start_rv = int(rv_param)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resource version: {rv_param!r}") from None
        timeout: float | None = None
        if params.get("timeoutSeconds"):
            timeout = float(params["timeoutSeconds"])

        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        raw = request._raw_request
        assert raw is not None
        await response.prepare(raw)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        key = rtype.key

        as_table = "as=Table" in request.headers.get("Accept", "")

        def present(obj: dict[str, Any]) -> dict[str, Any]:
            obj = self._present(rtype, target.version, obj)
            if as_table:  # `kubectl get -w`: every event's object is a one-row Table
                return self._table(target, [obj], {"resourceVersion": _meta(obj).get("resourceVersion")}, params)
            return obj

        def bookmark(initial_end: bool = False) -> dict[str, Any]:
            meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
            if initial_end:
                meta["annotations"] = {INITIAL_EVENTS_END: "true"}
            return {
                "type": "BOOKMARK",
                "object": {"kind": rtype.kind, "apiVersion": rtype.api_version(target.version), "metadata": meta},
            }

        def gone(rv: int) -> dict[str, Any]:
            return {
                "type": "ERROR",
                "object": ApiError(
                    410, "Expired", f"too old resource version: {rv} ({self._log_floors.get(key, 0) + 1})"
                ).as_status(),
            }

        async def send(*events: dict[str, Any]) -> None:
            if events:
                await response.write(b"".join(json.dumps(e).encode() + b"\n" for e in events))

        try:
            log = self._logs.setdefault(key, [])
            offset = self._log_offsets.get(key, 0)
            if start_rv is not None:
                if start_rv < self._log_floors.get(key, 0):
                    await send(gone(start_rv))
                    return response
                position = offset + bisect.bisect_right(log, start_rv, key=lambda e: e.rv)
            else:
                position = offset + len(log)
                initial = sorted(
                    (o for o in self._objects(rtype).values() if matches(o)),
                    key=lambda o: int(_meta(o).get("resourceVersion", 0)),
                )
                events = [{"type": "ADDED", "object": present(o)} for o in initial]
                if send_initial:
                    events.append(bookmark(initial_end=True))
                await send(*events)

            while not self._closing and self._types.get(key) is rtype:
                offset = self._log_offsets.get(key, 0)
                log = self._logs.get(key, [])
                if position < offset:
                    await send(gone(start_rv or 0))
                    break
                if position < offset + len(log):
                    batch = log[position - offset :]
                    position += len(batch)
                    await send(*(e for e in (self._translate(ev, matches, present) for ev in batch) if e))
                    continue
                if deadline is not None and loop.time() >= deadline:
                    break
                if raw.transport is None or raw.transport.is_closing():
                    break
                wakeup = self._wakeup
                wait = self.bookmark_interval if bookmarks else 1.0
                if deadline is not None:
                    wait = min(wait, max(deadline - loop.time(), 0))
                try:
                    await asyncio.wait_for(wakeup.wait(), timeout=wait)
                except TimeoutError:
                    if bookmarks and (deadline is None or loop.time() < deadline):
                        await send(bookmark())
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
        except ConnectionError:
            pass  # the client has gone
        return response

    @staticmethod
    def _translate(
        ev: _Event, matches: Callable[[Mapping[str, Any]], bool], present: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any] | None:
        now = matches(ev.obj)
        if ev.type == "ADDED":
            return {"type": "ADDED", "object": present(ev.obj)} if now else None
        if ev.type == "DELETED":
            return {"type": "DELETED", "object": present(ev.obj)} if now else None
        before = ev.old is not None and matches(ev.old)
        if now and before:
            return {"type": "MODIFIED", "object": present(ev.obj)}
        if now:
            return {"type": "ADDED", "object": present(ev.obj)}
        if before:
            return {"type": "DELETED", "object": present(ev.obj)}
        return None

    # ------------------------------------------------------------------------------------------
    # Writing: create, replace, patch, delete.
    # ------------------------------------------------------------------------------------------

    def _check_kind(self, rtype: ResourceType, body: Any) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        kind = body.get("kind")
        api_version = body.get("apiVersion")
        if rtype.custom and (not kind or not api_version):
            missing = "Kind" if not kind else "apiVersion"
            raise ApiError(400, "BadRequest", f"Object '{missing}' is missing in '{json.dumps(body)[:200]}'")
        if kind and kind != rtype.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rtype.api_version()}) or the kind ({kind}) does not match {rtype.kind}",
            )
        if api_version:
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            version = api_version.rsplit("/", 1)[-1]
            if group != rtype.group or version not in rtype.versions:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"the API version in the data ({api_version}) does not match the expected "
                    f"API version ({rtype.api_version()})",
                )

    def _validate_meta(self, rtype: ResourceType, obj: dict[str, Any]) -> list[dict[str, str]]:
        meta = _meta(obj)
        causes: list[dict[str, str]] = []
        name = meta.get("name", "")
        if rtype.key == ("", "namespaces"):
            ok = len(name) <= 63 and _DNS1123_LABEL.match(name)
            what = (
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                "and must start and end with an alphanumeric character"
            )
        else:
            ok = len(name) <= 253 and _DNS1123_SUBDOMAIN.match(name)
            what = (
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character"
            )
        if not ok:
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f"Invalid value: {json.dumps(name)}: {what}",
                }
            )
        for key, value in (meta.get("labels") or {}).items():
            prefix, _, local = key.rpartition("/")
            if (
                not _QUALIFIED_NAME.match(local)
                or len(local) > 63
                or (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)))
            ):
                causes.append(
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.labels",
                        "message": f"Invalid value: {json.dumps(key)}: name part must consist of alphanumeric "
                        f"characters, '-', '_' or '.', and must start and end with an alphanumeric "
                        f"character (at most 63 characters)",
                    }
                )
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                causes.append(
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.labels",
                        "message": f"Invalid value: {json.dumps(value)}: a valid label must be an empty string "
                        f"or consist of alphanumeric characters, '-', '_' or '.', and must start "
                        f"and end with an alphanumeric character (at most 63 characters)",
                    }
                )
        for field in ("labels", "annotations"):
            values = meta.get(field)
            if values is not None and (
                not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
            ):
                causes.append(
                    {
                        "reason": "FieldValueTypeInvalid",
                        "field": f"metadata.{field}",
                        "message": "Invalid value: must be a map of strings",
                    }
                )
        finalizers = meta.get("finalizers")
        if finalizers is not None and (
            not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)
        ):
            causes.append(
                {
                    "reason": "FieldValueTypeInvalid",
                    "field": "metadata.finalizers",
                    "message": "Invalid value: must be a list of strings",
                }
            )
        return causes

    def _validate_config_data(self, rtype: ResourceType, obj: dict[str, Any]) -> list[dict[str, str]]:
        causes: list[dict[str, str]] = []
        if rtype.key not in (("", "configmaps"), ("", "secrets")):
            return causes
        size = 0
        fields = ("data", "binaryData") if rtype.plural == "configmaps" else ("data",)
        seen: set[str] = set()
        for field in fields:
            values = obj.get(field) or {}
            if not isinstance(values, dict):
                causes.append(
                    {"reason": "FieldValueTypeInvalid", "field": field, "message": "Invalid value: must be a map"}
                )
                continue
            for key, value in values.items():
                if not _CONFIG_KEY.match(key) or len(key) > 253:
                    causes.append(
                        {
                            "reason": "FieldValueInvalid",
                            "field": f"{field}[{key}]",
                            "message": f"Invalid value: {json.dumps(key)}: a valid config key must consist of "
                            f"alphanumeric characters, '-', '_' or '.'",
                        }
                    )
                if key in seen:
                    causes.append(
                        {
                            "reason": "FieldValueDuplicate",
                            "field": f"{field}[{key}]",
                            "message": f"Duplicate value: {json.dumps(key)}",
                        }
                    )
                seen.add(key)
                if not isinstance(value, str):
                    causes.append(
                        {
                            "reason": "FieldValueTypeInvalid",
                            "field": f"{field}[{key}]",
                            "message": "Invalid value: must be a string",
                        }
                    )
                    continue
                if field == "binaryData" or rtype.plural == "secrets":
                    try:
                        size += len(base64.b64decode(value.encode(), validate=True))
                    except ValueError:
                        causes.append(
                            {
                                "reason": "FieldValueInvalid",
                                "field": f"{field}[{key}]",
                                "message": "Invalid value: illegal base64 data",
                            }
                        )
                else:
                    size += len(value.encode())
        if size > MAX_CONFIG_DATA:
            causes.append(
                {
                    "reason": "FieldValueTooLong",
                    "field": "",
                    "message": f"Too long: must have at most {MAX_CONFIG_DATA} bytes",
                }
            )
        return causes

    def _finalize_object(
        self, rtype: ResourceType, version: str, obj: dict[str, Any], params: Mapping[str, str]
    ) -> tuple[dict[str, Any], list[str]]:
        """Type-specific processing, schema processing, validation. Raises 422/400."""
        name = _meta(obj).get("name", "")
        if rtype.key == ("", "secrets") and isinstance(obj.get("stringData"), dict):
            data = dict(obj.get("data") or {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
        warnings: list[str] = []
        causes = self._validate_meta(rtype, obj) + self._validate_config_data(rtype, obj)
        if rtype.custom:
            schema = rtype.schemas.get(version)
            obj, pruned, schema_causes = schemas.process(obj, schema, prune_unknown=self.prune_unknown_fields)
            if pruned and params.get("fieldValidation") == "Strict":
                raise ApiError(
                    400, "BadRequest", "; ".join(f'strict decoding error: unknown field "{p}"' for p in pruned)
                )
            if pruned and params.get("fieldValidation") != "Ignore":
                warnings.extend(f'unknown field "{p}"' for p in pruned)
            causes += schema_causes
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            causes += self._crd_causes(obj)
        if causes:
            raise self._invalid(rtype, name, causes)
        if len(json.dumps(obj)) > MAX_OBJECT_SIZE:
            raise ApiError(500, "InternalError", "etcdserver: request is too large")
        return obj, warnings

    def _require_namespace(self, namespace: str) -> None:
        if not self.enforce_namespaces:
            return
        ns = self._objects(self._types[("", "namespaces")]).get((None, namespace))
        if ns is None:
            raise ApiError(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )
        if _meta(ns).get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
                {"name": namespace, "kind": "namespaces"},
            )

    def _create(
        self, rtype: ResourceType, version: str, namespace: str | None, body: Any, params: Mapping[str, str]
    ) -> tuple[dict[str, Any], list[str]]:
        self._check_kind(rtype, body)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if rtype.namespaced:
            if namespace is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
            self._require_namespace(namespace)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                alphabet = "bcdfghjklmnpqrstvwxz2456789"
                for _ in range(100):
                    meta["name"] = meta["generateName"] + "".join(random.choice(alphabet) for _ in range(5))
                    if (namespace, meta["name"]) not in self._objects(rtype):
                        break
            else:
                raise self._invalid(
                    rtype,
                    "",
                    [
                        {
                            "reason": "FieldValueRequired",
                            "field": "metadata.name",
                            "message": "Required value: name or generateName is required",
                        }
                    ],
                )
        name = meta["name"]
        if (meta.get("namespace"), name) in self._objects(rtype):
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rtype.qualified} "{name}" already exists',
                {"name": name, "group": rtype.group, "kind": rtype.plural},
            )
        obj["apiVersion"] = rtype.api_version(version)
        obj["kind"] = rtype.kind
        for field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if rtype.has_generation or rtype.custom:
            meta["generation"] = 1
        if rtype.status_subresource and rtype.key != ("", "namespaces"):
            obj.pop("status", None)
        if rtype.key == ("", "namespaces"):
            obj["status"] = {"phase": "Active"}
        obj, warnings = self._finalize_object(rtype, version, obj, params)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            obj["status"] = self._crd_status(obj, None)
        if params.get("dryRun") == "All":
            return obj, warnings
        stored = self._commit(rtype, "ADDED", obj, None)
        self._after_write(rtype, stored, None)
        return stored, warnings

    def _check_rv_precondition(
        self, rtype: ResourceType, old: dict[str, Any], new: dict[str, Any], *, required: bool
    ) -> None:
        name = _meta(old)["name"]
        rv = _meta(new).get("resourceVersion")
        if rv in (None, ""):
            if required:
                raise self._invalid(
                    rtype,
                    name,
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "field": "metadata.resourceVersion",
                            "message": "Invalid value: 0x0: must be specified for an update",
                        }
                    ],
                )
            return
        if str(rv) != _meta(old).get("resourceVersion"):
            raise self._conflict(rtype, name)

    def _replace(self, target: _Target, body: Any, params: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
        old = self._get(target)
        self._check_kind(target.rtype, body)
        if _meta(body).get("name") not in (None, target.name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        self._check_rv_precondition(target.rtype, old, body, required=target.rtype.custom)
        obj, warnings, _ = self._update(target, old, copy.deepcopy(body), params)
        return obj, warnings

    def _patch(
        self,
        target: _Target,
        content_type: str,
        body: Any,
        params: Mapping[str, str],
    ) -> tuple[dict[str, Any], list[str], int]:
        rtype = target.rtype
        if content_type.startswith("application/apply-patch"):
            if (target.namespace, target.name) not in self._objects(rtype):
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "an apply patch must be an object")
                body.setdefault("metadata", {}).setdefault("name", target.name)
                obj, warnings = self._create(rtype, target.version, target.namespace, body, params)
                return obj, warnings, 201
        old = self._get(target)
        try:
            if content_type == "application/json-patch+json":
                patched = patching.json_patch(old, body)
            elif content_type in (
                "application/merge-patch+json",
                "application/apply-patch+yaml",
                "application/apply-patch+json",
            ):
                if not isinstance(body, dict):
                    raise patching.BadPatchError("a merge patch must be a JSON object")
                patched = patching.merge_patch(old, body)
            elif content_type == "application/strategic-merge-patch+json":
                if rtype.custom:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types include: "
                        "application/json-patch+json, application/merge-patch+json, "
                        "application/apply-patch+yaml",
                    )
                if not isinstance(body, dict):
                    raise patching.BadPatchError("a strategic merge patch must be a JSON object")
                patched = patching.strategic_merge_patch(old, body)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"application/json-patch+json, application/merge-patch+json, "
                    f"application/apply-patch+yaml, application/strategic-merge-patch+json "
                    f"(got {content_type!r})",
                )
        except patching.BadPatchError as e:
            raise ApiError(400, "BadRequest", str(e)) from None
        except patching.PatchError as e:
            raise ApiError(422, "Invalid", str(e)) from None
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "the patched object is not an object")
        self._check_rv_precondition(rtype, old, patched, required=False)
        obj, warnings, _ = self._update(target, old, patched, params)
        return obj, warnings, 200

    @staticmethod
    def _spec_view(rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        excluded = {"metadata", "status"} if rtype.status_subresource else {"metadata"}
        return {k: v for k, v in obj.items() if k not in excluded}

    def _update(
        self, target: _Target, old: dict[str, Any], candidate: dict[str, Any], params: Mapping[str, str]
    ) -> tuple[dict[str, Any], list[str], bool]:
        """The common path of PUT & PATCH. Returns (object, warnings, changed)."""
        rtype = target.rtype
        old_meta = _meta(old)
        if target.subresource in ("status", "finalize"):
            field = "status" if target.subresource == "status" else "spec"
            obj = copy.deepcopy(old)
            if field in candidate:
                obj[field] = copy.deepcopy(candidate[field])
            else:
                obj.pop(field, None)
        else:
            obj = copy.deepcopy(candidate)
            if rtype.status_subresource:
                if "status" in old:
                    obj["status"] = copy.deepcopy(old["status"])
                else:
                    obj.pop("status", None)
        obj["apiVersion"] = rtype.api_version(target.version)
        obj["kind"] = rtype.kind
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta.pop("managedFields", None)
        meta.pop("selfLink", None)
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        if old_meta.get("deletionTimestamp"):
            new_finalizers = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if new_finalizers:
                raise self._invalid(
                    rtype,
                    old_meta["name"],
                    [
                        {
                            "reason": "FieldValueForbidden",
                            "field": "metadata.finalizers",
                            "message": f"Forbidden: no new finalizers can be added if the object is being deleted, "
                            f"found new finalizers {sorted(new_finalizers)!r}",
                        }
                    ],
                )
        obj, warnings = self._finalize_object(rtype, target.version, obj, params)
        meta = obj["metadata"]  # NB: the object is a new (processed) copy now
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            obj["status"] = self._crd_status(obj, old)
        if (rtype.has_generation or rtype.custom) and self._spec_view(rtype, obj) != self._spec_view(rtype, old):
            meta["generation"] = int(old_meta.get("generation") or 0) + 1
        old_cmp = {**old, "apiVersion": obj["apiVersion"]}
        if obj == old_cmp:
            return old, warnings, False  # a no-op: no new resourceVersion, no event
        if params.get("dryRun") == "All":
            return obj, warnings, True
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            stored = self._really_delete(rtype, obj, old)
            return stored, warnings, True
        stored = self._commit(rtype, "MODIFIED", obj, old)
        self._after_write(rtype, stored, old)
        return stored, warnings, True

    def _delete(self, target: _Target, options: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        rtype = target.rtype
        old = self._get(target)
        self._check_delete_preconditions(rtype, old, options)
        dry_run = params.get("dryRun") == "All" or "All" in (options.get("dryRun") or [])
        obj, deleted = self._delete_object(rtype, old, dry_run=dry_run)
        if deleted and not rtype.custom:
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": _meta(obj)["name"],
                    "group": rtype.group,
                    "kind": rtype.plural,
                    "uid": _meta(obj).get("uid"),
                },
            }
        return self._present(rtype, target.version, obj)

    def _check_delete_preconditions(self, rtype: ResourceType, obj: dict[str, Any], options: Mapping[str, Any]) -> None:
        preconditions = options.get("preconditions") or {}
        meta = _meta(obj)
        if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
            raise self._conflict(
                rtype,
                meta["name"],
                f"Precondition failed: UID in precondition: "
                f"{preconditions['uid']}, UID in object meta: {meta.get('uid')}",
            )
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta.get("resourceVersion"):
            raise self._conflict(
                rtype,
                meta["name"],
                f"Precondition failed: ResourceVersion in precondition: "
                f"{preconditions['resourceVersion']}, ResourceVersion in "
                f"object meta: {meta.get('resourceVersion')}",
            )

    def _delete_object(
        self,
        rtype: ResourceType,
        old: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Delete or mark for deletion. Returns (object, deleted_for_real)."""
        meta = _meta(old)
        if meta.get("deletionTimestamp"):
            return old, False
        is_namespace = rtype.key == ("", "namespaces")
        if meta.get("finalizers") or is_namespace:
            obj = copy.deepcopy(old)
            obj["metadata"]["deletionTimestamp"] = _now()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            if is_namespace:
                obj["status"] = {**(obj.get("status") or {}), "phase": "Terminating"}
            if dry_run:
                return obj, False
            stored = self._commit(rtype, "MODIFIED", obj, old)
            if is_namespace:
                name = meta["name"]
                for other in list(self._types.values()):
                    if other.namespaced:
                        for (ns, _), child in list(self._objects(other).items()):
                            if ns == name:
                                self._delete_object(other, child)
                return self._maybe_finish_namespace(name) or stored, False
            return stored, False
        if dry_run:
            return old, True
        return self._really_delete(rtype, old, old), True

    def _really_delete(self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        stored = self._commit(rtype, "DELETED", obj, old)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._unregister_crd(stored)
        namespace = _meta(stored).get("namespace")
        if rtype.namespaced and namespace:
            self._maybe_finish_namespace(namespace)
        return stored

    def _maybe_finish_namespace(self, namespace: str) -> dict[str, Any] | None:
        nstype = self._types[("", "namespaces")]
        ns = self._objects(nstype).get((None, namespace))
        if ns is None or not _meta(ns).get("deletionTimestamp") or _meta(ns).get("finalizers"):
            return None
        for rtype in self._types.values():
            if rtype.namespaced and any(key[0] == namespace for key in self._objects(rtype)):
                return None
        return self._commit(nstype, "DELETED", ns, ns)

    def _delete_collection(
        self, target: _Target, options: Mapping[str, Any], params: Mapping[str, str]
    ) -> dict[str, Any]:
        matches = self._matcher(target, params)
        dry_run = params.get("dryRun") == "All"
        items = []
        for obj in [o for o in self._objects(target.rtype).values() if matches(o)]:
            self._check_delete_preconditions(target.rtype, obj, options)
            result, _ = self._delete_object(target.rtype, obj, dry_run=dry_run)
            items.append(self._present(target.rtype, target.version, result))
        return {
            "kind": target.rtype.list_kind,
            "apiVersion": target.rtype.api_version(target.version),
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _create_from_manifest(self, obj: dict[str, Any], apply: bool) -> dict[str, Any]:
        api_version = obj.get("apiVersion", "")
        group, _, version = api_version.rpartition("/")
        rtype = next(
            (
                r
                for r in self._types.values()
                if r.group == group and r.kind == obj.get("kind") and version in r.versions
            ),
            None,
        )
        if rtype is None:
            raise ApiError(404, "NotFound", f"no resource for {api_version} {obj.get('kind')}")
        namespace = _meta(obj).get("namespace") or ("default" if rtype.namespaced else None)
        existing = self._objects(rtype).get((namespace, _meta(obj).get("name", "")))
        if existing is not None and apply:
            target = _Target(rtype, version, namespace, _meta(obj)["name"], None)
            result, _, _ = self._patch(target, "application/merge-patch+json", obj, {})
            return result
        result, _ = self._create(rtype, version, namespace, obj, {})
        return result

    # ------------------------------------------------------------------------------------------
    # CustomResourceDefinitions.
    # ------------------------------------------------------------------------------------------

    def _crd_causes(self, crd: dict[str, Any]) -> list[dict[str, str]]:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        causes: list[dict[str, str]] = []

        def required(field: str) -> None:
            causes.append({"reason": "FieldValueRequired", "field": field, "message": "Required value"})

        if not spec.get("group"):
            required("spec.group")
        if not names.get("plural"):
            required("spec.names.plural")
        if not names.get("kind"):
            required("spec.names.kind")
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(
                {
                    "reason": "FieldValueNotSupported",
                    "field": "spec.scope",
                    "message": f"Unsupported value: {json.dumps(spec.get('scope'))}: supported values: "
                    f'"Cluster", "Namespaced"',
                }
            )
        versions = spec.get("versions") or []
        if not versions:
            required("spec.versions")
        elif sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "spec.versions",
                    "message": "Invalid value: must have exactly one version marked as storage version",
                }
            )
        for idx, v in enumerate(versions):
            if not ((v.get("schema") or {}).get("openAPIV3Schema")):
                required(f"spec.versions[{idx}].schema.openAPIV3Schema")
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if names.get("plural") and spec.get("group") and _meta(crd).get("name") != expected:
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f"Invalid value: {json.dumps(_meta(crd).get('name'))}: "
                    f'must be spec.names.plural+"."+spec.group',
                }
            )
        if not causes:
            key = (spec["group"], names["plural"])
            existing = self._types.get(key)
            if existing is not None and not existing.custom:
                causes.append(
                    {
                        "reason": "FieldValueInvalid",
                        "field": "spec.names.plural",
                        "message": "Invalid value: conflicts with a built-in resource",
                    }
                )
        return causes

    @staticmethod
    def _crd_status(crd: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        spec = crd.get("spec") or {}
        names = dict(spec.get("names") or {})
        names.setdefault("singular", str(names.get("kind", "")).lower())
        names.setdefault("listKind", f"{names.get('kind')}List")
        old_status = (old or {}).get("status") or {}
        now = _now()
        conditions = old_status.get("conditions") or [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now,
            },
        ]
        storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
        stored = list(old_status.get("storedVersions") or [])
        stored += [v for v in storage if v not in stored]
        return {"conditions": conditions, "acceptedNames": names, "storedVersions": stored}

    def _after_write(self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register_crd(obj)

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        names = spec["names"]
        versions = [v for v in spec["versions"] if v.get("served", True)]
        versions.sort(key=lambda v: not v.get("storage"))  # the storage version first
        rtype = ResourceType(
            group=spec["group"],
            versions=[v["name"] for v in versions],
            plural=names["plural"],
            kind=names["kind"],
            singular=names.get("singular", ""),
            list_kind=names.get("listKind", ""),
            namespaced=spec.get("scope") == "Namespaced",
            short_names=list(names.get("shortNames") or []),
            categories=list(names.get("categories") or []),
            status_subresource=any("status" in (v.get("subresources") or {}) for v in versions),
            has_generation=True,
            custom=True,
            schemas={v["name"]: v["schema"]["openAPIV3Schema"] for v in versions},
            printer_columns={v["name"]: list(v.get("additionalPrinterColumns") or []) for v in versions},
            selectable_fields=[f.get("jsonPath", "") for v in versions for f in v.get("selectableFields") or []],
            crd_name=_meta(crd)["name"],
        )
        previous = self._types.get(rtype.key)
        self._types[rtype.key] = rtype
        if previous is not None:
            self._notify()  # watches of the previous definition end & clients reconnect

    def _unregister_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        rtype = self._types.get(key)
        if rtype is None or not rtype.custom:
            return
        for obj in list(self._objects(rtype).values()):
            self._commit(rtype, "DELETED", obj, obj)
        del self._types[key]
        self._notify()


def _load_documents(paths: Iterable[str | pathlib.Path]) -> Iterator[dict[str, Any]]:
    for path in map(pathlib.Path, paths):
        files = sorted(p for ext in ("*.yaml", "*.yml", "*.json") for p in path.glob(ext)) if path.is_dir() else [path]
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "List":
                    yield from (d for d in doc.get("items") or [] if isinstance(d, dict))
                elif isinstance(doc, dict):
                    yield doc


# ----------------------------------------------------------------------------------------------
# Running: asyncio, background thread, kubeconfig, CLI.
# ----------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_emulator(emulator: KubeEmulator, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve the emulator over HTTP in the current event loop; yields the base URL."""
    loop = asyncio.get_running_loop()

    def request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> aiohttp.web.BaseRequest:
        return aiohttp.web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=MAX_BODY_SIZE)

    emulator._bind_loop()
    async with emulator:
        server = aiohttp.web.Server(emulator, request_factory=request_factory)
        runner = aiohttp.web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, host, port)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
        actual_port = sockets[0].getsockname()[1]
        try:
            yield f"http://{host}:{actual_port}"
        finally:
            emulator._close_watches()
            await asyncio.sleep(0)
            await runner.cleanup()


def write_kubeconfig(
    path: str | pathlib.Path,
    url: str,
    *,
    namespace: str = "default",
    token: str = "kmock-dummy-token",
    context: str = "kmock",
) -> pathlib.Path:
    """Write a kubeconfig pointing at the emulator (plain http, insecure, a dummy token)."""
    path = pathlib.Path(path)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": context, "cluster": {"server": url, "insecure-skip-tls-verify": True}}],
        "users": [{"name": context, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class EmulatorServer:
    """Runs a :class:`KubeEmulator` on a loopback port in a background thread (its own event loop)."""

    def __init__(
        self, emulator: KubeEmulator | None = None, *, host: str = "127.0.0.1", port: int = 0, **emulator_kwargs: Any
    ) -> None:
        self.emulator = emulator if emulator is not None else KubeEmulator(**emulator_kwargs)
        self.host = host
        self.port = port
        self.url: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("the Kubernetes emulator failed to start") from self._error
        assert self.url is not None
        return self.url

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve_emulator(self.emulator, self.host, self.port) as url:
            self.url = url
            self.port = int(url.rsplit(":", 1)[-1])
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def running_emulator(
    crd_paths: Iterable[str | pathlib.Path] = (),
    *,
    port: int = 0,
    kubeconfig_path: str | pathlib.Path | None = None,
    **emulator_kwargs: Any,
) -> Iterator[tuple[KubeEmulator, str, pathlib.Path]]:
    """
    Start an emulator in a background thread; yield ``(emulator, url, kubeconfig_path)``.

    The kubeconfig is written to a temporary file unless a path is given.
    """
    emulator = KubeEmulator(crd_paths=list(crd_paths), **emulator_kwargs)
    with contextlib.ExitStack() as stack:
        if kubeconfig_path is None:
            tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="kube-emulator-"))
            kubeconfig_path = pathlib.Path(tmpdir) / "kubeconfig"
        server = stack.enter_context(EmulatorServer(emulator, port=port))
        assert server.url is not None
        path = write_kubeconfig(kubeconfig_path, server.url)
        yield emulator, server.url, path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kube.emulator", description="Run the in-memory Kubernetes API emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--crds", action="append", default=[], help="a CRD YAML file or a directory of them")
    parser.add_argument("--kubeconfig", default=None, help="where to write a kubeconfig (default: a temp file)")
    parser.add_argument("--no-kopf-peering", action="store_true", help="do not pre-register Kopf's peering CRDs")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)

    emulator = KubeEmulator(crd_paths=args.crds, kopf_peering=not args.no_kopf_peering)
    kubeconfig = pathlib.Path(args.kubeconfig or tempfile.mkstemp(prefix="kube-emulator-", suffix=".yaml")[1])

    async def run() -> None:
        async with serve_emulator(emulator, args.host, args.port) as url:
            write_kubeconfig(kubeconfig, url)
            print(f"Kubernetes emulator at {url}", flush=True)
            print(f"export KUBECONFIG={kubeconfig}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
