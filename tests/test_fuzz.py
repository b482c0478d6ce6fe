"""Fuzzing the custom resources: generated manifests are rejected by the schema or get a clear condition, never a crash.

Each manifest is a valid ParameterProfile or OptimizationRun with one or more fields replaced by something a
user (or a broken generator) might write: a wrong type, an extreme number, unicode, a long name, a reserved
key, an empty list. It is created through the API (the emulator runs the CRD schema: structural validation,
pruning, defaulting; CEL rules are not run, see tests/test_faults.py), and whatever the API accepts is
reconciled by the operator's runtime, which must return a status with a `Ready` condition (False with a
message when the spec is unusable) and never raise: an exception there would be a crash loop under Kopf.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.faults import GROUP, ROLLOUT, VERSION, profile_spec, stable_json, world

pytestmark = pytest.mark.slow
MANIFESTS = 520

ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63,
    -(2**63),
    10**30,
    1e308,
    -1e308,
    1e-308,
    0.5,
    -0.0,
    "",
    " ",
    "x",
    "名前",
    "🚀" * 20,
    "\u202eevil",
    "zero\u200bwidth",
    "a" * 64,
    "a" * 254,
    "a" * 5000,
    "autotune.dwcp.io.canary",
    "autotune.dwcp.io.canary-weight",
    "NaN",
    "inf",
    "-inf",
    "1e400",
    "true",
    [],
    [1, 2],
    [{}],
    {},
    {"a": {"b": {"c": [None]}}},
    "{{variant}}",
    "http://[::1",
    "ftp://x",
    "../../etc",
]


def _paths(node, prefix=()):
    """Every path into a JSON document (dict keys and list indices)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _set(doc, path, value):
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def mutate(rng: random.Random, base: dict, extra_keys: list[str]) -> dict:
    doc = copy.deepcopy(base)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        paths = [p for p in _paths(doc["spec"], ("spec",)) if len(p) > 1]
        path = rng.choice(paths)
        choice = rng.random()
        current = _get(doc, path)
        if choice < 0.45:  # the same JSON type, an odd value: what gets past the schema and tests the operator
            same = [
                v
                for v in ODD_VALUES
                if type(v) is type(current)
                or (isinstance(current, (int, float)) and isinstance(v, (int, float)) and not isinstance(v, bool))
            ]
            _set(doc, path, copy.deepcopy(rng.choice(same or ODD_VALUES)))
        elif choice < 0.75:
            _set(doc, path, copy.deepcopy(rng.choice(ODD_VALUES)))
        elif choice < 0.9 and isinstance(_get(doc, path[:-1]), dict):
            _get(doc, path[:-1])[rng.choice(extra_keys)] = copy.deepcopy(
                rng.choice(ODD_VALUES)
            )  # an unknown or misspelt field
        else:
            parent = _get(doc, path[:-1])
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
    if rng.random() < 0.1:
        doc["metadata"]["name"] = rng.choice(["A-Capital", "-dash", "x" * 254, "ok-" + "y" * 60, "dots.are.ok", "名前"])
    return doc


def _get(doc, path):
    node = doc
    for part in path:
        node = node[part]
    return node


def test_generated_manifests_are_rejected_by_the_schema_or_get_a_clear_condition(monkeypatch, capsys):
    rng = random.Random(2026)
    profile_base = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ParameterProfile",
        "metadata": {"name": "p"},
        "spec": {
            **profile_spec(),
            "guards": [{"metric": "score", "goal": "maximize", "maxDegradationPct": 5}],
            "constraints": [{"metric": "score", "min": 1, "penalty": 1}],
        },
    }
    run_base = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OptimizationRun",
        "metadata": {"name": "r"},
        "spec": {
            "profiles": ["svc"],
            "budget": {"maxProposals": 2},
            "rollout": dict(ROLLOUT),
            "agent": {"episodes": 5, "stepsPerEpisode": 5, "seed": 1},
            "exploration": {"rejectedCooldownSeconds": 60},
            "continuous": {"enabled": False, "checkIntervalSeconds": 60},
            "freezeWindows": ["00:00-01:00"],
            "prometheusUrl": "http://prometheus:9090",
        },
    }
    counts = {"rejected by the schema": 0, "Ready=False with a reason": 0, "accepted and Ready": 0}
    with world(monkeypatch, namespace="fuzz") as w:
        w.configmap("svc-config", {"config.json": stable_json({"batch": 8, "timeout": 800})})
        w.profile("svc", profile_spec())
        for i in range(MANIFESTS):
            kind = "profile" if i % 2 == 0 else "run"
            base = profile_base if kind == "profile" else run_base
            doc = mutate(rng, base, ["stpe", "minSample", "Steps", "defualt", "queries", "weigth"])
            doc["metadata"]["name"] = (
                f"{doc['metadata']['name'][:200]}-{i}".lower() if rng.random() < 0.9 else doc["metadata"]["name"]
            )
            plural = "parameterprofiles" if kind == "profile" else "optimizationruns"
            try:
                body = json.loads(
                    json.dumps(doc, allow_nan=True)
                )  # NaN/inf cannot travel as JSON: sent as strings below
                created = w.custom.create_namespaced_custom_object(GROUP, VERSION, w.namespace, plural, body)
            except ApiException as error:
                assert error.status in (400, 409, 422), (error.status, error.body, doc)
                counts["rejected by the schema"] += 1
                continue
            except ValueError:  # the client refuses to send non-JSON (NaN): also a rejection, before the API
                counts["rejected by the schema"] += 1
                continue
            name = created["metadata"]["name"]
            stored = w.emulator.get_object(plural, name, w.namespace, group=GROUP)
            try:
                if kind == "profile":
                    status = w.runtime.reconcile_profile(stored)
                else:
                    for _ in range(2):
                        result = w.runtime.reconcile_run(w.emulator.get_object(plural, name, w.namespace, group=GROUP))
                        w.now += dt.timedelta(seconds=1)
                    status = result.model_dump(mode="json", by_alias=True)
            except Exception as error:  # a crash loop under Kopf
                raise AssertionError(
                    f"{kind} manifest {i} crashed the operator: {type(error).__name__}: {error}\n"
                    f"{json.dumps(doc)[:2000]}"
                ) from error
            ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
            assert ready is not None, (kind, i, status)
            if ready["status"] == "False":
                assert ready["reason"] and ready["message"], (kind, i, ready)
                counts["Ready=False with a reason"] += 1
            else:
                counts["accepted and Ready"] += 1
            w.custom.delete_namespaced_custom_object(GROUP, VERSION, w.namespace, plural, name)
    with capsys.disabled():
        print(f"\nfuzz: {MANIFESTS} manifests: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    assert sum(counts.values()) == MANIFESTS
    assert counts["rejected by the schema"] > 50 and counts["Ready=False with a reason"] > 20
