"""The bench scripts' command lines: a bad value is one line naming the field, never a traceback."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--rollout", '{"promisingExtraAnalyses": -1}', "spec.rollout.promisingExtraAnalyses"),
        ("--exploration", '{"safetyMarginPct": 500}', "spec.exploration.safetyMarginPct"),
        ("--exploration", '{"bogus": 1}', "spec.exploration.bogus"),
    ],
)
def test_live_tuning_says_which_spec_field_is_invalid_before_measuring_anything(
    flag: str, value: str, named: str
) -> None:
    _says_in_one_line("live_tuning.py", [flag, value, "--seeds", "1", "--components", "pba"], named)


def _says_in_one_line(script: str, args: list[str], named: str) -> None:
    """The script exits 1 with one line naming `named` on stderr, no traceback, and nothing run (no stdout)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert named in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""  # no twin measured, no table started


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--shift", "hde.link_mbps"], "--shift"),
        (["--shift", "db.pool=4"], "--shift"),
        (["--seeds", "1,x"], "--seeds"),
    ],
)
def test_cycle_shift_says_which_flag_is_invalid_before_running_anything(args: list[str], named: str) -> None:
    _says_in_one_line("cycle_shift.py", args, named)
