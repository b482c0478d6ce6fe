"""The import structure: layers point down and no module imports itself round (scripts/check_layers.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_project_has_no_cycle_and_no_import_up_a_layer():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_layers.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_checker_finds_a_cycle_inside_a_function_and_an_import_up_a_layer(tmp_path):
    package = tmp_path / "dwcp_autotuner"
    for folder in ("models", "controller", "cli"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "models" / "run.py").write_text("from ..cli import main\n")  # up two layers
    (package / "cli" / "main.py").write_text("")
    (package / "controller" / "a.py").write_text("from . import b\n")
    (package / "controller" / "b.py").write_text("def later():\n    from .a import x\n")  # a cycle hidden in a function
    found = _checker().problems(package)
    assert any("dwcp_autotuner.models.run imports dwcp_autotuner.cli" in line for line in found), found
    assert any(
        line.startswith("import cycle:") and "controller.a" in line and "controller.b" in line for line in found
    ), found
