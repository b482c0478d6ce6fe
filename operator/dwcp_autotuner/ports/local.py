"""Local adapters: ConfigMaps as JSON files and metrics from in-process callables.

`FileConfigStore(root)` keeps each ConfigMap in `root/<namespace>/<name>.json`:

    {"resourceVersion": "3", "data": {"config.json": "{...}"}}

with the semantics of the Kubernetes adapter: every write is guarded by the resourceVersion the caller
read (a stale one raises `Conflict`), bumps it by one, and replaces the file atomically
(write to a temporary file in the same directory, fsync, `os.replace`). Revisions are the same files
with `"immutable": true` (plus `labels` and `owner` for the record); writing to one raises `Conflict`.
A lock file per directory (`fcntl.flock`, where available) serialises read-check-replace across
processes sharing the directory; within one process a `threading.Lock` does.

`InProcessMetrics` answers queries from callables registered per (rendered) query string.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..canary.protocol import ConfigRef, ConfigSnapshot
from .base import Conflict, Foreign, NotFound, OwnerRef, Sample, StoredMap, Unavailable

try:  # POSIX only; on other platforms the in-process lock is all there is
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class FileConfigStore:
    """`ConfigStore` over a directory of JSON files (local runs, tests)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    # -- helpers for tests and local tooling ----------------------------------------------------

    def path(self, namespace: str, name: str) -> Path:
        for part in (namespace, name):
            if not part or "/" in part or part in (".", "..") or "\\" in part:
                raise ValueError(f"invalid namespace or name: {part!r}")
        return self.root / namespace / f"{name}.json"

    def put(self, namespace: str, name: str, data: Mapping[str, str]) -> ConfigSnapshot:
        """Create or overwrite a (mutable) ConfigMap unconditionally, bumping its resourceVersion."""
        with self._locked(namespace):
            current = self._load(namespace, name)
            rv = _next_rv(current)
            self._store(namespace, name, {"resourceVersion": rv, "data": _str_map(data)})
        return ConfigSnapshot(ConfigRef(namespace, name), rv, dict(data))

    # -- ConfigStore ----------------------------------------------------------------------------

    def read(self, ref: ConfigRef) -> ConfigSnapshot:
        doc = self._load(ref.namespace, ref.name)
        if doc is None:
            raise NotFound(f"ConfigMap {ref.namespace}/{ref.name} not found")
        return ConfigSnapshot(ref, str(doc["resourceVersion"]), dict(doc.get("data") or {}))

    def read_fresh(self, ref: ConfigRef) -> ConfigSnapshot:
        return self.read(ref)  # nothing cached here

    def write(
        self,
        ref: ConfigRef,
        *,
        expected_resource_version: str,
        set_keys: Mapping[str, str] | None = None,
        remove_keys: tuple[str, ...] = (),
    ) -> ConfigSnapshot:
        with self._locked(ref.namespace):
            doc = self._load(ref.namespace, ref.name)
            if doc is None:
                raise NotFound(f"ConfigMap {ref.namespace}/{ref.name} not found")
            if str(doc["resourceVersion"]) != str(expected_resource_version):
                raise Conflict(
                    f"ConfigMap {ref.namespace}/{ref.name} changed: resourceVersion is {doc['resourceVersion']}, "
                    f"expected {expected_resource_version}"
                )
            if doc.get("immutable"):
                raise Conflict(f"ConfigMap {ref.namespace}/{ref.name} is immutable")
            data = dict(doc.get("data") or {})
            for key in remove_keys:
                data.pop(key, None)
            data.update(_str_map(set_keys or {}))
            doc = {**doc, "resourceVersion": _next_rv(doc), "data": data}
            self._store(ref.namespace, ref.name, doc)
        return ConfigSnapshot(ref, doc["resourceVersion"], data)

    def create_revision(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        *,
        owner: OwnerRef | None,
        labels: Mapping[str, str],
    ) -> None:
        wanted = _str_map(data)
        with self._locked(namespace):
            existing = self._load(namespace, name)
            if existing is not None:
                if dict(existing.get("data") or {}) != wanted:
                    raise Conflict(f"revision {namespace}/{name} already exists with different data")
                return
            doc: dict[str, Any] = {
                "resourceVersion": "1",
                "immutable": True,
                "labels": dict(labels),
                "data": wanted,
            }
            if owner is not None:
                doc["owner"] = asdict(owner)
            self._store(namespace, name, doc)

    def read_revision(self, namespace: str, name: str) -> Mapping[str, str]:
        doc = self._load(namespace, name)
        if doc is None:
            raise NotFound(f"revision {namespace}/{name} not found")
        return dict(doc.get("data") or {})

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
        """Create or replace a ConfigMap with `binaryData` (stored base64, as the Kubernetes API does); only ours is replaced."""
        with self._locked(namespace):
            current = self._load(namespace, name)
            if current is not None and current.get("immutable"):
                raise Conflict(f"ConfigMap {namespace}/{name} is immutable")
            if current is not None and any((current.get("labels") or {}).get(k) != v for k, v in labels.items()):
                raise Foreign(f"ConfigMap {namespace}/{name} exists and is not the operator's; it is never modified")
            doc: dict[str, Any] = {
                "resourceVersion": _next_rv(current),
                "data": _str_map(data or {}),
                "binaryData": {str(k): base64.b64encode(bytes(v)).decode("ascii") for k, v in binary_data.items()},
                "labels": dict(labels),
            }
            if owner is not None:
                doc["owner"] = asdict(owner)
            self._store(namespace, name, doc)

    def get_binary(self, namespace: str, name: str) -> StoredMap:
        doc = self._load(namespace, name)
        if doc is None:
            raise NotFound(f"ConfigMap {namespace}/{name} not found")
        binary = {k: base64.b64decode(v) for k, v in (doc.get("binaryData") or {}).items()}
        return StoredMap(dict(doc.get("data") or {}), binary, dict(doc.get("labels") or {}))

    # -- internals ------------------------------------------------------------------------------

    def _load(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = self.path(namespace, name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise Unavailable(f"cannot read {path}: {exc}") from None
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise Unavailable(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or "resourceVersion" not in doc:
            raise Unavailable(f"{path} is not a ConfigMap file (needs resourceVersion and data)")
        return doc

    def _store(self, namespace: str, name: str, doc: Mapping[str, Any]) -> None:
        path = self.path(namespace, name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(doc, fh, indent=2, sort_keys=True)
                    fh.write("\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise Unavailable(f"cannot write {path}: {exc}") from None

    @contextlib.contextmanager
    def _locked(self, namespace: str) -> Iterator[None]:
        with self._lock:
            if fcntl is None:
                yield
                return
            directory = self.path(namespace, "_").parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
                fh = open(directory / ".lock", "a+b")  # noqa: SIM115
            except OSError as exc:
                raise Unavailable(f"cannot lock {directory}: {exc}") from None
            with fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _next_rv(doc: Mapping[str, Any] | None) -> str:
    if doc is None:
        return "1"
    try:
        return str(int(doc["resourceVersion"]) + 1)
    except (TypeError, ValueError):
        return "1"


def _str_map(data: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise TypeError(f"ConfigMap values must be strings; {key!r} is {type(value).__name__}")
        out[str(key)] = value
    return out


MetricFunction = Callable[[float], float | None]
"""Value of a query at a unix timestamp; None (or NaN) for no data."""


class InProcessMetrics:
    """`MetricsSource` fed by callables, one per rendered query string.

    `register(query, fn)` makes `samples(query, start, end, step)` evaluate `fn(t)` at
    `t = start, start+step, …, ≤ end` (like a Prometheus range query), dropping None/NaN/±Inf.
    Unregistered queries return [] (no data, as Prometheus does for an absent series) — unless the
    source was built with `strict=True`, in which case `validate()` reports them as unknown.
    `fail_with(exc)` makes every call raise (simulate an outage), `fail_with(None)` heals it.
    `calls` records each `samples()` query for assertions.
    """

    def __init__(self, functions: Mapping[str, MetricFunction] | None = None, *, strict: bool = False) -> None:
        self._functions: dict[str, MetricFunction] = dict(functions or {})
        self._strict = strict
        self._failure: Exception | None = None
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def register(self, query: str, fn: MetricFunction) -> None:
        with self._lock:
            self._functions[query] = fn

    def unregister(self, query: str) -> None:
        with self._lock:
            self._functions.pop(query, None)

    def fail_with(self, exc: Exception | None) -> None:
        self._failure = exc

    def samples(self, query: str, start: dt.datetime, end: dt.datetime, step_seconds: float) -> list[Sample]:
        if step_seconds <= 0:
            raise ValueError(f"step_seconds must be positive, got {step_seconds}")
        if self._failure is not None:
            raise self._failure
        with self._lock:
            self.calls.append(query)
            fn = self._functions.get(query)
        if fn is None:
            return []
        t0, t1 = start.timestamp(), end.timestamp()
        out: list[Sample] = []
        n = 0
        while True:
            t = t0 + n * step_seconds
            if t > t1 + 1e-9:
                break
            value = fn(t)
            if value is not None:
                value = float(value)
                if math.isfinite(value):
                    out.append(Sample(timestamp=t, value=value))
            n += 1
        return out

    def validate(self, query: str) -> str | None:
        if self._failure is not None:
            raise self._failure
        if not query.strip():
            return "empty query"
        if self._strict and query not in self._functions:
            return f"unknown query: {query}"
        return None
