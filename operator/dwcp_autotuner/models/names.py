"""Names and label values of the objects the operator creates, always valid whatever the run and profile names.

A run or profile name may be a DNS subdomain of up to 253 characters; a label value holds at most 63
characters of a narrower alphabet, and `<run>-<profile>-<n>` can exceed 253. Where a name does not fit,
a readable prefix and a hash of the whole take its place (the full names are kept in the object's data
or annotations, never lost).
"""

from __future__ import annotations

import hashlib
import re

_LABEL = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def label_value(name: str) -> str:
    """`name` when it is a valid label value (at most 63 characters), else a prefix and a hash of it."""
    if len(name) <= 63 and _LABEL.match(name):
        return name
    prefix = re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:40].strip("-_.") or "x"
    return f"{prefix}-{_hash(name)}"


def object_name(*parts: str, limit: int = 253) -> str:
    """`parts` joined by '-' as an object name (a DNS subdomain of at most `limit` characters)."""
    name = "-".join(parts)
    if len(name) <= limit and _SUBDOMAIN.match(name):
        return name
    head = re.sub(r"[^a-z0-9.-]", "-", name.lower())[: limit - 12].strip("-.") or "x"
    return f"{head}-{_hash(name)}"
