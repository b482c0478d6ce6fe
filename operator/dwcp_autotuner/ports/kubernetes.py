"""Kubernetes adapters: the target ConfigMap, revision ConfigMaps and core/v1 Events.

Quirks of the official client (`kubernetes` ≥ 29, checked against 37) handled here:

- JSON patch. The generated `patch_*` methods pick the request's Content-Type from a list whose first
  JSON entry is `application/json-patch+json`; the REST layer then downgrades it to
  `application/strategic-merge-patch+json` whenever the body is NOT a list (older clients did the
  equivalent in `ApiClient.select_header_content_type(content_types, method, body)`). So a JSON patch
  is sent by passing the operations as a `list`, and a dict body is a strategic-merge patch. We also
  pass `_content_type="application/json-patch+json"` explicitly so it does not hinge on that quirk.
- Errors: HTTP errors are `ApiException` (37 adds subclasses per status: NotFoundException,
  ConflictException, UnprocessableEntityException, ServiceException — all with `.status` and the
  `Status` JSON in `.body`); connection problems surface as raw urllib3 errors (`MaxRetryError`,
  `ProtocolError`, …), not as ApiException.
- A failed JSON-patch `test` operation is HTTP 422. A real apiserver answers it with the generic
  message "the server rejected our request due to an error in our request" and the jsonpatch error
  as a cause without a field; a validation failure of the patched object is also 422 (reason
  Invalid) but its causes name fields. We map 409, and 422 without field causes, to `Conflict`;
  a 422 naming fields is `Rejected` (a subclass of `Unavailable`: retrying will not help).
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from ..canary.protocol import ConfigRef, ConfigSnapshot
from .base import Conflict, Foreign, NotFound, OwnerRef, StoredMap, Unavailable

_LOGGER = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
COMPONENT = "dwcp-autotuner"


class Rejected(Unavailable):
    """The apiserver refused the request as invalid (HTTP 400/422 with field causes, 403, …)."""


def _status_message(exc: ApiException) -> tuple[str, list[dict[str, Any]]]:
    """The `Status.message` (and `details.causes`) of an ApiException, else its reason."""
    body: Any = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        status = json.loads(body) if body else None
    except (TypeError, ValueError):
        status = None
    if isinstance(status, dict):
        causes = (status.get("details") or {}).get("causes") or []
        message = str(status.get("message") or exc.reason or "")
        return message, [c for c in causes if isinstance(c, dict)]
    return str(exc.reason or body or exc), []


def _describe(exc: ApiException) -> str:
    message, causes = _status_message(exc)
    extra = "; ".join(str(c.get("message")) for c in causes if c.get("message") and c.get("message") not in message)
    text = f"{message} ({extra})" if extra else message
    return f"HTTP {exc.status}: {text}"


_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError)


PERMANENT_STATUSES = frozenset({400, 401, 403, 415, 422})  # API answers a retry does not change (`Rejected`)


def _unavailable(what: str, exc: BaseException) -> Unavailable:
    if isinstance(exc, ApiException):
        if exc.status in PERMANENT_STATUSES:
            return Rejected(f"{what}: {_describe(exc)}")
        return Unavailable(f"{what}: {_describe(exc)}")
    reason = getattr(exc, "reason", None) or exc
    return Unavailable(f"{what}: cannot reach the Kubernetes API ({type(exc).__name__}: {reason})")


def _pointer(key: str) -> str:
    return "/data/" + key.replace("~", "~0").replace("/", "~1")


def _data(cm: Any) -> dict[str, str]:
    return dict(getattr(cm, "data", None) or {})


def _rv(cm: Any) -> str:
    return str(cm.metadata.resource_version)


class KubernetesConfigStore:
    """`ConfigStore` over core/v1 ConfigMaps."""

    def __init__(self, api: k8s.CoreV1Api, *, timeout_seconds: float = 10, field_manager: str = COMPONENT) -> None:
        self.api = api
        self.timeout_seconds = timeout_seconds
        self.field_manager = field_manager

    def read(self, ref: ConfigRef) -> ConfigSnapshot:
        cm = self._get(ref.namespace, ref.name, what=f"read ConfigMap {ref.namespace}/{ref.name}")
        return ConfigSnapshot(ref, _rv(cm), _data(cm))

    read_fresh = read  # nothing cached here

    def write(
        self,
        ref: ConfigRef,
        *,
        expected_resource_version: str,
        set_keys: Mapping[str, str] | None = None,
        remove_keys: tuple[str, ...] = (),
    ) -> ConfigSnapshot:
        """One JSON patch: `test` of metadata.resourceVersion, then add/replace/remove of data keys.

        The ops are computed from a fresh read (a mismatching resourceVersion there is already a
        Conflict): `replace` for keys present, `add` for new ones, `remove` only for keys present
        (a JSON-patch `remove` of a missing member fails the whole patch); a key both set and
        removed is set. Because the `test` op guards the patch, the data it was computed from is
        exactly the data it applies to. Nothing to change → no request, the read is returned.
        """
        set_keys = dict(set_keys or {})
        for key, value in set_keys.items():
            if not isinstance(value, str):
                raise TypeError(f"ConfigMap values must be strings; {key!r} is {type(value).__name__}")
        what = f"write ConfigMap {ref.namespace}/{ref.name}"
        cm = self._get(ref.namespace, ref.name, what=what)
        current_rv = _rv(cm)
        if current_rv != str(expected_resource_version):
            raise Conflict(
                f"ConfigMap {ref.namespace}/{ref.name} changed: resourceVersion is {current_rv}, "
                f"expected {expected_resource_version}"
            )
        data = getattr(cm, "data", None)
        ops: list[dict[str, Any]] = []
        if data is None:
            if set_keys:
                ops.append({"op": "add", "path": "/data", "value": set_keys})
        else:
            for key in remove_keys:
                if key in data and key not in set_keys:
                    ops.append({"op": "remove", "path": _pointer(key)})
            for key, value in set_keys.items():
                if key not in data:
                    ops.append({"op": "add", "path": _pointer(key), "value": value})
                elif data[key] != value:
                    ops.append({"op": "replace", "path": _pointer(key), "value": value})
        if not ops:
            return ConfigSnapshot(ref, current_rv, _data(cm))
        patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": current_rv}, *ops]
        try:
            result = self.api.patch_namespaced_config_map(
                ref.name,
                ref.namespace,
                patch,  # a list → JSON patch (see the module docstring)
                field_manager=self.field_manager,
                _content_type=JSON_PATCH,
                _request_timeout=self.timeout_seconds,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"ConfigMap {ref.namespace}/{ref.name} not found") from None
            if exc.status == 409 or (exc.status == 422 and not self._names_fields(exc)):
                raise Conflict(
                    f"ConfigMap {ref.namespace}/{ref.name} changed since resourceVersion {current_rv}: {_describe(exc)}"
                ) from None
            raise _unavailable(what, exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(what, exc) from None
        return ConfigSnapshot(ref, _rv(result), _data(result))

    def create_revision(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        *,
        owner: OwnerRef | None,
        labels: Mapping[str, str],
    ) -> None:
        """An immutable ConfigMap owned (not controlled) by `owner`; idempotent on equal data."""
        owner_refs = None
        if owner is not None:
            owner_refs = [
                k8s.V1OwnerReference(
                    api_version=owner.api_version,
                    kind=owner.kind,
                    name=owner.name,
                    uid=owner.uid,
                    controller=False,  # a revision is a record, not something the CR reconciles
                    block_owner_deletion=False,
                )
            ]
        body = k8s.V1ConfigMap(
            api_version="v1",
            kind="ConfigMap",
            metadata=k8s.V1ObjectMeta(
                name=name, namespace=namespace, labels=dict(labels) or None, owner_references=owner_refs
            ),
            data=dict(data),
            immutable=True,
        )
        what = f"create revision ConfigMap {namespace}/{name}"
        try:
            self.api.create_namespaced_config_map(
                namespace, body, field_manager=self.field_manager, _request_timeout=self.timeout_seconds
            )
            return
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{what}: namespace {namespace} not found") from None
            if exc.status != 409:
                raise _unavailable(what, exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(what, exc) from None
        # 409 AlreadyExists: fine if it is the same revision (e.g. a retry after a lost answer).
        existing = self.read_revision(namespace, name)
        if dict(existing) != dict(data):
            raise Conflict(f"revision ConfigMap {namespace}/{name} already exists with different data")

    def read_revision(self, namespace: str, name: str) -> Mapping[str, str]:
        cm = self._get(namespace, name, what=f"read revision ConfigMap {namespace}/{name}")
        return _data(cm)

    def put_binary(
        self,
        namespace: str,
        name: str,
        binary_data: Mapping[str, bytes],
        *,
        data: Mapping[str, str] | None = None,
        owner: OwnerRef | None,
        labels: Mapping[str, str],
    ) -> None:
        """Create the ConfigMap, or overwrite its keys (merge patch: the newest model wins) if it exists and is ours.

        "Ours" is: it carries every one of `labels` (the operator's identifying labels). Any other ConfigMap of
        that name (a user's, created before the operator's first save) raises `Foreign` and is left alone."""
        owner_refs = None
        if owner is not None:
            owner_refs = [
                k8s.V1OwnerReference(
                    api_version=owner.api_version,
                    kind=owner.kind,
                    name=owner.name,
                    uid=owner.uid,
                    controller=False,
                    block_owner_deletion=False,
                )
            ]
        body = k8s.V1ConfigMap(
            api_version="v1",
            kind="ConfigMap",
            metadata=k8s.V1ObjectMeta(
                name=name, namespace=namespace, labels=dict(labels) or None, owner_references=owner_refs
            ),
            data=dict(data or {}) or None,
            binary_data={k: base64.b64encode(bytes(v)).decode("ascii") for k, v in binary_data.items()} or None,
        )
        what = f"write model ConfigMap {namespace}/{name}"
        try:
            try:
                self.api.create_namespaced_config_map(
                    namespace, body, field_manager=self.field_manager, _request_timeout=self.timeout_seconds
                )
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
            existing = self._get(namespace, name, what=what)
            present = dict(getattr(existing.metadata, "labels", None) or {})
            if any(present.get(k) != v for k, v in labels.items()):
                raise Foreign(
                    f"ConfigMap {namespace}/{name} exists and is not the operator's (it lacks the labels "
                    f"{', '.join(f'{k}={v}' for k, v in labels.items())}); it is never modified"
                )
            # Exists and ours: a merge patch of the same keys (the operator's RBAC has `patch`, not `update`).
            patch = {
                "metadata": {"labels": dict(labels)},
                "data": body.data or {},
                "binaryData": body.binary_data or {},
            }
            self.api.patch_namespaced_config_map(
                name,
                namespace,
                patch,
                field_manager=self.field_manager,
                _content_type="application/merge-patch+json",
                _request_timeout=self.timeout_seconds,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{what}: not found") from None
            raise _unavailable(what, exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(what, exc) from None

    def get_binary(self, namespace: str, name: str) -> StoredMap:
        cm = self._get(namespace, name, what=f"read model ConfigMap {namespace}/{name}")
        raw = getattr(cm, "binary_data", None) or {}
        labels = dict(getattr(cm.metadata, "labels", None) or {})
        return StoredMap(_data(cm), {k: base64.b64decode(v) for k, v in raw.items()}, labels)

    # -- internals ------------------------------------------------------------------------------

    def _get(self, namespace: str, name: str, *, what: str) -> Any:
        try:
            return self.api.read_namespaced_config_map(name, namespace, _request_timeout=self.timeout_seconds)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"ConfigMap {namespace}/{name} not found") from None
            raise _unavailable(what, exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(what, exc) from None

    @staticmethod
    def _names_fields(exc: ApiException) -> bool:
        _, causes = _status_message(exc)
        return any(c.get("field") for c in causes)


class KubernetesEvents:
    """`EventSink` writing core/v1 Events about `involved_object`.

    `involved_object` is an object reference as a dict: `apiVersion`, `kind`, `name`, `namespace`,
    `uid` (optionally `resourceVersion`, `fieldPath`). Events get unique names
    (`<name>.<hex nanoseconds><random>`, as client-go's recorder), `reportingComponent` and
    `source.component` `dwcp-autotuner`, `reportingInstance` the pod/host name. A repeat of the same
    (type, reason, message) within `aggregate_seconds` bumps the earlier Event's `count` and
    `lastTimestamp` (a merge patch) instead of creating a new one, as `kubectl describe`
    expects. Emitting never raises: failures are logged (events are best effort).
    """

    def __init__(
        self,
        api: k8s.CoreV1Api,
        involved_object: Mapping[str, Any],
        *,
        component: str = COMPONENT,
        instance: str | None = None,
        aggregate_seconds: float = 600,
        timeout_seconds: float = 5,
    ) -> None:
        for field in ("kind", "name"):
            if not involved_object.get(field):
                raise ValueError(f"involved_object needs {field!r}")
        self.api = api
        self.involved_object = dict(involved_object)
        self.namespace = str(involved_object.get("namespace") or "default")
        self.component = component
        self.instance = instance or os.environ.get("POD_NAME") or socket.gethostname()
        self.aggregate_seconds = aggregate_seconds
        self.timeout_seconds = timeout_seconds
        # (type, reason, message) -> (event name, count, monotonic time of the last emit)
        self._recent: collections.OrderedDict[tuple[str, str, str], tuple[str, int, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def emit(self, kind: Literal["Normal", "Warning"], reason: str, message: str, key: str | None = None) -> bool:
        try:
            return self._emit(kind, reason, message, key)
        except Exception as exc:
            _LOGGER.warning(
                "could not record event %s/%s about %s %s: %s",
                kind,
                reason,
                self.involved_object.get("kind"),
                self.involved_object.get("name"),
                exc,
            )
            return True  # events are best effort: the action happened, whether or not its Event was recorded

    def _emit(self, kind: str, reason: str, message: str, action: str | None = None) -> bool:
        message = message if len(message) <= 1024 else message[:1021] + "..."
        reason = reason[:128]
        key = (kind, reason, message)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        with self._lock:
            recent = None if action is not None else self._recent.get(key)
            if recent is not None and time.monotonic() - recent[2] > self.aggregate_seconds:
                recent = None
        if recent is not None:
            name, count = recent[0], recent[1] + 1
            try:
                self.api.patch_namespaced_event(
                    name,
                    self.namespace,
                    {"count": count, "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ")},
                    _content_type="application/merge-patch+json",
                    _request_timeout=self.timeout_seconds,
                )
                self._remember(key, name, count)
                return True
            except ApiException as exc:
                if exc.status != 404:  # 404: the event expired (TTL) — create a new one
                    raise
        name = self._new_name() if action is None else self._action_name(action)
        ref = {
            k: v
            for k, v in self.involved_object.items()
            if k in ("apiVersion", "kind", "name", "namespace", "uid", "resourceVersion", "fieldPath")
        }
        body = k8s.CoreV1Event(
            api_version="v1",
            kind="Event",
            metadata=k8s.V1ObjectMeta(name=name, namespace=self.namespace),
            involved_object=k8s.V1ObjectReference(
                api_version=ref.get("apiVersion"),
                kind=ref.get("kind"),
                name=ref.get("name"),
                namespace=ref.get("namespace"),
                uid=ref.get("uid"),
                resource_version=ref.get("resourceVersion"),
                field_path=ref.get("fieldPath"),
            ),
            type=kind,
            reason=reason,
            message=message,
            source=k8s.V1EventSource(component=self.component),
            reporting_component=self.component,
            reporting_instance=self.instance,
            count=1,
            first_timestamp=now,
            last_timestamp=now,
        )
        try:
            self.api.create_namespaced_event(self.namespace, body, _request_timeout=self.timeout_seconds)
        except ApiException as exc:
            if action is not None and exc.status == 409:
                return False  # this action's Event exists: it was reported before a retried transition
            raise
        self._remember(key, name, 1)
        return True

    def _remember(self, key: tuple[str, str, str], name: str, count: int) -> None:
        with self._lock:
            self._recent[key] = (name, count, time.monotonic())
            self._recent.move_to_end(key)
            while len(self._recent) > 256:
                self._recent.popitem(last=False)

    def reported(self, key: str) -> bool:
        try:
            self.api.read_namespaced_event(
                self._action_name(key), self.namespace, _request_timeout=self.timeout_seconds
            )
        except Exception:  # 404, or the API failing: no evidence either way
            return False
        return True

    def _action_name(self, action: str) -> str:
        """One name per (object, action): a second create of the same action's Event is refused (409)."""
        base = str(self.involved_object["name"])[:200]
        tag = hashlib.sha256(f"{self.involved_object.get('uid', '')}/{action}".encode()).hexdigest()[:16]
        return f"{base}.{tag}"

    def _new_name(self) -> str:
        base = str(self.involved_object["name"])[:200]
        return f"{base}.{time.time_ns():x}{secrets.token_hex(2)}"


# --- Jobs ---------------------------------------------------------------------------------------------------
#: Reasons a pod's container waits with that mean it will never start by itself: the Job is failed at once.
_CANNOT_START = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"}
)


class KubernetesJobs:
    """`JobRunner` on batch/v1 Jobs: one pod, no retries (`backoffLimit: 0`), a deadline, removed after a while.

    The pod runs the operator's own image with `dwcp-autotuner <args>` under `service_account` (allowed to write
    the result ConfigMap), as non-root with a read-only root filesystem and no capabilities, like the operator."""

    def __init__(
        self,
        batch: k8s.BatchV1Api,
        core: k8s.CoreV1Api,
        *,
        image: str,
        service_account: str | None = None,
        resources: Mapping[str, Mapping[str, str]] | None = None,
        ttl_seconds: int = 600,
    ) -> None:
        self.batch, self.core, self.image = batch, core, image
        self.service_account, self.resources, self.ttl_seconds = service_account, dict(resources or {}), ttl_seconds

    def _cpus(self) -> int:
        """Whole CPUs of the Job's request (its limit when it requests none), at least one."""
        quantity = str(
            (self.resources.get("requests") or {}).get("cpu") or (self.resources.get("limits") or {}).get("cpu") or "1"
        )
        try:
            cpus = float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
        except ValueError:
            return 1
        return max(1, int(cpus))

    def start(self, spec) -> str:
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": dict(spec.labels)},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": spec.deadline_seconds,
                "ttlSecondsAfterFinished": self.ttl_seconds,
                "template": {
                    "metadata": {"labels": dict(spec.labels)},
                    "spec": {
                        "restartPolicy": "Never",
                        **({"serviceAccountName": self.service_account} if self.service_account else {}),
                        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [
                            {
                                "name": "worker",
                                "image": self.image,
                                "args": list(spec.args),
                                "env": [
                                    {"name": "HOME", "value": "/tmp"},
                                    {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
                                    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                                    # A twin is measured by as many processes as the Job asked CPUs for.
                                    {"name": "DWCP_AUTOTUNER_TWIN_PROCESSES", "value": str(self._cpus())},
                                ],
                                "resources": self.resources,
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                            }
                        ],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        }
        try:
            created = self.batch.create_namespaced_job(spec.namespace, body)
        except ApiException as exc:
            raise _unavailable(f"create Job {spec.namespace}/{spec.name}", exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(f"create Job {spec.namespace}/{spec.name}", exc) from None
        return created.metadata.uid

    def state(self, namespace: str, name: str):
        from .base import JobState

        try:
            job = self.batch.read_namespaced_job(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return JobState("Failed", "JobGone", f"Job {namespace}/{name} is gone (deleted by someone else)")
            raise _unavailable(f"read Job {namespace}/{name}", exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(f"read Job {namespace}/{name}", exc) from None
        status = job.status
        for condition in (status.conditions or []) if status else []:
            if condition.status != "True":
                continue
            if condition.type == "Complete":
                return JobState("Succeeded")
            if condition.type == "Failed":
                return JobState("Failed", condition.reason or "Failed", condition.message or "")
        if status is not None and (status.succeeded or 0) > 0:
            return JobState("Succeeded")
        if status is not None and (status.failed or 0) > 0:
            return JobState("Failed", "PodFailed", "the worker pod failed")
        return self._pods_cannot_start(namespace, name) or JobState("Running")

    def _pods_cannot_start(self, namespace: str, name: str):
        from .base import JobState

        try:
            pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
        except (ApiException, *_TRANSPORT_ERRORS):
            return None  # the Job's own state decides
        for pod in pods:
            for container in (pod.status.container_statuses or []) if pod.status else []:
                waiting = container.state.waiting if container.state else None
                if waiting is not None and waiting.reason in _CANNOT_START:
                    return JobState("Failed", waiting.reason, waiting.message or f"image {container.image}")
        return None

    def delete(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise _unavailable(f"delete Job {namespace}/{name}", exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(f"delete Job {namespace}/{name}", exc) from None
