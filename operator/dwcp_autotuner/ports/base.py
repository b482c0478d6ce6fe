"""Ports: what the controller needs from the outside world, as small protocols.

The same controller runs in the operator (Kubernetes ConfigMaps + Prometheus) and locally (files +
in-process metrics); only the adapters differ.

The canary protocol's keys and the ConfigMap reads (`ConfigRef`, `ConfigSnapshot`) are in
`canary/protocol.py`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..canary.protocol import ConfigRef, ConfigSnapshot

Variant = Literal["stable", "canary"]


class NotFound(Exception):
    """The object does not exist."""


class Conflict(Exception):
    """The object changed since it was read (resourceVersion precondition failed)."""


class Unavailable(Exception):
    """The backend (Kubernetes API, Prometheus) could not be reached or answered with an error."""


class Foreign(Exception):
    """An object of that name exists but is not the operator's (it lacks the operator's labels): never modified."""


@dataclass(frozen=True)
class StoredMap:
    """A ConfigMap read whole: its data, its decoded binaryData and its labels."""

    data: Mapping[str, str]
    binary: Mapping[str, bytes]
    labels: Mapping[str, str]


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

    def read_fresh(self, ref: ConfigRef) -> ConfigSnapshot:
        """The ConfigMap as the API has it now, past any cache (`read` may answer from one)."""

    def write(
        self,
        ref: ConfigRef,
        *,
        expected_resource_version: str,
        set_keys: Mapping[str, str] | None = None,
        remove_keys: tuple[str, ...] = (),
    ) -> ConfigSnapshot:
        """One patch guarded by resourceVersion: raises Conflict if the ConfigMap changed since the read."""

    def create_revision(
        self, namespace: str, name: str, data: Mapping[str, str], *, owner: OwnerRef | None, labels: Mapping[str, str]
    ) -> None:
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
        """Create or replace a (mutable) ConfigMap holding `binary_data` in binaryData (and `data`); last write wins.

        An existing ConfigMap of that name is replaced only when it carries every one of `labels` (it is the
        operator's): otherwise `Foreign` is raised and nothing is written."""

    def get_binary(self, namespace: str, name: str) -> StoredMap:
        """A ConfigMap's data, decoded binaryData and labels; raises NotFound or Unavailable."""


@dataclass(frozen=True)
class JobSpec:
    """A Kubernetes Job running one `dwcp-autotuner worker …` command (heavy work away from the operator's pod)."""

    namespace: str
    name: str
    args: tuple[str, ...]  # the arguments of `dwcp-autotuner`
    deadline_seconds: int
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobState:
    phase: Literal["Running", "Succeeded", "Failed"]
    reason: str = ""  # Failed: DeadlineExceeded, BackoffLimitExceeded, ErrImagePull, ImagePullBackOff, ...
    message: str = ""


class JobRunner(Protocol):
    def start(self, spec: JobSpec) -> str:
        """Create the Job; returns its uid (a result ConfigMap is owned by it, so it goes with the Job)."""

    def state(self, namespace: str, name: str) -> JobState:
        """Where the Job is; a pod that cannot start (its image cannot be pulled) is Failed at once."""

    def delete(self, namespace: str, name: str) -> None:
        """Delete the Job and its pods (a run deleted, or the operator stopping)."""


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
    def emit(self, kind: Literal["Normal", "Warning"], reason: str, message: str, key: str | None = None) -> bool:
        """Record a Kubernetes Event (or a log line) about the resource being reconciled.

        `key` names the action the Event reports (e.g. "3/Promoted"): a sink records one Event per key, so
        a transition retried after a failed status write is not reported twice. Returns False when the
        keyed action had been recorded already (True otherwise, also when recording failed: best effort)."""

    def reported(self, key: str) -> bool:
        """Whether the keyed action's Event was recorded (by this process or another). True is evidence that the
        action happened (its Event follows its write); False says nothing (Events are best effort and expire)."""


def render_query(template: str, variant: Variant, window_seconds: float) -> str:
    """Fill a PromQL template's `{{variant}}` and `{{window}}` placeholders."""
    window = f"{max(1, int(round(window_seconds)))}s"
    return template.replace("{{variant}}", variant).replace("{{window}}", window)


@dataclass
class RecordingEvents:
    """An EventSink that keeps events in memory (local runs and tests)."""

    events: list[tuple[str, str, str]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def emit(self, kind: Literal["Normal", "Warning"], reason: str, message: str, key: str | None = None) -> bool:
        if key is not None:
            if key in self.keys:
                return False
            self.keys.add(key)
        self.events.append((kind, reason, message))
        return True

    def reported(self, key: str) -> bool:
        return key in self.keys
