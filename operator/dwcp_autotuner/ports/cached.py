"""A ConfigStore that answers repeated reads from memory for a while: fewer API requests per run tick.

A run's reconcile reads its target ConfigMap on every tick to see whether someone else changed it (a canary removed,
the stable key edited). Most ticks of a long rollout change nothing, so `CachedConfigStore` serves a ConfigMap it
read, or wrote, less than `max_age` seconds ago from memory. That is safe for what the operator writes: every write
is guarded by the resourceVersion of the read that justified it, so a write based on a stale read fails with
Conflict (the cache then forgets the object and the next tick re-reads). What it costs: a change made by someone
else is noticed up to `max_age` seconds later (`--configmap-cache-seconds`). Revision ConfigMaps are immutable
and are cached for good.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from ..canary.protocol import ConfigRef, ConfigSnapshot
from .base import ConfigStore, Conflict, NotFound, OwnerRef, StoredMap


class CachedConfigStore:
    def __init__(self, inner: ConfigStore, max_age: float, clock: Callable[[], float]) -> None:
        self.inner, self.max_age, self.clock = inner, max_age, clock
        self._reads: dict[tuple, tuple[float, object]] = {}  # key -> (when, snapshot or StoredMap)
        self._revisions: dict[tuple[str, str], Mapping[str, str]] = {}
        self._lock = threading.Lock()

    # --- the cache ------------------------------------------------------------------------------------------
    def _cached(self, key: tuple):
        with self._lock:
            hit = self._reads.get(key)
        if hit is not None and self.clock() - hit[0] < self.max_age:
            return hit[1]
        return None

    def _keep(self, key: tuple, value) -> None:
        with self._lock:
            self._reads[key] = (self.clock(), value)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            for key in [k for k in self._reads if k[1:3] == (namespace, name)]:
                del self._reads[key]

    # --- ConfigStore ------------------------------------------------------------------------------------------
    def read(self, ref: ConfigRef) -> ConfigSnapshot:
        key = ("read", ref.namespace, ref.name, ref.key)
        hit = self._cached(key)
        if hit is None:
            hit = self.inner.read(ref)
            self._keep(key, hit)
        return hit

    def read_fresh(self, ref: ConfigRef) -> ConfigSnapshot:
        self.forget(ref.namespace, ref.name)
        return self.read(ref)

    def write(
        self,
        ref: ConfigRef,
        *,
        expected_resource_version: str,
        set_keys: Mapping[str, str] | None = None,
        remove_keys: tuple[str, ...] = (),
    ) -> ConfigSnapshot:
        self.forget(ref.namespace, ref.name)
        try:
            written = self.inner.write(
                ref, expected_resource_version=expected_resource_version, set_keys=set_keys, remove_keys=remove_keys
            )
        except Conflict:
            raise  # forgotten above: the next read sees what changed
        self._keep(("read", ref.namespace, ref.name, ref.key), written)
        return written

    def create_revision(
        self, namespace: str, name: str, data: Mapping[str, str], *, owner: OwnerRef | None, labels: Mapping[str, str]
    ) -> None:
        self.inner.create_revision(namespace, name, data, owner=owner, labels=labels)

    def read_revision(self, namespace: str, name: str) -> Mapping[str, str]:
        with self._lock:
            hit = self._revisions.get((namespace, name))
        if hit is None:
            hit = self.inner.read_revision(namespace, name)
            with self._lock:
                self._revisions[(namespace, name)] = hit
        return hit

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
        self.forget(namespace, name)
        self.inner.put_binary(namespace, name, binary_data, data=data, owner=owner, labels=labels)

    def get_binary(self, namespace: str, name: str) -> StoredMap:
        # A missing model is remembered too: every profile check looks for its model, and most profiles have none
        # until their first run ends (which stores it through `put_binary`, forgetting this).
        key = ("binary", namespace, name)
        hit = self._cached(key)
        if hit is None:
            try:
                hit = self.inner.get_binary(namespace, name)
            except NotFound as missing:
                hit = missing
            self._keep(key, hit)
        if isinstance(hit, NotFound):
            raise NotFound(*hit.args)
        return hit
