"""ports/cached.py: repeated reads from memory, every write still guarded, nothing stale after a write or a
conflict; and the profile status written only when it changed (handlers/runtime.same_status)."""

from __future__ import annotations

import pytest

from dwcp_autotuner.canary.protocol import ConfigRef
from dwcp_autotuner.handlers.runtime import same_status
from dwcp_autotuner.ports.base import Conflict, NotFound
from dwcp_autotuner.ports.cached import CachedConfigStore
from dwcp_autotuner.ports.local import FileConfigStore


class Counting(FileConfigStore):
    def __init__(self, root):
        super().__init__(root)
        self.reads = 0

    def read(self, ref):
        self.reads += 1
        return super().read(ref)

    def get_binary(self, namespace, name):
        self.reads += 1
        return super().get_binary(namespace, name)


def test_reads_are_served_from_memory_until_they_age_and_a_write_or_conflict_is_never_stale(tmp_path):
    inner, now = Counting(tmp_path), [0.0]
    inner.put("ns", "cm", {"config.json": "{}"})
    store = CachedConfigStore(inner, max_age=30.0, clock=lambda: now[0])
    ref = ConfigRef("ns", "cm")
    first = store.read(ref)
    for _ in range(5):
        now[0] += 5
        assert store.read(ref) == first
    assert inner.reads == 1
    now[0] += 6  # 31 s after the read
    store.read(ref)
    assert inner.reads == 2

    written = store.write(ref, expected_resource_version=store.read(ref).resource_version, set_keys={"k": "v"})
    assert store.read(ref) == written and store.read(ref).data["k"] == "v"  # what was written, without a read
    assert inner.reads == 2

    inner.put("ns", "cm", {"config.json": "{}", "k": "theirs"})  # someone else, unseen by the cache
    assert store.read(ref).data["k"] == "v"  # stale, but…
    with pytest.raises(Conflict):  # …a write based on it fails
        store.write(ref, expected_resource_version=store.read(ref).resource_version, set_keys={"k": "mine"})
    assert store.read(ref).data["k"] == "theirs"  # and the next read sees theirs


def test_a_missing_model_is_looked_up_once_per_max_age_and_is_seen_as_soon_as_it_is_stored(tmp_path):
    # Every profile check looks for the profile's model; before its first run ends there is none, and each look
    # was a GET answered 404 by the API server.
    inner, now = Counting(tmp_path), [0.0]
    store = CachedConfigStore(inner, max_age=30.0, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(NotFound, match="ns/svc-model"):
            store.get_binary("ns", "svc-model")
        now[0] += 5
    assert inner.reads == 1
    now[0] += 20  # 35 s after the look: looked up again
    with pytest.raises(NotFound):
        store.get_binary("ns", "svc-model")
    assert inner.reads == 2

    store.put_binary("ns", "svc-model", {"model.zst": b"\x01"}, owner=None, labels={})  # stored through the cache
    assert store.get_binary("ns", "svc-model").binary == {"model.zst": b"\x01"}


def test_a_status_equal_but_for_nulls_the_server_dropped_is_not_rewritten():
    new = {"phase": "Ready", "message": None, "conditions": [{"type": "Ready", "status": "True", "reason": None}]}
    stored = {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}], "kopf": {"x": 1}}
    assert same_status(new, stored)
    assert not same_status({**new, "phase": "NotReady"}, stored)
