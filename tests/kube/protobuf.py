"""
A minimal decoder of Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``).

kubectl's imperative typed commands (``kubectl create namespace|configmap|secret``) send protobuf
and do not fall back to JSON. Only the kinds below are decoded (field numbers from
k8s.io/api/core/v1/generated.proto and k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto);
anything else raises :class:`UnsupportedProtobuf` (the emulator answers 415 then).
Responses are always JSON, which client-go accepts regardless of what it asked for.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

MAGIC = b"k8s\x00"


class UnsupportedProtobuf(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise UnsupportedProtobuf("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise UnsupportedProtobuf(f"unsupported wire type {wire}")
        yield number, wire, value


def _map_entry(buf: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, raw in _fields(buf):
        if number == 1:
            key = raw.decode()
        elif number == 2:
            value = raw
    return key, value


def _object_meta(buf: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    strings = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    for number, _, raw in _fields(buf):
        if number in strings and raw:
            meta[strings[number]] = raw.decode()
        elif number in (11, 12):
            key, value = _map_entry(raw)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = value.decode()
        elif number == 13:
            ref: dict[str, Any] = {}
            for n, _, v in _fields(raw):
                if n in (1, 3, 4, 5) and v:
                    ref[{1: "kind", 3: "name", 4: "uid", 5: "apiVersion"}[n]] = v.decode()
                elif n in (6, 7):
                    ref["controller" if n == 6 else "blockOwnerDeletion"] = bool(v)
            meta.setdefault("ownerReferences", []).append(ref)
        elif number == 14:
            meta.setdefault("finalizers", []).append(raw.decode())
    return meta


def _namespace(buf: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, _, raw in _fields(buf):
        if number == 1:
            obj["metadata"] = _object_meta(raw)
        elif number == 2:
            finalizers = [v.decode() for n, _, v in _fields(raw) if n == 1]
            if finalizers:
                obj["spec"] = {"finalizers": finalizers}
    return obj


def _configmap(buf: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, _, raw in _fields(buf):
        if number == 1:
            obj["metadata"] = _object_meta(raw)
        elif number == 2:
            key, value = _map_entry(raw)
            obj.setdefault("data", {})[key] = value.decode()
        elif number == 3:
            key, value = _map_entry(raw)
            obj.setdefault("binaryData", {})[key] = base64.b64encode(value).decode()
        elif number == 4:
            obj["immutable"] = bool(raw)
    return obj


def _secret(buf: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, _, raw in _fields(buf):
        if number == 1:
            obj["metadata"] = _object_meta(raw)
        elif number == 2:
            key, value = _map_entry(raw)
            obj.setdefault("data", {})[key] = base64.b64encode(value).decode()
        elif number == 3 and raw:
            obj["type"] = raw.decode()
        elif number == 4:
            key, value = _map_entry(raw)
            obj.setdefault("stringData", {})[key] = value.decode()
        elif number == 5:
            obj["immutable"] = bool(raw)
    return obj


_DECODERS = {("v1", "Namespace"): _namespace, ("v1", "ConfigMap"): _configmap, ("v1", "Secret"): _secret}


def decode(body: bytes) -> dict[str, Any]:
    """Decode a ``k8s\\x00``-prefixed runtime.Unknown envelope into a JSON-like object."""
    if not body.startswith(MAGIC):
        raise UnsupportedProtobuf("not a Kubernetes protobuf envelope")
    api_version = kind = ""
    raw = b""
    for number, _, value in _fields(body[len(MAGIC) :]):
        if number == 1:
            for n, _, v in _fields(value):
                if n == 1:
                    api_version = v.decode()
                elif n == 2:
                    kind = v.decode()
        elif number == 2:
            raw = value
    decoder = _DECODERS.get((api_version, kind))
    if decoder is None:
        raise UnsupportedProtobuf(
            f"protobuf bodies are decoded only for {sorted(k for _, k in _DECODERS)}, not {api_version}/{kind}; "
            f"send JSON (e.g. kubectl apply -f / kubectl create -f) instead"
        )
    return {"apiVersion": api_version, "kind": kind, **decoder(raw)}
