"""What one reconcile call sees of a run (`RunContext`) and the outside world it acts on (`Ports`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..models.profile import ParameterProfileSpec
from ..models.run import OptimizationRunSpec, RunStatus
from ..ports.base import ConfigStore, EventSink, MetricsSource, OwnerRef
from ..proposers.base import Proposer
from .conditions import now_iso


class ProfileUnreadable(str):
    """Why a profile could not be read just now (the API server failed or the answer was lost), as a profile's
    entry in `RunContext.profiles`: a reason to wait and read it again, never a verdict on a canary out."""


@dataclass
class RunContext:
    """Everything one reconcile call sees of the run."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    spec: OptimizationRunSpec
    status: RunStatus
    # name -> spec, or why it is unusable (a `ProfileUnreadable`: only for now, the API failed)
    profiles: dict[str, ParameterProfileSpec | str]
    now: dt.datetime
    owner: OwnerRef | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)  # the run's metadata.annotations (manual actions)


@dataclass
class Ports:
    configs: ConfigStore
    metrics: MetricsSource
    events: EventSink
    proposer: Proposer
    persist: Callable[[RunStatus], None] = field(default=lambda status: None)  # write the status now (write-ahead)
    # The wall clock, read when a ConfigMap write happens: a call may spend seconds in the proposer
    # (building or querying the agent), and a step's start must be when its weight was written, not
    # when the call began. None: use the call's `ctx.now` (simulated clocks in tests).
    clock: Callable[[], dt.datetime] | None = None

    def write_time(self, ctx: RunContext) -> str:
        return now_iso(self.clock() if self.clock is not None else ctx.now)


def parse_time(text: str | None) -> dt.datetime | None:
    return None if not text else dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
