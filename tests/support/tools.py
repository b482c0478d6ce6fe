"""Helpers shared by the tests that drive real binaries and processes: finding helm/kubectl, waiting."""

from __future__ import annotations

import os
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]


def find_tool(name: str) -> str | None:
    """The project's own copy (.tools/bin, installed by scripts/setup-dev.sh) first, then PATH.

    The project's copy wins because it is the pinned version CI uses (helm v4, kubectl v1.35); a
    kubectl on PATH may be any version.
    """
    local = REPO / ".tools" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; fail naming ``what``.

    ``on_timeout`` adds diagnostics (a log tail, the object's state) to the failure message.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)
