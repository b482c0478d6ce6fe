"""The canary protocol between the operator and the components, in one place.

The target ConfigMap holds, beside whatever else the user keeps there:

- `<key>` (e.g. `config.json`): the stable configuration, a JSON object. The operator rewrites it only to
  promote, and then only the values of the parameters its profile tunes: every other key of the object
  keeps its bytes (`merge_stable`).
- `autotune.dwcp.io.canary`: the candidate configuration (a JSON object), present only during a rollout;
- `autotune.dwcp.io.canary-weight`: the share of work (integer percent, 0-100) routed to the candidate;
- `autotune.dwcp.io.canary-revision`: the name of the immutable revision ConfigMap the candidate came from.

Every key under `autotune.dwcp.io.` is reserved for the protocol: a profile may not name one as its
target key. A component hashes each unit of work's key against the weight to pick a variant
(`sdk/routing.py`) and labels its metrics `variant="stable"|"canary"`.

Used by the controller (writes), the operator's clean-up (withdrawing) and the SDK (reading); it imports
nothing of ours but the models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ..models.base import RESERVED_PREFIX

CANARY_KEY = f"{RESERVED_PREFIX}canary"
CANARY_WEIGHT_KEY = f"{RESERVED_PREFIX}canary-weight"
CANARY_REVISION_KEY = f"{RESERVED_PREFIX}canary-revision"
CANARY_KEYS = (CANARY_KEY, CANARY_WEIGHT_KEY, CANARY_REVISION_KEY)


def is_reserved_key(key: str) -> bool:
    """Whether a ConfigMap key belongs to the canary protocol (never a profile's target key)."""
    return key.startswith(RESERVED_PREFIX)


def canonical_json(config: Mapping[str, object]) -> str:
    """The bytes of a configuration the operator writes: sorted keys, no blanks, so equal configs give equal digests."""
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"))


def digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


class WeightRefused(ValueError):
    """A canary weight that is not an integer percent in [0, 100]; `reason` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_weight(text: str) -> int:
    """The canary weight: an integer percent 0-100 (surrounding blanks allowed); raises `WeightRefused`."""
    stripped = text.strip()
    if not stripped.lstrip("+-").isdigit():
        raise WeightRefused("invalid_value", f"canary weight {text!r} is not an integer")
    weight = int(stripped)
    if not 0 <= weight <= 100:
        raise WeightRefused("out_of_bounds", f"canary weight {weight} is outside [0, 100]")
    return weight


@dataclass(frozen=True)
class ConfigRef:
    """Where a profile's configuration lives: a key of a ConfigMap."""

    namespace: str
    name: str
    key: str = "config.json"

    def describe(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name} key {self.key}"


def target_ref(target, default_namespace: str) -> ConfigRef:
    """The ConfigRef of a profile's `spec.target` (a `ConfigMapTarget`), in the profile's namespace by default."""
    return ConfigRef(namespace=target.namespace or default_namespace, name=target.name, key=target.key)


@dataclass(frozen=True)
class ConfigSnapshot:
    """A read of the target ConfigMap: its data and the resourceVersion any write must be guarded by."""

    ref: ConfigRef
    resource_version: str
    data: Mapping[str, str]

    @property
    def stable(self) -> str | None:
        return self.data.get(self.ref.key)

    @property
    def canary(self) -> str | None:
        return self.data.get(CANARY_KEY)

    @property
    def canary_weight(self) -> int | None:
        """The weight as the protocol reads it; None when absent or not a valid weight."""
        raw = self.data.get(CANARY_WEIGHT_KEY)
        try:
            return None if raw is None else parse_weight(raw)
        except WeightRefused:
            return None

    @property
    def canary_revision(self) -> str | None:
        return self.data.get(CANARY_REVISION_KEY)

    @property
    def canary_keys(self) -> tuple[str, ...]:
        """The protocol keys present (the ones a withdrawal removes)."""
        return tuple(k for k in CANARY_KEYS if k in self.data)

    def stable_digest(self) -> str | None:
        return digest(self.stable)


# --- the stable configuration, with the keys a profile does not tune ---------------------------------
def stable_object(text: str | None) -> dict:
    """The stable configuration as a JSON object; raises ValueError naming what is wrong."""
    if text is None:
        raise ValueError("the key is missing")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object (got {type(data).__name__})")
    return data


def merge_stable(text: str, tuned: Mapping[str, object]) -> str:
    """`text` (a JSON object) with the values of the `tuned` keys replaced or added; every other byte kept.

    A promotion must not touch what the profile does not tune: keys it does not know (a log level, an
    endpoint) and keys another profile tunes keep their bytes, their order and the document's layout.
    The values of tuned keys are spliced in place; a tuned key that was absent is added at the end.
    """
    spans = _top_level_value_spans(text)
    out, last = [], 0
    for key, (start, end) in sorted(spans.items(), key=lambda item: item[1][0]):
        if key in tuned:
            out.append(text[last:start])
            out.append(json.dumps(tuned[key], separators=(",", ":")))
            last = end
    out.append(text[last:])
    merged = "".join(out)
    missing = [k for k in tuned if k not in spans]
    if missing:
        close = merged.rstrip().rfind("}")
        body = merged[:close].rstrip()
        separator = "" if body.endswith("{") else ","
        additions = ",".join(f"{json.dumps(k)}:{json.dumps(tuned[k], separators=(',', ':'))}" for k in missing)
        merged = f"{body}{separator}{additions}{merged[close:]}"
    return merged


def _top_level_value_spans(text: str) -> dict[str, tuple[int, int]]:
    """Key -> (start, end) of each value of a top-level JSON object (the last of a repeated key wins, as in json.loads)."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    i = _skip_blanks(text, 0)
    if i >= len(text) or text[i] != "{":
        raise ValueError("must hold a JSON object")
    i = _skip_blanks(text, i + 1)
    if i < len(text) and text[i] == "}":
        return spans
    while True:
        key, i = decoder.raw_decode(text, i)
        i = _skip_blanks(text, i)
        if text[i] != ":":
            raise ValueError("not valid JSON (':' expected)")
        start = _skip_blanks(text, i + 1)
        _, end = decoder.raw_decode(text, start)
        spans[key] = (start, end)
        i = _skip_blanks(text, end)
        if text[i] == "}":
            return spans
        if text[i] != ",":
            raise ValueError("not valid JSON (',' expected)")
        i = _skip_blanks(text, i + 1)


def _skip_blanks(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


# --- withdrawing a canary ------------------------------------------------------------------------------
class _Store(Protocol):
    def read(self, ref: ConfigRef) -> ConfigSnapshot: ...

    def write(
        self,
        ref: ConfigRef,
        *,
        expected_resource_version: str,
        set_keys: Mapping[str, str] | None = None,
        remove_keys: tuple[str, ...] = (),
    ) -> ConfigSnapshot: ...


def withdraw(store: _Store, ref: ConfigRef, revision: str, snapshot: ConfigSnapshot | None = None) -> bool:
    """Remove the canary keys if the canary out is `revision`'s; True when keys were removed.

    Only the protocol keys go, in one write guarded by the resourceVersion of the read that saw this
    revision: the stable bytes, a human's edit and another run's canary are never touched. The store's
    NotFound, Conflict and Unavailable propagate (the caller decides whether to retry).
    """
    snapshot = snapshot if snapshot is not None else store.read(ref)
    if snapshot.canary_revision != revision or not snapshot.canary_keys:
        return False
    store.write(ref, expected_resource_version=snapshot.resource_version, remove_keys=snapshot.canary_keys)
    return True
