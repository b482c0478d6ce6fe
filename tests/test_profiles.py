"""ParameterProfile validation: what the schema cannot check becomes Ready=False with a reason at validation time."""

from __future__ import annotations

import datetime as dt

from dwcp_autotuner.canary.protocol import canonical_json
from dwcp_autotuner.controller.profiles import validate_profile
from dwcp_autotuner.models.builtin import BUILTIN_SPACES
from dwcp_autotuner.ports.local import FileConfigStore

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def check(spec: dict, store: FileConfigStore, namespace: str = "team", **kw):
    status = validate_profile(spec, namespace, configs=store, metrics=None, generation=1, now=NOW, **kw)
    return next(c for c in status.conditions if c.type == "Ready")


def builtin(name: str, **extra) -> dict:
    spec = {**BUILTIN_SPACES[name].dump(), "target": {"name": f"{name}-config"}, **extra}
    for metric in spec["metrics"]:
        metric["query"] = f'{name}_{metric["name"]}{{variant="{{{{variant}}}}"}}'
    return spec


def test_a_twin_that_cannot_measure_the_profile_is_reported_when_the_profile_is_validated(tmp_path):
    store = FileConfigStore(tmp_path)
    store.put("team", "hde-config", {"config.json": canonical_json(BUILTIN_SPACES["hde"].default_config())})
    assert check(builtin("hde", twin="hde"), store).reason == "Valid"
    # The HDE space declared with the PBA twin: none of its parameters or metrics exist there.
    ready = check(builtin("hde", twin="pba"), store)
    assert (ready.status, ready.reason) == ("False", "TwinMismatch")
    assert "prediction_window" in ready.message and "compression_level" in ready.message
    assert "does not measure" in ready.message and "remove spec.twin" in ready.message
    # A metric the workload does not measure, used by a guard.
    spec = builtin("hde", twin="hde")
    spec["metrics"].append({"name": "latency_p99", "query": 'p99{variant="{{variant}}"}'})
    spec["guards"] = [{"metric": "latency_p99", "goal": "minimize"}]
    ready = check(spec, store)
    assert ready.reason == "TwinMismatch" and "latency_p99" in ready.message


def test_a_target_in_a_namespace_the_operator_may_not_change_is_refused(tmp_path):
    store = FileConfigStore(tmp_path)
    store.put("other", "hde-config", {"config.json": canonical_json(BUILTIN_SPACES["hde"].default_config())})
    spec = builtin("hde", target={"name": "hde-config", "namespace": "other"})
    ready = check(spec, store, allowed_target_namespaces=())
    assert (ready.status, ready.reason) == ("False", "TargetNamespaceNotAllowed") and "other" in ready.message
    assert check(spec, store, allowed_target_namespaces=("other",)).reason == "Valid"
    assert check(spec, store, allowed_target_namespaces=None).reason == "Valid"  # no restriction configured


def test_every_problem_of_a_profile_is_named_not_the_first_and_a_count():
    from dwcp_autotuner.controller.profiles import parse_profile

    problem = parse_profile(
        {
            "target": {"name": "svc-config"},
            "parameters": [
                {"name": "batch", "min": 10, "max": 1, "default": 5},
                {"name": "timeout", "min": 100, "max": 1000, "default": 5000},
            ],
            "metrics": [{"name": "score", "query": "score"}],
            "objective": [{"metric": "score", "goal": "sideways"}],
        }
    )
    assert isinstance(problem, str)
    # every problem, each with its field (cross-field checks such as "the objective names a metric" run once
    # the fields themselves are valid)
    assert "parameters[0]" in problem and "parameters[1]" in problem and "objective[0].goal" in problem, problem
    assert "more problem" not in problem
