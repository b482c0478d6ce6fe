"""The run's transition table (controller/transitions.py): complete, applied in one place, documented."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from dwcp_autotuner.controller.transitions import RULES, IllegalTransition, Transition, apply, rule_for
from dwcp_autotuner.models.run import Phase, RunStatus
from dwcp_autotuner.ports.base import RecordingEvents

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "operator" / "dwcp_autotuner"


class Ref:
    name, namespace, generation = "run1", "ns", 3
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _phase_assignments() -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, (ast.AugAssign, ast.AnnAssign))
                else []
            )
            for target in targets:
                # (a run's status is `status`, `new_status`, `ctx.status`…; `TuneResult.phase` is another thing)
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "phase"
                    and ast.unparse(target.value).endswith("status")
                ):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_only_apply_changes_a_phase():
    assert all(place.startswith("controller/transitions.py:") for place in _phase_assignments()), _phase_assignments()
    assert len(_phase_assignments()) == 1


def _transition_reasons() -> dict[str, str]:
    """Every `Transition("Reason", …)` the controller can return, with where."""
    found = {}
    for path in (PACKAGE / "controller").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Transition" and node.args:
                if isinstance(node.args[0], ast.Constant):
                    found[node.args[0].value] = f"{path.name}:{node.lineno}"
    return found


def test_every_transition_the_controller_returns_is_in_the_table():
    reasons = _transition_reasons()
    # The extractor must keep finding what it is known to find; else it silently checks nothing.
    assert {"Started", "Promoted", "RolledBack", "ConfigMapDrift", "Reoptimizing", "InvalidSpec", "Held"} <= set(
        reasons
    )
    known = {rule.reason for rule in RULES}
    assert not set(reasons) - known, {r: reasons[r] for r in set(reasons) - known}


def test_a_transition_outside_the_table_is_refused():
    with pytest.raises(IllegalTransition, match="unknown"):
        rule_for(Transition("Teleported", ""), Phase.PROPOSING)
    with pytest.raises(IllegalTransition, match="cannot leave"):
        rule_for(Transition("Promoted", ""), Phase.PENDING)
    with pytest.raises(IllegalTransition, match="cannot lead to"):
        rule_for(Transition("BudgetExhausted", "", to=Phase.FAILED), Phase.PROPOSING)


def test_apply_sets_phase_conditions_and_one_event_per_change():
    events = RecordingEvents()
    status = RunStatus(phase=Phase.ROLLING_OUT)
    apply(
        Ref,
        events,
        status,
        Transition("RolledBack", "rolled back: worse", cause="CanaryWorse", event_key="1/RolledBack"),
    )
    assert status.phase == Phase.PROPOSING and status.message == "rolled back: worse"
    conditions = {c.type: (c.status, c.reason) for c in status.conditions}
    assert conditions == {
        "Progressing": ("True", "RolledBack"),
        "RolledBack": ("True", "CanaryWorse"),
        "Ready": ("True", "SpecValid"),
    }
    assert events.events == [("Warning", "RolledBack", "rolled back: worse")]
    # A cause that lasts: one Event when the condition changes, none on the ticks after.
    for _ in range(3):
        apply(Ref, events, status, Transition("ConfigMapDrift", "someone edited it"))
    assert [e[1] for e in events.events].count("ConfigMapDrift") == 1
    assert {c.type: c.status for c in status.conditions}["Degraded"] == "True"
    # Progress clears Degraded.
    status.phase = Phase.PROPOSING  # (test set-up: a run back in Proposing)
    apply(Ref, events, status, Transition("NoChange", "nothing to do"))
    assert {c.type: (c.status, c.reason) for c in status.conditions}["Degraded"] == ("False", "AsExpected")


def test_the_conditions_page_carries_the_table_the_operator_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_conditions_md.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
