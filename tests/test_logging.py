"""The operator's log: one line per transition (structured with --log-format json), quiet where libraries chatter."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging

import pytest

from dwcp_autotuner.cli.operator_cmd import configure_logging
from dwcp_autotuner.controller.run import RunRef
from dwcp_autotuner.controller.transitions import Transition, apply
from dwcp_autotuner.models.run import Phase, RunStatus
from dwcp_autotuner.ports.base import RecordingEvents


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        name: logging.getLogger(name).level for name in ("kopf.objects", "aiohttp.access", "urllib3.connectionpool")
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def _transition_lines(fmt: str) -> list[str]:
    configure_logging(fmt, verbose=False)
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)
    ref = RunRef("tune", "dwcp", "uid", 1, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    status = RunStatus(phase=Phase.PROPOSING)
    apply(ref, RecordingEvents(), status, Transition("CanaryStarted", "Proposal 1 for hde: canary at 5 %."))
    # What a successful operator must not print on every tick or probe:
    logging.getLogger("urllib3.connectionpool").warning(
        "Retrying (Retry(total=2)) after connection broken: /api/v1/query?query=up%7B"
    )
    logging.getLogger("aiohttp.access").info('127.0.0.1 "GET /healthz HTTP/1.1" 200')
    return [line for line in stream.getvalue().splitlines() if line]


def test_json_logging_gives_one_object_per_transition_with_the_run_as_fields(restore_logging):
    (line,) = _transition_lines("json")
    record = json.loads(line)
    assert record["level"] == "INFO" and record["run"] == "tune" and record["namespace"] == "dwcp"
    assert record["reason"] == "CanaryStarted" and record["phase"] == "RollingOut"
    assert "Proposing -> RollingOut" in record["message"]


def test_text_logging_is_one_line_per_transition_and_silences_retries_and_probes(restore_logging):
    (line,) = _transition_lines("text")
    assert "INFO dwcp_autotuner.controller: run dwcp/tune: Proposing -> RollingOut (CanaryStarted)" in line
