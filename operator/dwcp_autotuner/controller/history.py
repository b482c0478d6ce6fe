"""The bounded records a run keeps in its status: finished proposals."""

from __future__ import annotations

from ..models.run import HISTORY_LIMIT, ProposalRecord, RunStatus


def record(status: RunStatus, entry: ProposalRecord) -> None:
    status.history = (status.history + [entry])[-HISTORY_LIMIT:]
