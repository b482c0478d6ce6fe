"""scripts/local-loop.sh, the README's "run the whole loop locally": one command starts everything (PIDs kept),
one stops it all. (That the loop then tunes the components is tests/test_closed_loop.py's job.)"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.prometheus import free_port, free_port_block, prometheus_available
from tests.support.tools import REPO, find_tool, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_tool("kubectl") is None, reason="no kubectl (scripts/setup-dev.sh)"),
    pytest.mark.skipif(not prometheus_available(), reason="no Prometheus binary (apt-get install prometheus)"),
]


def _environment(tmp_path: Path, base: int) -> dict[str, str]:
    """The script's environment: its files under `tmp_path`, its ports base+1 .. base+9."""
    return {
        **os.environ,
        "DWCP_LOCAL_DIR": str(tmp_path),
        "DWCP_LOCAL_PORT_BASE": str(base),
        "DWCP_LOCAL_PROMETHEUS_PORT": str(free_port()),
        "PYTHON": str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else "python3",
    }


def test_start_runs_everything_on_loopback_and_stop_ends_it_all(tmp_path):
    env = _environment(tmp_path, free_port_block(9))
    script = str(REPO / "scripts" / "local-loop.sh")
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "optimizationrun.autotune.dwcp.io/tune created" in started.stdout
        status = subprocess.run([script, "status"], env=env, capture_output=True, text=True)
        running = [line.split(":")[0] for line in status.stdout.splitlines() if "running" in line]
        assert running == ["emulator", "hde", "pba", "acp", "prometheus", "operator"], status.stdout
        pids = [int((tmp_path / f"{name}.pid").read_text()) for name in running]
        again = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr  # no second copy
        kubectl = [find_tool("kubectl"), "--kubeconfig", str(tmp_path / "kubeconfig")]
        wait_for(
            lambda: (
                "tune"
                in subprocess.run([*kubectl, "get", "optrun", "-n", "dwcp"], capture_output=True, text=True).stdout
            ),
            30,
            "the run in the emulator",
        )
    finally:
        stopped = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    for pid in pids:
        status_file = Path(f"/proc/{pid}/status")
        assert not status_file.exists() or "zombie" in status_file.read_text().lower()
    status = subprocess.run([script, "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 1 and "running" not in status.stdout


def test_start_says_at_once_which_process_exited_when_one_cannot_start(tmp_path):
    """A port of the block already taken (here the operator's liveness port, base+8): the operator exits at once,
    and `start` says so with the end of its log instead of waiting three minutes for the profiles."""
    base = free_port_block(9)
    env = _environment(tmp_path, base)
    script = str(REPO / "scripts" / "local-loop.sh")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", base + 8))
        taken.listen()
        began = time.monotonic()
        try:
            started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=170)
        finally:
            subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 1
    assert "local-loop: operator exited" in started.stderr and "address already in use" in started.stderr
    assert time.monotonic() - began < 150  # not the three-minute wait
