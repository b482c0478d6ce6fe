"""
Structural-schema handling of custom resources, as the apiserver does it for CRDs.

Order of operations on every write (as in kube-apiserver):
1. drop ``null`` values of fields that are not ``nullable: true``;
2. prune unknown fields (unless ``x-kubernetes-preserve-unknown-fields: true``);
   NB: a bare ``type: object`` without properties prunes EVERYTHING below it — as in a real cluster;
3. apply ``default``s of missing fields (recursively, also inside freshly defaulted values);
4. validate with the OpenAPI v3 schema (via ``jsonschema``, draft 4 semantics, which matches
   OpenAPI 3.0's boolean ``exclusiveMinimum``/``exclusiveMaximum``).

Supported keywords: type, properties, additionalProperties, items, required, enum, minimum,
maximum, exclusiveMinimum/Maximum, multipleOf, pattern, minLength, maxLength, minItems,
maxItems, uniqueItems, minProperties, maxProperties, allOf/anyOf/oneOf/not, nullable,
x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields, x-kubernetes-embedded-resource.
NOT supported: x-kubernetes-validations (CEL), x-kubernetes-list-type/map-keys uniqueness,
``format`` checks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import jsonschema


def _is_object_schema(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" or "properties" in schema or "additionalProperties" in schema


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def drop_nulls(value: Any, schema: dict[str, Any] | None) -> Any:
    """Remove null-valued fields which are not nullable (the apiserver does so before defaulting)."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        for key in list(value):
            sub = props.get(key) if key in props else addl if isinstance(addl, dict) else None
            if value[key] is None and not (sub or {}).get("nullable", False):
                del value[key]
            else:
                drop_nulls(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            drop_nulls(item, schema["items"])
    return value


def prune(
    value: Any, schema: dict[str, Any] | None, path: str = "", *, root: bool = False, pruned: list[str] | None = None
) -> list[str]:
    """Drop unknown fields in place. Returns the paths of the dropped fields."""
    pruned = [] if pruned is None else pruned
    if not isinstance(schema, dict):
        return pruned
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        embedded = root or schema.get("x-kubernetes-embedded-resource", False)
        for key in list(value):
            if embedded and key in ("apiVersion", "kind", "metadata"):
                continue  # never pruned (metadata is handled by the apiserver itself)
            if key in props:
                prune(value[key], props[key], _join(path, key), pruned=pruned)
            elif isinstance(addl, dict):
                prune(value[key], addl, f"{path}[{key}]" if path else key, pruned=pruned)
            elif addl is True or preserve:
                pass
            elif _is_object_schema(schema) or not schema.get("type"):
                if not preserve and not schema.get("x-kubernetes-int-or-string"):
                    del value[key]
                    pruned.append(_join(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for idx, item in enumerate(value):
            prune(item, schema["items"], _join(path, idx), pruned=pruned)
    return pruned


def apply_defaults(value: Any, schema: dict[str, Any] | None) -> Any:
    """Fill in the ``default`` values of missing fields, recursively, in place."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and isinstance(sub, dict) and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        addl = schema.get("additionalProperties")
        for key, sub_value in value.items():
            if key in props:
                apply_defaults(sub_value, props[key])
            elif isinstance(addl, dict):
                apply_defaults(sub_value, addl)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


_K8S_ONLY_KEYS = {
    "nullable",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "format",
    "default",
    "example",
    "externalDocs",
    "description",
    "title",
}


def to_jsonschema(schema: Any) -> Any:
    """Convert an OpenAPI v3 (Kubernetes flavour) schema into a draft-4 JSON schema."""
    if isinstance(schema, list):
        return [to_jsonschema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _K8S_ONLY_KEYS:
            continue
        if key in ("properties", "patternProperties", "definitions"):
            result[key] = {k: to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            result[key] = to_jsonschema(value)
        else:
            result[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result.setdefault("anyOf", []).append({"type": ["integer", "string"]})
    if schema.get("nullable"):
        if "type" in result:
            types = result["type"] if isinstance(result["type"], list) else [result["type"]]
            result["type"] = types + ["null"]
        if "enum" in result and None not in result["enum"]:
            result["enum"] = list(result["enum"]) + [None]
    return result


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def validate(obj: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, str]]:
    """
    Validate an object, return the apiserver-style ``causes``: ``{reason, message, field}``.

    The messages mimic kube-apiserver's, e.g.
    ``Unsupported value: "x": supported values: "a", "b"`` or
    ``Invalid value: 0: spec.replicas in body should be greater than or equal to 1``.
    """
    # The apiserver validates metadata on its own; the CRD schema may only restrict name/generateName.
    target = {k: v for k, v in obj.items() if k != "metadata"}
    js = to_jsonschema(schema)
    if isinstance(js, dict) and isinstance(js.get("properties"), dict):
        js["properties"] = {k: v for k, v in js["properties"].items() if k != "metadata"}
        if "required" in js:
            js["required"] = [r for r in js["required"] if r != "metadata"]
    validator = jsonschema.Draft4Validator(js)
    causes: list[dict[str, str]] = []
    for error in sorted(validator.iter_errors(target), key=lambda e: list(map(str, e.absolute_path))):
        causes.extend(_error_to_causes(error))
    # Deduplicate while preserving the order.
    seen: set[tuple[str, str]] = set()
    unique = []
    for cause in causes:
        if (cause["field"], cause["message"]) not in seen:
            seen.add((cause["field"], cause["message"]))
            unique.append(cause)
    return unique


def _path_of(error: jsonschema.ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path = _join(path, part)
    return path


def _error_to_causes(error: jsonschema.ValidationError) -> Iterator[dict[str, str]]:
    field = _path_of(error)
    value = error.instance
    kind = error.validator
    limit = error.validator_value
    if kind == "required":
        present = value if isinstance(value, dict) else {}
        for name in limit:
            if name not in present:
                yield {"reason": "FieldValueRequired", "message": "Required value", "field": _join(field, name)}
        return
    if kind == "enum":
        supported = ", ".join(_fmt(v) for v in limit)
        yield {
            "reason": "FieldValueNotSupported",
            "field": field,
            "message": f"Unsupported value: {_fmt(value)}: supported values: {supported}",
        }
        return
    if kind == "type":
        expected = limit if isinstance(limit, str) else " or ".join(limit)
        yield {
            "reason": "FieldValueTypeInvalid",
            "field": field,
            "message": f'Invalid value: "{_type_name(value)}": {field} in body must be of type {expected}: {_fmt(value)}',
        }
        return
    schema = error.schema if isinstance(error.schema, dict) else {}
    detail = {
        "minimum": lambda: f"should be greater than {'' if schema.get('exclusiveMinimum') else 'or equal to '}{limit}",
        "maximum": lambda: f"should be less than {'' if schema.get('exclusiveMaximum') else 'or equal to '}{limit}",
        "pattern": lambda: f"should match '{limit}'",
        "minLength": lambda: f"should be at least {limit} chars long",
        "maxLength": lambda: f"may not be more than {limit} bytes",
        "minItems": lambda: f"should have at least {limit} items",
        "maxItems": lambda: f"must have at most {limit} items",
        "minProperties": lambda: f"should have at least {limit} properties",
        "maxProperties": lambda: f"should have at most {limit} properties",
        "multipleOf": lambda: f"should be a multiple of {limit}",
        "uniqueItems": lambda: "shouldn't contain duplicates",
    }.get(str(kind))
    if kind == "maxItems":
        yield {
            "reason": "FieldValueTooMany",
            "field": field,
            "message": f"Too many: {len(value) if isinstance(value, list) else '?'}: must have at most {limit} items",
        }
        return
    if kind == "maxLength":
        yield {
            "reason": "FieldValueTooLong",
            "field": field,
            "message": f"Too long: may not be more than {limit} bytes",
        }
        return
    message = f"{field} in body {detail()}" if detail else error.message
    yield {"reason": "FieldValueInvalid", "field": field, "message": f"Invalid value: {_fmt(value)}: {message}"}


def process(
    obj: dict[str, Any],
    schema: dict[str, Any] | None,
    *,
    prune_unknown: bool = True,
) -> tuple[dict[str, Any], list[str], list[dict[str, str]]]:
    """
    Full apiserver-like processing of a custom resource on write.

    Returns ``(object, pruned_paths, causes)``. The object is a modified deep copy.
    """
    obj = copy.deepcopy(obj)
    if not schema:
        return obj, [], []
    drop_nulls(obj, schema)
    pruned = prune(obj, schema, root=True) if prune_unknown else []
    apply_defaults(obj, schema)
    causes = validate(obj, schema)
    return obj, pruned, causes
