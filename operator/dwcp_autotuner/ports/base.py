"""Ports: what the controller needs from the outside world, as small protocols.

The same controller runs in the operator (Kubernetes ConfigMaps + Prometheus) and locally (files +
in-process metrics); only the adapters differ.

The canary protocol lives in the target ConfigMap, beside the stable configuration:
- `<key>` (e.g. `config.json`): the stable configuration, a JSON object — never rewritten except by a promotion;
- `autotune.dwcp.io.canary`: the candidate configuration (JSON object), present only during a rollout;
- `autotune.dwcp.io.canary-weight`: the share of work (integer percent, 0–100) routed to the candidate;
- `autotune.dwcp.io.canary-revision`: the name of the immutable revision ConfigMap the candidate came from.
A component hashes each unit of work's key against the weight to pick a variant and labels its
metrics `variant="stable"|"canary"`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

CANARY_KEY = "autotune.dwcp.io.canary"
CANARY_WEIGHT_KEY = "autotune.dwcp.io.canary-weight"
CANARY_REVISION_KEY = "autotune.dwcp.io.canary-revision"
CANARY_KEYS = (CANARY_KEY, CANARY_WEIGHT_KEY, CANARY_REVISION_KEY)

Variant = Literal["stable", "canary"]


class NotFound(Exception):
    """The object does not exist."""


class Conflict(Exception):
    """The object changed since it was read (resourceVersion precondition failed)."""


class Unavailable(Exception):
    """The backend (Kubernetes API, Prometheus) could not be reached or answered with an error."""


@dataclass(frozen=True)
class ConfigRef:
    namespace: str
    name: str
    key: str = "config.json"


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
        raw = self.data.get(CANARY_WEIGHT_KEY)
        try:
            return None if raw is None else int(raw)
        except ValueError:
            return None

    @property
    def canary_revision(self) -> str | None:
        return self.data.get(CANARY_REVISION_KEY)

    def stable_digest(self) -> str | None:
        return digest(self.stable)


def digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class OwnerRef:
    """The custom resource that owns what the controller creates (revisions are garbage-collected with it)."""

    api_version: str
    kind: str
    name: str
    uid: str


class ConfigStore(Protocol):
    def read(self, ref: ConfigRef) -> ConfigSnapshot:
        """The current ConfigMap; raises NotFound or Unavailable."""

    def write(
        self,
        ref: ConfigRef,
        *,
        expected_resource_version: str,
        set_keys: Mapping[str, str] | None = None,
        remove_keys: tuple[str, ...] = (),
    ) -> ConfigSnapshot:
        """One patch guarded by resourceVersion: raises Conflict if the ConfigMap changed since the read."""

    def create_revision(self, namespace: str, name: str, data: Mapping[str, str], *, owner: OwnerRef | None, labels: Mapping[str, str]) -> None:
        """Create an immutable ConfigMap; if it already exists with the same data, do nothing (idempotent)."""

    def read_revision(self, namespace: str, name: str) -> Mapping[str, str]:
        """The data of a revision ConfigMap; raises NotFound."""

    def put_binary(
        self,
        namespace: str,
        name: str,
        binary_data: Mapping[str, bytes],
        *,
        data: Mapping[str, str] | None = None,
        owner: OwnerRef | None,
        labels: Mapping[str, str],
    ) -> None:
        """Create or replace a (mutable) ConfigMap holding `binary_data` in binaryData (and `data`); last write wins."""

    def get_binary(self, namespace: str, name: str) -> tuple[Mapping[str, str], Mapping[str, bytes]]:
        """A ConfigMap's data and decoded binaryData; raises NotFound or Unavailable."""


@dataclass(frozen=True)
class Sample:
    timestamp: float
    value: float


class MetricsSource(Protocol):
    def samples(self, query: str, start: dt.datetime, end: dt.datetime, step_seconds: float) -> list[Sample]:
        """Values of one (already rendered) query over [start, end]; raises Unavailable; [] when no data."""

    def validate(self, query: str) -> str | None:
        """None when the backend accepts the query, else its error message (e.g. a PromQL parse error)."""


class EventSink(Protocol):
    def emit(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        """Record a Kubernetes Event (or a log line) about the resource being reconciled."""


def render_query(template: str, variant: Variant, window_seconds: float) -> str:
    """Fill a PromQL template's `{{variant}}` and `{{window}}` placeholders."""
    window = f"{max(1, int(round(window_seconds)))}s"
    return template.replace("{{variant}}", variant).replace("{{window}}", window)


@dataclass
class RecordingEvents:
    """An EventSink that keeps events in memory (local runs and tests)."""

    events: list[tuple[str, str, str]] = field(default_factory=list)

    def emit(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append((kind, reason, message))
