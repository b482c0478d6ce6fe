"""OpenAPI documents of the emulator's resource types, built from the CRDs' schemas (v3 per group-version, v2 whole).

What kubectl reads from them, and why it matters here:

* ``kubectl explain optimizationrun.spec`` renders the v3 document of the resource's group-version: it finds the
  kind through the ``x-kubernetes-group-version-kind`` of the resource's paths, then the schema with the same
  extension in ``components.schemas``, and follows ``properties`` (and ``$ref``) down the field path;
* ``kubectl apply``/``create`` (and Helm) decide how to validate: when the v3 document lists the
  ``fieldValidation`` query parameter on the kind's PATCH operation, they send ``fieldValidation=Strict`` and the
  server rejects unknown fields (a typo such as ``stpe``), as a real apiserver does; without documents kubectl needs
  ``--validate=false``.

LIMITS: custom resources get their CRD schema (the properties, types, enums, descriptions and required lists that
explain shows); built-in kinds get an open schema (``x-kubernetes-preserve-unknown-fields``) with apiVersion, kind
and metadata only, so ``kubectl explain configmap.data`` says nothing useful. ``/openapi/v2`` is served as JSON
only: clients that ask for protobuf only (kubectl's v2 client) get 404 and use v3, as against a server without v2.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

_OBJECT_META_SCHEMA: dict[str, Any] = {
    "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects "
    "users must create.",
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Name must be unique within a namespace."},
        "namespace": {
            "type": "string",
            "description": "Namespace defines the space within which each name must be unique.",
        },
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Map of string keys and values that can be used to organize and categorize objects.",
        },
        "annotations": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Annotations is an unstructured key value map stored with a resource.",
        },
        "generateName": {
            "type": "string",
            "description": "An optional prefix used by the server to generate a unique name.",
        },
        "uid": {"type": "string", "description": "UID is the unique in time and space value for this object."},
        "resourceVersion": {
            "type": "string",
            "description": "An opaque value that represents the internal version of this object.",
        },
        "generation": {
            "type": "integer",
            "format": "int64",
            "description": "A sequence number representing a specific generation of the desired state.",
        },
        "creationTimestamp": {"type": "string", "format": "date-time", "description": "When this object was created."},
        "deletionTimestamp": {
            "type": "string",
            "format": "date-time",
            "description": "When this object will be deleted.",
        },
        "finalizers": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Must be empty before the object is deleted from the registry.",
        },
        "ownerReferences": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "description": "List of objects depended by this object.",
        },
        "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    },
}
_API_VERSION = {
    "type": "string",
    "description": "APIVersion defines the versioned schema of this representation of an object.",
}
_KIND = {
    "type": "string",
    "description": "Kind is a string value representing the REST resource this object represents.",
}


def gv_path(group: str, version: str) -> str:
    """The key of a group-version in ``/openapi/v3``: ``api/v1`` or ``apis/<group>/<version>``."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def schema_name(group: str, version: str, kind: str) -> str:
    """As the apiserver names definitions: the group reversed (``io.dwcp.autotune.v1alpha1.OptimizationRun``)."""
    reversed_group = ".".join(reversed(group.split("."))) if group else "io.k8s.api.core"
    return f"{reversed_group}.{version}.{kind}"


def _kind_schema(rtype, version: str, ref_prefix: str) -> dict[str, Any]:
    gvk = {"group": rtype.group, "version": version, "kind": rtype.kind}
    schema = copy.deepcopy(rtype.schemas.get(version)) if rtype.custom else None
    if not schema:
        schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", dict(_API_VERSION))
    properties.setdefault("kind", dict(_KIND))
    properties["metadata"] = {
        "description": "Standard object's metadata.",
        "allOf": [{"$ref": f"{ref_prefix}{OBJECT_META}"}],
    }
    schema["x-kubernetes-group-version-kind"] = [gvk]
    return schema


def _operations(rtype, version: str, ref: str, *, v3: bool) -> dict[str, dict[str, Any]]:
    """The paths of one kind: the collection (list, create) and one object (get, replace, patch, delete)."""
    gvk = {"group": rtype.group, "version": version, "kind": rtype.kind}
    base = f"/apis/{rtype.group}/{version}" if rtype.group else f"/api/{version}"
    collection = f"{base}/namespaces/{{namespace}}/{rtype.plural}" if rtype.namespaced else f"{base}/{rtype.plural}"

    def query(name: str) -> dict[str, Any]:
        return (
            {"name": name, "in": "query", "schema": {"type": "string"}}
            if v3
            else {
                "name": name,
                "in": "query",
                "type": "string",
            }
        )

    def body() -> dict[str, Any]:
        if v3:
            return {"requestBody": {"content": {"application/json": {"schema": {"$ref": ref}}}}}
        return {"parameters": [{"name": "body", "in": "body", "required": True, "schema": {"$ref": ref}}]}

    def response() -> dict[str, Any]:
        if v3:
            return {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}}
        return {"200": {"description": "OK", "schema": {"$ref": ref}}}

    def operation(action: str, writes: bool) -> dict[str, Any]:
        op: dict[str, Any] = {
            "operationId": f"{action}{rtype.kind}",
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "responses": response(),
        }
        params = [query("dryRun"), query("fieldManager"), query("fieldValidation")] if writes else []
        if writes and not v3:
            params += body()["parameters"]
        elif writes:
            op.update(body())
        if params:
            op["parameters"] = params
        return op

    return {
        collection: {"get": operation("list", False), "post": operation("post", True)},
        f"{collection}/{{name}}": {
            "get": operation("get", False),
            "put": operation("put", True),
            "patch": operation("patch", True),
            "delete": operation("delete", False),
        },
    }


def v3_document(rtypes: Iterable, group: str, version: str) -> dict[str, Any]:
    prefix = "#/components/schemas/"
    schemas: dict[str, Any] = {OBJECT_META: copy.deepcopy(_OBJECT_META_SCHEMA)}
    paths: dict[str, Any] = {}
    for rtype in rtypes:
        if rtype.group != group or version not in rtype.versions:
            continue
        name = schema_name(group, version, rtype.kind)
        schemas[name] = _kind_schema(rtype, version, prefix)
        paths.update(_operations(rtype, version, prefix + name, v3=True))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes API emulator", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def v3_paths(rtypes: Iterable) -> dict[str, Any]:
    """``/openapi/v3``: every group-version's document, each behind a URL whose hash changes with its content."""
    rtypes = list(rtypes)
    versions = sorted({(r.group, v) for r in rtypes for v in r.versions})
    paths = {}
    for group, version in versions:
        digest = hashlib.sha512(json.dumps(v3_document(rtypes, group, version), sort_keys=True).encode()).hexdigest()
        paths[gv_path(group, version)] = {
            "serverRelativeURL": f"/openapi/v3/{gv_path(group, version)}?hash={digest[:64].upper()}"
        }
    return {"paths": paths}


def v2_document(rtypes: Iterable) -> dict[str, Any]:
    prefix = "#/definitions/"
    definitions: dict[str, Any] = {OBJECT_META: copy.deepcopy(_OBJECT_META_SCHEMA)}
    paths: dict[str, Any] = {}
    for rtype in rtypes:
        for version in rtype.versions:
            name = schema_name(rtype.group, version, rtype.kind)
            definitions[name] = _kind_schema(rtype, version, prefix)
            paths.update(_operations(rtype, version, prefix + name, v3=False))
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes API emulator", "version": "v1.35.0"},
        "paths": paths,
        "definitions": definitions,
    }
