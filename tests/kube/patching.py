"""
Patch formats accepted by the emulated apiserver.

* ``application/merge-patch+json`` — RFC 7386 JSON merge patch.
* ``application/json-patch+json`` — RFC 6902 JSON patch (add/remove/replace/move/copy/test).
* ``application/strategic-merge-patch+json`` — APPROXIMATED as a merge patch:
  the ``$patch: delete|replace`` directives on maps are honoured; the other directives
  (``$setElementOrder/…``, ``$retainKeys``, ``$deleteFromPrimitiveList/…``) are dropped;
  lists are always replaced as a whole (no merge by ``patchMergeKey`` such as containers' names).
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(Exception):
    """A patch that cannot be applied (the apiserver answers 422)."""


class BadPatchError(PatchError):
    """A patch that cannot be even decoded (the apiserver answers 400)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A merge patch which understands the most common strategic-merge directives on maps."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # $setElementOrder/…, $retainKeys, $deleteFromPrimitiveList/…: unsupported
        if value is None:
            result.pop(key, None)
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None and isinstance(value, dict) and value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _parse_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise BadPatchError(f"invalid JSON pointer: {pointer!r}")
    if pointer == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index: {token!r}")
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not allow_end):
        raise PatchError(f"array index out of bounds: {idx}")
    return idx


def _resolve(doc: Any, tokens: list[str]) -> Any:
    value = doc
    for token in tokens:
        if isinstance(value, dict):
            if token not in value:
                raise PatchError(f"missing path: /{'/'.join(tokens)}")
            value = value[token]
        elif isinstance(value, list):
            value = value[_index(value, token, allow_end=False)]
        else:
            raise PatchError(f"missing path: /{'/'.join(tokens)}")
    return value


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError(f"cannot add to a non-container at /{'/'.join(tokens)}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the root document")
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key: {last}")
        return parent.pop(last)
    elif isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise PatchError(f"cannot remove from a non-container at /{'/'.join(tokens)}")


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902. A failed ``test`` or a missing path raise :class:`PatchError` (422)."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise BadPatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        kind = op.get("op")
        tokens = _parse_pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise BadPatchError(f"operation {kind!r} needs a value")
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            _resolve(doc, tokens)  # must exist
            if not tokens:
                doc = copy.deepcopy(op["value"])
            else:
                parent = _resolve(doc, tokens[:-1])
                if isinstance(parent, list):
                    parent[_index(parent, tokens[-1], allow_end=False)] = copy.deepcopy(op["value"])
                else:
                    parent[tokens[-1]] = copy.deepcopy(op["value"])
        elif kind == "move":
            source = _parse_pointer(op.get("from"))
            value = _remove(doc, source)
            doc = _add(doc, tokens, value)
        elif kind == "copy":
            source = _parse_pointer(op.get("from"))
            doc = _add(doc, tokens, copy.deepcopy(_resolve(doc, source)))
        elif kind == "test":
            actual = _resolve(doc, tokens)
            if actual != op["value"]:
                raise PatchError(
                    f"testing value /{'/'.join(tokens)} failed: expected {op['value']!r}, found {actual!r}"
                )
        else:
            raise BadPatchError(f"unexpected operation: {kind!r}")
    return doc
