"""The CRDs in crds/ are generated from the models, are structural, and agree with the models and the examples.

What an apiserver would check and this file cannot: the CEL rules (`x-kubernetes-validations`) are only
checked for presence and for the fields they read, not compiled or evaluated.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from dwcp_autotuner.models import crd as crdgen
from dwcp_autotuner.models.builtin import BUILTIN_SPACES
from dwcp_autotuner.models.profile import ParameterProfileSpec, ProfileStatus
from dwcp_autotuner.models.run import (
    Condition,
    OptimizationRunSpec,
    ProposalRecord,
    ProposalStatus,
    Recommendation,
    RunStatus,
    TrainingStatus,
    VariantMeans,
)
from tests.kube import running_emulator
from tests.support.tools import find_tool

ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT / "crds"
EXAMPLES = ROOT / "examples"
PROFILE_CRD = "parameterprofiles.autotune.dwcp.io"
RUN_CRD = "optimizationruns.autotune.dwcp.io"
SPEC_MODELS: dict[str, type[BaseModel]] = {
    "ParameterProfile": ParameterProfileSpec,
    "OptimizationRun": OptimizationRunSpec,
}


def _load_crds() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        docs[doc["metadata"]["name"]] = doc
    return docs


CRDS = _load_crds()


def _schema(name: str) -> dict[str, Any]:
    return CRDS[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _schema_for_kind(kind: str) -> dict[str, Any]:
    for doc in CRDS.values():
        if doc["spec"]["names"]["kind"] == kind:
            return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise KeyError(kind)


def _examples() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                out.append((path.name, doc))
    return out


# --- OpenAPI v3 (Kubernetes flavour) -> JSON schema draft 4, and apiserver-like defaulting -------------
_K8S_ONLY = {
    "nullable",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
    "default",
    "description",
    "format",
}


def to_jsonschema(node: Any) -> Any:
    """Draft 4 has OpenAPI 3.0's boolean exclusiveMinimum/Maximum; `nullable` becomes a `null` type."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _K8S_ONLY:
            continue
        if key == "properties":
            out[key] = {k: to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = to_jsonschema(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = [*(out["type"] if isinstance(out["type"], list) else [out["type"]]), "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def schema_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """`path: message` for every violation, like the apiserver's `spec.parameters[0].min: ...`."""
    validator = jsonschema.Draft4Validator(to_jsonschema(schema))
    errors = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        path = ""
        for part in error.absolute_path:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        if error.validator == "required":
            missing = re.search(r"'([^']+)' is a required property", error.message)
            path = f"{path}.{missing.group(1)}" if path and missing else (missing.group(1) if missing else path)
        errors.append(f"{path}: {error.message}")
    return errors


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Fill in `default`s of missing fields, as the apiserver does on every write."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name, item in value.items():
            sub = props.get(name, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                apply_defaults(item, sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


# --- structural schema checker --------------------------------------------------------------------------
_ALLOWED_KEYS = {
    "type",
    "description",
    "nullable",
    "default",
    "enum",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
}
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def structural_violations(node: Any, path: str = "", *, in_status: bool = False) -> list[str]:
    """What kube-apiserver's structural-schema check would say (plus this project's own conventions)."""
    problems: list[str] = []
    where = path or "<root>"
    if not isinstance(node, dict):
        return [f"{where}: not a schema object"]
    for key in node:
        if key.startswith("$") or key in ("definitions", "title", "const"):
            problems.append(f"{where}: {key} must not appear (inline and translate everything)")
        elif key in ("anyOf", "oneOf", "allOf", "not"):
            # The only junctor a structural schema may use with types inside is int-or-string's; we use none.
            problems.append(f"{where}: {key} is not used by these CRDs")
        elif key not in _ALLOWED_KEYS:
            problems.append(f"{where}: unexpected keyword {key}")
    kind = node.get("type")
    untyped_ok = (
        node.get("x-kubernetes-int-or-string") is True or node.get("x-kubernetes-preserve-unknown-fields") is True
    )
    if kind is None and not untyped_ok:
        problems.append(f"{where}: no type (and neither x-kubernetes-int-or-string nor preserve-unknown-fields)")
    if kind is not None and kind not in _TYPES:
        problems.append(f"{where}: type {kind!r}")
    if "x-kubernetes-preserve-unknown-fields" in node and node["x-kubernetes-preserve-unknown-fields"] is not True:
        problems.append(f"{where}: x-kubernetes-preserve-unknown-fields must be true when set")
    if node.get("x-kubernetes-int-or-string") and kind is not None:
        problems.append(f"{where}: int-or-string with a type")
    if "nullable" in node and not isinstance(node["nullable"], bool):
        problems.append(f"{where}: nullable must be a boolean")
    if node.get("nullable") and "enum" in node:
        problems.append(f"{where}: nullable enum (the apiserver rejects null against the enum)")
    for bound in ("Minimum", "Maximum"):
        exclusive = node.get(f"exclusive{bound}")
        if exclusive is not None and (not isinstance(exclusive, bool) or bound.lower() not in node):
            problems.append(f"{where}: exclusive{bound} must be a boolean next to {bound.lower()} (OpenAPI v3.0)")
    if node.get("uniqueItems"):
        problems.append(f"{where}: uniqueItems is forbidden in CRDs")
    if kind == "array" and "items" not in node:
        problems.append(f"{where}: array without items")
    if "items" in node and kind != "array":
        problems.append(f"{where}: items on a non-array")
    extra = node.get("additionalProperties")
    if extra is not None:
        if not isinstance(extra, dict):
            problems.append(f"{where}: additionalProperties must be a schema (false is not allowed)")
        if node.get("properties"):
            problems.append(f"{where}: properties and additionalProperties are mutually exclusive")
    if ("properties" in node or extra is not None) and kind != "object":
        problems.append(f"{where}: properties on a non-object")
    for name in node.get("required", []):
        if name not in node.get("properties", {}):
            problems.append(f"{where}: required {name!r} is not a property")
    if "default" in node:
        if in_status:
            problems.append(f"{where}: default in the status")
        elif node["default"] is None:
            problems.append(f"{where}: null default")
        else:
            try:
                jsonschema.Draft4Validator(to_jsonschema(node)).validate(node["default"])
            except jsonschema.ValidationError as exc:
                problems.append(f"{where}: default {node['default']!r} does not validate: {exc.message}")
    for rule in node.get("x-kubernetes-validations", []):
        if (
            set(rule) - {"rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"}
            or "rule" not in rule
        ):
            problems.append(f"{where}: malformed x-kubernetes-validations entry {rule}")
    for name, sub in node.get("properties", {}).items():
        problems += structural_violations(sub, f"{path}.{name}" if path else name, in_status=in_status)
    if isinstance(node.get("items"), dict):
        problems += structural_violations(node["items"], f"{path}[]", in_status=in_status)
    if isinstance(extra, dict):
        problems += structural_violations(extra, f"{path}[*]", in_status=in_status)
    return problems


# --- generated files ------------------------------------------------------------------------------------
def test_crds_dir_matches_the_models():
    diffs = crdgen.check(CRD_DIR)
    assert not diffs, "crds/ is stale; run `python -m dwcp_autotuner.models.crd`:\n" + "\n".join(diffs)
    assert set(CRDS) == {PROFILE_CRD, RUN_CRD}
    assert [c for c in crdgen.build_crds()] == [CRDS[c["metadata"]["name"]] for c in crdgen.build_crds()]


def test_module_entry_point_check_passes_on_crds():
    ok = subprocess.run(
        [sys.executable, "-m", "dwcp_autotuner.models.crd", "--check", "--out", str(CRD_DIR)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "up to date" in ok.stdout


def test_cli_writes_and_check_fails_with_a_diff_on_a_stale_copy(tmp_path, capsys):
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    capsys.readouterr()

    stale = tmp_path / f"{PROFILE_CRD}.yaml"
    stale.write_text(stale.read_text(encoding="utf-8").replace("min must be below max", "min must be below MAX"))
    (tmp_path / f"{RUN_CRD}.yaml").unlink()
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "-                    message: min must be below MAX" in out
    assert "+                    message: min must be below max" in out
    assert "--- /dev/null" in out and "stale" in err


def test_files_carry_the_generated_header():
    for path in CRD_DIR.glob("*.yaml"):
        head = path.read_text(encoding="utf-8").splitlines()[:5]
        assert head[0].startswith("# GENERATED") and any("python -m dwcp_autotuner.models.crd" in line for line in head)


# --- what the apiserver checks -----------------------------------------------------------------------------
def _k8s_version() -> str:
    latest = kubernetes_validate.latest_version()
    return "1.35" if tuple(map(int, latest.split("."))) >= (1, 35) else latest


@pytest.mark.parametrize("name", [PROFILE_CRD, RUN_CRD])
def test_crd_passes_kubernetes_validate_strict(name):
    kubernetes_validate.validate(CRDS[name], _k8s_version(), strict=True)


@pytest.mark.parametrize("name", [PROFILE_CRD, RUN_CRD])
def test_schema_is_structural(name):
    schema = _schema(name)
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    root = {k: v for k, v in schema.items() if k != "properties"}
    problems = structural_violations(
        {**root, "properties": {k: v for k, v in schema["properties"].items() if k != "status"}}
    )
    problems += structural_violations(status, "status", in_status=True)
    assert not problems, "\n".join(problems)
    assert schema["properties"]["metadata"] == {"type": "object"}  # only name/generateName could be restricted
    assert spec["type"] == "object" and status["type"] == "object"


def test_names_columns_and_subresources():
    profile, run = CRDS[PROFILE_CRD]["spec"], CRDS[RUN_CRD]["spec"]
    for spec in (profile, run):
        assert spec["group"] == "autotune.dwcp.io" and spec["scope"] == "Namespaced"
        assert spec["names"]["categories"] == ["autotune"]
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
    assert profile["names"]["shortNames"] == ["pprof", "pp"]
    assert run["names"]["shortNames"] == ["optrun", "or"]
    columns = {
        s["names"]["kind"]: [(c["name"], c["jsonPath"]) for c in s["versions"][0]["additionalPrinterColumns"]]
        for s in (profile, run)
    }
    assert columns["ParameterProfile"] == [
        ("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        ("Target", ".spec.target.name"),
        ("Parameters", ".status.parameters"),
        ("Twin", ".status.twin"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    assert columns["OptimizationRun"] == [
        ("Phase", ".status.phase"),
        ("Profile", ".status.summary.profile"),
        ("Step", ".status.summary.step"),
        ("Weight", ".status.current.canaryWeight"),
        ("Proposals", ".status.summary.proposals"),
        ("Improvement", ".status.summary.improvement"),
        ("Message", ".status.summary.message"),
        ("Age", ".metadata.creationTimestamp"),
        ("Profiles", ".spec.profiles"),
    ]
    # every column points at a field that exists in the schema
    for spec in (profile, run):
        schema = spec["versions"][0]["schema"]["openAPIV3Schema"]
        for column in spec["versions"][0]["additionalPrinterColumns"]:
            if column["jsonPath"].startswith(".metadata"):
                continue
            node = schema
            for part in re.sub(r"\[.*?\]", "", column["jsonPath"]).strip(".").split("."):
                node = node["properties"][part]
                node = node.get("items", node)
            assert node.get("type"), column


def test_target_is_required_in_the_crd_but_optional_in_the_model():
    spec = _schema(PROFILE_CRD)["properties"]["spec"]
    assert "target" in spec["required"]
    assert "nullable" not in spec["properties"]["target"]
    assert ParameterProfileSpec.model_fields["target"].is_required() is False


def test_number_or_string_values_are_untyped_and_preserved():
    item = _schema(PROFILE_CRD)["properties"]["spec"]["properties"]["parameters"]["items"]
    assert item["properties"]["default"] == {
        "description": item["properties"]["default"]["description"],
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert item["properties"]["choices"]["items"] == {"x-kubernetes-preserve-unknown-fields": True}
    current = _schema(RUN_CRD)["properties"]["status"]["properties"]["current"]
    assert current["properties"]["config"]["additionalProperties"] == {"x-kubernetes-preserve-unknown-fields": True}


def test_cel_rules_are_on_the_parameters_and_read_non_nullable_fields():
    item = _schema(PROFILE_CRD)["properties"]["spec"]["properties"]["parameters"]["items"]
    assert {
        "rule": "!has(self.min) || !has(self.max) || self.min < self.max",
        "message": "min must be below max",
    } in item["x-kubernetes-validations"]
    # A null would reach the rule as CEL null and fail with "no such overload"; non-nullable, it is dropped first.
    assert "nullable" not in item["properties"]["min"] and "nullable" not in item["properties"]["max"]
    constraint = _schema(PROFILE_CRD)["properties"]["spec"]["properties"]["constraints"]["items"]
    assert len(constraint["x-kubernetes-validations"]) == 2
    for rule in item["x-kubernetes-validations"] + constraint["x-kubernetes-validations"]:
        props = item if rule in item["x-kubernetes-validations"] else constraint
        for used in re.findall(r"self\.(\w+)", rule["rule"]):
            assert used in props["properties"] and "nullable" not in props["properties"][used]


def test_openapi_details_exclusive_bounds_nullable_and_defaults():
    agent = _schema(RUN_CRD)["properties"]["spec"]["properties"]["agent"]["properties"]
    assert agent["learningRate"]["minimum"] == 0 and agent["learningRate"]["exclusiveMinimum"] is True
    assert agent["gamma"]["maximum"] == 1 and agent["gamma"]["exclusiveMaximum"] is True
    assert agent["maxGradNorm"] == {**agent["maxGradNorm"], "type": "number", "nullable": True, "default": 10.0}
    assert agent["episodes"]["default"] == 200  # RunAgentSettings overrides AgentSettings' 1000
    twin = _schema(PROFILE_CRD)["properties"]["spec"]["properties"]["twin"]
    assert twin["enum"] == ["hde", "pba", "acp"] and "nullable" not in twin and "default" not in twin


def test_apiserver_defaults_agree_with_the_model_defaults():
    """Defaulting by the apiserver must not change what the model makes of a spec."""
    for name, doc in _examples():
        schema = _schema_for_kind(doc["kind"])["properties"]["spec"]
        model = SPEC_MODELS[doc["kind"]]
        minimal = {"profiles": ["x"]} if doc["kind"] == "OptimizationRun" else doc["spec"]
        for spec in (doc["spec"], minimal):
            defaulted = apply_defaults(copy.deepcopy(spec), schema)
            assert model.model_validate(defaulted).dump() == model.model_validate(spec).dump(), name


def test_unsupported_union_is_an_error_not_a_wrong_crd():
    class A(BaseModel):
        a: int

    class B(BaseModel):
        b: str

    class Odd(BaseModel):
        x: A | B

    with pytest.raises(crdgen.SchemaConversionError, match="x"):
        crdgen.structural_schema(Odd)


# --- the examples --------------------------------------------------------------------------------------
EXAMPLE_NAMES = ["hde-profile.yaml", "pba-profile.yaml", "acp-profile.yaml", "run.yaml"]


def test_all_examples_exist():
    assert sorted(name for name, _ in _examples()) == sorted(EXAMPLE_NAMES)


@pytest.mark.parametrize("name,doc", _examples(), ids=[n for n, _ in _examples()])
def test_example_validates_against_the_crd_and_the_model(name, doc):
    assert doc["apiVersion"] == "autotune.dwcp.io/v1alpha1"
    schema = _schema_for_kind(doc["kind"])
    assert schema_errors(doc, schema) == []
    model = SPEC_MODELS[doc["kind"]].model_validate(doc["spec"])
    if doc["kind"] == "ParameterProfile":
        assert model.target is not None and model.twin is not None
        assert all(m.query and "{{variant}}" in m.query and "{{window}}" in m.query for m in model.metrics)


@pytest.mark.parametrize("twin", ["hde", "pba", "acp"])
def test_example_profiles_are_the_builtin_spaces(twin):
    doc = yaml.safe_load((EXAMPLES / f"{twin}-profile.yaml").read_text(encoding="utf-8"))
    spec = ParameterProfileSpec.model_validate(doc["spec"])
    builtin = BUILTIN_SPACES[twin]
    assert spec.twin == twin and doc["metadata"]["name"] == twin and spec.target.name == f"{twin}-config"
    assert [p.dump() for p in spec.parameters] == [p.dump() for p in builtin.parameters]
    assert spec.objective == builtin.objective and spec.constraints == builtin.constraints
    assert [m.name for m in spec.metrics] == [m.name for m in builtin.metrics]


def test_example_run_names_the_example_profiles():
    run = yaml.safe_load((EXAMPLES / "run.yaml").read_text(encoding="utf-8"))
    profiles = {doc["metadata"]["name"] for _, doc in _examples() if doc["kind"] == "ParameterProfile"}
    assert set(run["spec"]["profiles"]) == profiles == {"hde", "pba", "acp"}


# Examples for any service (not the DWCP components): a subfolder, so `kubectl apply -f examples/` (the
# quickstart) applies only the DWCP profiles and run.
GENERIC = EXAMPLES / "generic"


@pytest.mark.parametrize("path", sorted(GENERIC.glob("*.yaml")), ids=lambda p: p.name)
def test_generic_examples_validate_against_the_crd_and_the_model(path):
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert docs
    for doc in docs:
        assert doc["apiVersion"] == "autotune.dwcp.io/v1alpha1"
        assert schema_errors(doc, _schema_for_kind(doc["kind"])) == []
        model = SPEC_MODELS[doc["kind"]].model_validate(doc["spec"])
        if doc["kind"] == "ParameterProfile":
            assert model.target is not None and model.twin is None  # any service: no built-in twin, online learning
            assert all(m.query and "{{variant}}" in m.query and "{{window}}" in m.query for m in model.metrics)


def test_generic_run_names_the_generic_profile():
    profiles = {
        d["metadata"]["name"]
        for p in GENERIC.glob("*.yaml")
        for d in yaml.safe_load_all(p.read_text(encoding="utf-8"))
        if d and d["kind"] == "ParameterProfile"
    }
    runs = [
        d
        for p in GENERIC.glob("*.yaml")
        for d in yaml.safe_load_all(p.read_text(encoding="utf-8"))
        if d and d["kind"] == "OptimizationRun"
    ]
    assert profiles == {"web"} and [r["spec"]["profiles"] for r in runs] == [["web"]]


def _hde_doc() -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / "hde-profile.yaml").read_text(encoding="utf-8"))


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    "path,value,field,in_model",
    [
        ("spec.objective.0.goal", "maximise", "spec.objective[0].goal", True),
        ("spec.objective.1.weight", -1, "spec.objective[1].weight", True),
        ("spec.objective.1.scale", 0, "spec.objective[1].scale", True),
        ("spec.guards.0.maxDegradationPct", -5, "spec.guards[0].maxDegradationPct", True),
        ("spec.target", _DELETE, "spec.target", False),
        ("spec.target.name", "Not_A_DNS_Name", "spec.target.name", True),
        ("spec.parameters.0.scale", "log10", "spec.parameters[0].scale", True),
        ("spec.parameters.0.name", "9lives", "spec.parameters[0].name", True),
        ("spec.metrics", [], "spec.metrics", True),
        ("spec.twin", "xyz", "spec.twin", True),
    ],
)
def test_invalid_profile_fails_schema_validation_naming_the_field(path, value, field, in_model):
    doc = _set(_hde_doc(), path, value)
    errors = schema_errors(doc, _schema(PROFILE_CRD))
    assert errors and any(e.startswith(f"{field}:") for e in errors), errors
    if in_model:  # the model rejects it too (the operator validates after the apiserver)
        with pytest.raises(ValidationError):
            ParameterProfileSpec.model_validate(doc["spec"])
    else:  # target is optional in the model (local `tune`), required only in the CRD
        ParameterProfileSpec.model_validate(doc["spec"])


@pytest.mark.parametrize(
    "path,value,field",
    [
        ("spec.mode", "apply", "spec.mode"),
        ("spec.profiles", [], "spec.profiles"),
        ("spec.agent.gamma", 1.0, "spec.agent.gamma"),
        ("spec.agent.learningRate", 0, "spec.agent.learningRate"),
        ("spec.rollout.significance", 0.5, "spec.rollout.significance"),
        ("spec.budget.maxProposals", 0, "spec.budget.maxProposals"),
        ("spec.rollout.test", "ttest", "spec.rollout.test"),
    ],
)
def test_invalid_run_fails_schema_validation_naming_the_field(path, value, field):
    doc = _set(yaml.safe_load((EXAMPLES / "run.yaml").read_text(encoding="utf-8")), path, value)
    errors = schema_errors(doc, _schema(RUN_CRD))
    assert errors and any(e.startswith(f"{field}:") for e in errors), errors
    with pytest.raises(ValidationError):
        OptimizationRunSpec.model_validate(doc["spec"])


def test_number_or_string_default_is_left_to_the_model():
    """The CRD cannot type `int | float | str`; pydantic is the check that rejects a non-scalar default."""
    schema = _schema(PROFILE_CRD)
    for good in (3, 0.95, "zstd"):
        doc = _set(_hde_doc(), "spec.parameters.0.default", good)
        assert schema_errors(doc, schema) == []
    for bad in ({"level": 3}, [3]):
        doc = _set(_hde_doc(), "spec.parameters.0.default", bad)
        assert schema_errors(doc, schema) == []  # preserved by the apiserver ...
        with pytest.raises(ValidationError, match=r"parameters\.0\.default"):
            ParameterProfileSpec.model_validate(doc["spec"])  # ... and rejected by the operator


def test_min_not_below_max_is_left_to_cel_and_the_model():
    doc = _set(_hde_doc(), "spec.parameters.0.min", 9)
    assert schema_errors(doc, _schema(PROFILE_CRD)) == []  # cross-field: not expressible in OpenAPI
    with pytest.raises(ValidationError, match="must be below max"):
        ParameterProfileSpec.model_validate(doc["spec"])


# --- status: what the operator writes must pass the status schema ------------------------------------
def _full_run_status() -> RunStatus:
    condition = Condition(
        type="Progressing",
        status="True",
        reason="CanaryStep",
        message="25%",
        last_transition_time="2025-01-01T00:00:00Z",
        observed_generation=2,
    )
    return RunStatus(
        phase="RollingOut",
        observed_generation=2,
        conditions=[condition],
        started_at="2025-01-01T00:00:00Z",
        proposals=2,
        current=ProposalStatus(
            number=2,
            profile="pba",
            config={"prediction_window": 80, "confidence_threshold": 0.9, "mode": "fast"},
            stable_config={"prediction_window": 60, "confidence_threshold": 0.95, "mode": "fast"},
            revision="pba-config-rev-2",
            step_index=1,
            canary_weight=25,
            step_started_at="2025-01-01T00:10:00Z",
            means=VariantMeans(stable=1.0, canary=1.1),
            p_value=0.0004,
            samples={"stable": 10, "canary": 10},
            stable_digest="ab" * 32,
            pending_action="SetWeight",
            expected_improvement_pct=4.2,
        ),
        history=[
            ProposalRecord(
                number=1,
                profile="hde",
                config={"compression_level": 4},
                verdict="Promoted",
                reason="Significant",
                improvement_pct=3.1,
                p_value=0.0001,
                revision="r1",
                finished_at="2025-01-01T00:05:00Z",
            )
        ],
        recommendations=[
            Recommendation(
                profile="acp",
                config={"timeout_ms": 2000},
                expected_improvement_pct=2.0,
                confidence=0.9,
                reason="Recommend mode",
            )
        ],
        improvement_pct=3.1,
        training={
            "hde": TrainingStatus(
                episodes=10, episodes_total=200, env_steps=1000, last_return=1.5, epsilon=0.5, wall_seconds=12.0
            )
        },
        message="rolling out proposal 2",
    )


def test_status_written_by_the_operator_passes_the_status_schema():
    run_status = _schema(RUN_CRD)["properties"]["status"]
    for status in (RunStatus(), _full_run_status()):
        dumped = status.dump()
        assert schema_errors(dumped, run_status) == []
        assert RunStatus.model_validate(dumped) == status
    profile_status = _schema(PROFILE_CRD)["properties"]["status"]
    status = ProfileStatus(
        observed_generation=3,
        parameters=3,
        twin="hde",
        message="ok",
        conditions=[
            Condition(type="Ready", status="True", reason="Valid", last_transition_time="2025-01-01T00:00:00Z")
        ],
    )
    assert schema_errors(status.dump(), profile_status) == []
    assert schema_errors({"phase": "Exploding"}, run_status) == [
        "phase: 'Exploding' is not one of "
        "['Pending', 'Pretraining', 'Proposing', 'RollingOut', "
        "'Succeeded', 'RolledBack', 'Unchanged', 'Aborted', 'Failed']"
    ]


# --- the real kubectl ----------------------------------------------------------------------------------
def _offline_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config: nothing here may reach a real cluster
    return env


def test_kubectl_parses_crds_and_examples(tmp_path):
    kubectl = find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found (neither .tools/bin/kubectl nor on PATH)")
    # `annotate --local` decodes every document offline (no API server, no discovery).
    result = subprocess.run(
        [
            kubectl,
            "annotate",
            "--local",
            "--dry-run=client",
            "-o",
            "name",
            "-f",
            str(CRD_DIR),
            "-f",
            str(EXAMPLES),
            "dwcp.io/parsed=true",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_offline_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(
        [
            f"customresourcedefinition.apiextensions.k8s.io/{PROFILE_CRD}",
            f"customresourcedefinition.apiextensions.k8s.io/{RUN_CRD}",
            "parameterprofile.autotune.dwcp.io/hde",
            "parameterprofile.autotune.dwcp.io/pba",
            "parameterprofile.autotune.dwcp.io/acp",
            "optimizationrun.autotune.dwcp.io/dwcp-tune",
        ]
    )


def test_kubectl_apply_dry_run_client(tmp_path):
    """`kubectl apply --dry-run=client` of the CRDs and examples, with discovery served by the emulator.

    A client dry run needs an API server only for discovery and the current objects; the emulator answers
    both, so nothing here reaches a real cluster and nothing is stored.
    """
    kubectl = find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found (neither .tools/bin/kubectl nor on PATH)")
    with running_emulator([CRD_DIR]) as (emulator, _url, kubeconfig):
        result = subprocess.run(
            [
                kubectl,
                "--kubeconfig",
                str(kubeconfig),
                "--cache-dir",
                str(tmp_path / "cache"),
                "apply",
                "--dry-run=client",
                "-f",
                str(CRD_DIR),
                "-f",
                str(EXAMPLES),
                "--request-timeout=10s",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=_offline_env(tmp_path),
        )
        assert result.returncode == 0, result.stderr
        assert f"customresourcedefinition.apiextensions.k8s.io/{PROFILE_CRD}" in result.stdout
        assert "parameterprofile.autotune.dwcp.io/hde created (dry run)" in result.stdout
        assert "optimizationrun.autotune.dwcp.io/dwcp-tune created (dry run)" in result.stdout
        # A dry run stores nothing.
        assert emulator.list_objects("parameterprofiles", "default", group="autotune.dwcp.io") == []


def test_every_example_run_can_conclude_at_the_charts_default_sample_floor():
    """An example run whose analysis interval cannot hold minSamples samples would fail with InvalidSpec."""
    from dwcp_autotuner.models.run import resolve_sampling

    floor = yaml.safe_load((ROOT / "charts" / "dwcp-autotuner" / "values.yaml").read_text(encoding="utf-8"))[
        "minSampleSeconds"
    ]
    runs = [
        (p.name, d)
        for p in sorted(EXAMPLES.rglob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text(encoding="utf-8"))
        if d and d.get("kind") == "OptimizationRun"
    ]
    assert len(runs) >= 2
    for name, doc in runs:
        _, problem = resolve_sampling(OptimizationRunSpec.model_validate(doc["spec"]), floor)
        assert problem is None, f"{name}: {problem}"
