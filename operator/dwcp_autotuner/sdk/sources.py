"""Where a follower reads the ConfigMap from: a mounted folder (or one JSON file), or the Kubernetes API.

`DirectorySource(path)` polls (every `poll_seconds`, 0.5 s by default) the modification time, size and
inode of the files it needs and re-reads them when one changes. A ConfigMap mounted as a volume shows
each key as a file of that name (`config.json`, `autotune.dwcp.io.canary`, …; the kubelet swaps them
atomically through the `..data` symlink, which is watched too). Note that the kubelet refreshes mounted
ConfigMaps only every minute or so; follow the API when the rollout's analysis interval is short.
When `path` is a regular file, it is the stable configuration alone (no canary).

`KubernetesSource(namespace, name)` reads the ConfigMap, then watches it from that resourceVersion
(`fieldSelector=metadata.name=<name>`, bookmarks on). A watch that ends (server timeout, closed
connection) is resumed from the last resourceVersion seen; an expired one (410 Gone) or a deleted
ConfigMap starts again with a fresh read; errors back off from 0.5 s up to 10 s. Meanwhile the
follower keeps running the last good configuration.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..canary.protocol import CANARY_KEY, CANARY_REVISION_KEY, CANARY_WEIGHT_KEY
from .follower import DataSink

log = logging.getLogger("dwcp_autotuner.sdk")


class DirectorySource:
    """A mounted ConfigMap folder (files named by key), or a single JSON file with the stable config."""

    def __init__(self, path: str | os.PathLike[str], key: str = "config.json", *, poll_seconds: float = 0.5) -> None:
        self.path = Path(path)
        self.key = key
        self.poll_seconds = poll_seconds

    def describe(self) -> str:
        return f"{'folder' if self.path.is_dir() else 'file'} {self.path} (polled every {self.poll_seconds:g} s)"

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key, CANARY_KEY, CANARY_WEIGHT_KEY, CANARY_REVISION_KEY)

    def signature(self) -> tuple[Any, ...] | None:
        """What changes whenever the content may have changed; None when the path is missing."""
        try:
            top = self.path.stat()
        except OSError:
            return None
        if not self.path.is_dir():
            return ("file", top.st_mtime_ns, top.st_size, top.st_ino)
        parts: list[Any] = ["dir"]
        try:
            parts.append(os.readlink(self.path / "..data"))
        except OSError:
            parts.append(None)
        for key in self.keys:
            try:
                st = (self.path / key).stat()
                parts.append((key, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                parts.append((key, None))
        return tuple(parts)

    def read(self) -> dict[str, str] | None:
        if not self.path.exists():
            return None
        if not self.path.is_dir():
            return {self.key: self.path.read_text(encoding="utf-8", errors="replace")}
        data: dict[str, str] = {}
        for key in self.keys:
            try:
                data[key] = (self.path / key).read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
        return data

    def run(self, sink: DataSink, stop: threading.Event) -> None:
        last: tuple[Any, ...] | None | str = "unset"
        while not stop.is_set():
            signature = self.signature()
            if signature != last:
                try:
                    data = self.read()
                except OSError as error:
                    sink.unavailable(f"cannot read {self.path}: {error}")
                    data = None
                    signature = "retry"  # read again at the next poll
                if data is None:
                    if signature is None:
                        sink.unavailable(f"{self.path} does not exist")
                else:
                    sink.apply(data, origin=str(self.path))
                last = signature
            stop.wait(self.poll_seconds)


class StaticSource:
    """Fixed data (tests, or a component started with a literal configuration)."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self.data = dict(data)

    def describe(self) -> str:
        return "fixed data"

    def run(self, sink: DataSink, stop: threading.Event) -> None:
        sink.apply(self.data, origin="static")
        stop.wait()


def api_client(kubeconfig: str | None = None) -> Any:
    """A kubernetes ApiClient: in-cluster credentials in a pod (unless a kubeconfig is named), else the
    kubeconfig (`kubeconfig`, then $KUBECONFIG, then ~/.kube/config). Never changes the global default."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(
            config_file=kubeconfig or os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return kubernetes.client.ApiClient(configuration)


class KubernetesSource:
    """Watch one ConfigMap through the Kubernetes API."""

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        client: Any | None = None,
        kubeconfig: str | None = None,
        watch_timeout_seconds: int = 60,
        request_timeout_seconds: float = 10.0,
        max_backoff_seconds: float = 10.0,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self._client = client
        self.kubeconfig = kubeconfig
        self.watch_timeout_seconds = watch_timeout_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.reconnects = 0  # watches (re)started; for tests and logs

    def describe(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name} through the Kubernetes API (watch)"

    def run(self, sink: DataSink, stop: threading.Event) -> None:
        import kubernetes
        from kubernetes.client.exceptions import ApiException

        core = kubernetes.client.CoreV1Api(self._client or api_client(self.kubeconfig))
        resource_version: str | None = None
        backoff = 0.5
        while not stop.is_set():
            try:
                if resource_version is None:
                    cm = core.read_namespaced_config_map(
                        self.name, self.namespace, _request_timeout=self.request_timeout_seconds
                    )
                    resource_version = cm.metadata.resource_version
                    sink.apply(dict(cm.data or {}), origin=f"resourceVersion {resource_version}")
                watch = kubernetes.watch.Watch()
                self.reconnects += 1
                opened, events = time.monotonic(), 0
                for event in watch.stream(
                    core.list_namespaced_config_map,
                    self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.watch_timeout_seconds,
                    _request_timeout=(
                        self.request_timeout_seconds,
                        self.watch_timeout_seconds + self.request_timeout_seconds,
                    ),
                ):
                    if stop.is_set():
                        watch.stop()
                        break
                    events += 1
                    kind, obj = event.get("type"), event.get("object")
                    rv = getattr(getattr(obj, "metadata", None), "resource_version", None)
                    if kind in ("ADDED", "MODIFIED"):
                        resource_version = rv or resource_version
                        sink.apply(dict(obj.data or {}), origin=f"resourceVersion {resource_version}")
                    elif kind == "BOOKMARK":
                        resource_version = rv or resource_version
                    elif kind == "DELETED":
                        sink.unavailable(f"ConfigMap {self.namespace}/{self.name} was deleted")
                        resource_version = None
                        watch.stop()
                        break
                    elif kind == "ERROR":
                        resource_version = None  # e.g. 410 Gone: read afresh
                        watch.stop()
                        break
                if events == 0 and time.monotonic() - opened < 1.0:
                    stop.wait(backoff)  # a server that ends every watch at once must not make us spin
                    backoff = min(backoff * 2, self.max_backoff_seconds)
                else:
                    backoff = 0.5
            except ApiException as error:
                if error.status == 410:  # the resourceVersion is too old: read afresh at once
                    resource_version = None
                    continue
                if error.status == 404:
                    sink.unavailable(f"ConfigMap {self.namespace}/{self.name} not found")
                    resource_version = None
                else:
                    sink.unavailable(
                        f"Kubernetes API error {error.status} {error.reason} for ConfigMap {self.namespace}/{self.name}"
                    )
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
            except Exception as error:
                sink.unavailable(
                    f"cannot watch ConfigMap {self.namespace}/{self.name}: {type(error).__name__}: {error}"[:300]
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
