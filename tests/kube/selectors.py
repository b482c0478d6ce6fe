"""
Kubernetes label & field selectors, as the apiserver parses and applies them.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``,
``a`` (exists), ``!a`` (does not exist), joined with commas (AND).

Field selectors: ``path=value``, ``path==value``, ``path!=value``, joined with commas.
The path is a dotted path into the object (``metadata.name``, ``metadata.namespace``,
``involvedObject.name``, ...); missing fields compare as an empty string, as in the apiserver.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any


class SelectorError(ValueError):
    """An unparseable selector (the apiserver answers 400 BadRequest)."""


Predicate = Callable[[Mapping[str, Any]], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")


def _split_terms(selector: str) -> list[str]:
    """Split by commas, except for the commas inside the ``(...)`` value sets."""
    terms: list[str] = []
    depth = 0
    current = ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parentheses in selector {selector!r}")
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise SelectorError(f"unbalanced parentheses in selector {selector!r}")
    terms.append(current)
    return [term for term in (t.strip() for t in terms) if term]


def parse_label_selector(selector: str | None) -> Predicate:
    """Parse a label selector into a predicate over ``metadata.labels`` of an object."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split_terms(selector or ""):
        if m := _SET_RE.match(term):
            key, op = m["key"], m["op"]
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: k in labels and labels[k] in vs)
            else:  # notin: absent keys also match, as in the apiserver
                checks.append(lambda labels, k=key, vs=values: k not in labels or labels[k] not in vs)
        elif m := _EQ_RE.match(term):
            key, op, value = m["key"], m["op"], m["value"] or ""
            if op in ("=", "=="):
                checks.append(lambda labels, k=key, v=value: k in labels and labels[k] == v)
            else:  # != : absent keys also match, as in the apiserver
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif m := _EXISTS_RE.match(term):
            key = m["key"]
            if m["neg"]:
                checks.append(lambda labels, k=key: k not in labels)
            else:
                checks.append(lambda labels, k=key: k in labels)
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")

    def predicate(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return predicate


def parse_field_selector(
    selector: str | None,
    allowed: Callable[[str], bool] | None = None,
) -> Predicate:
    """
    Parse a field selector into a predicate over the object's fields.

    ``allowed(path)`` restricts the supported field paths (the apiserver answers
    ``400 field label not supported`` for others, e.g. for custom resources only
    ``metadata.name``, ``metadata.namespace`` and the CRD's ``selectableFields`` work).
    """
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    for term in _split_terms(selector or ""):
        m = re.match(r"^\s*(?P<path>[A-Za-z0-9_.\-]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*?)\s*$", term)
        if not m:
            raise SelectorError(f"invalid selector: {term!r}; can't understand {term!r}")
        path, op, value = m["path"], m["op"], m["value"]
        if allowed is not None and not allowed(path):
            raise SelectorError(f"field label not supported: {path}")
        if op in ("=", "=="):
            checks.append(lambda obj, p=path, v=value: _field(obj, p) == v)
        else:
            checks.append(lambda obj, p=path, v=value: _field(obj, p) != v)

    def predicate(obj: Mapping[str, Any]) -> bool:
        return all(check(obj) for check in checks)

    return predicate


def _field(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
