"""Bad input to the CLI: one line naming the field, exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dwcp_autotuner.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or ROOT,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


PROFILE = """
apiVersion: autotune.dwcp.io/v1alpha1
kind: ParameterProfile
metadata: {{name: custom}}
spec:
  twin: hde
  parameters:
    - {{name: compression_level, min: {min}, max: {max}, default: 3, step: {step}}}
    - {{name: chunk_size, min: 1024, max: 65536, default: 4096, scale: log2}}
    - {{name: window_size, min: 32768, max: 1048576, default: 65536, scale: log2}}
  metrics:
    - {{name: effective_throughput_mbps}}
    - {{name: compression_ratio}}
  objective:
    - {{metric: {metric}, goal: maximize}}
"""


@pytest.mark.parametrize(
    "fields, expected",
    [
        (
            {"min": 10, "max": 5, "step": 1, "metric": "effective_throughput_mbps"},
            "spec.parameters[0]: parameter 'compression_level': min (10) must be below max (5)",
        ),
        ({"min": 1, "max": 9, "step": 0, "metric": "effective_throughput_mbps"}, "step must be greater than 0"),
        ({"min": 1, "max": 9, "step": 1, "metric": "latency"}, "spec: objective[0].metric: unknown metric 'latency'"),
    ],
)
def test_invalid_profile_file_names_the_field(tmp_path, fields, expected):
    path = tmp_path / "profile.yaml"
    path.write_text(textwrap.dedent(PROFILE.format(**fields)))
    line = one_line_error(cli("tune", "--profile", str(path), "--quick"))
    assert str(path) in line and expected in line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--episodes", "0"], "--episodes: Input should be greater than or equal to 1"),
        (["--episodes", "many"], "argument --episodes: invalid int value: 'many'"),
        (["--components", "hde,zip"], "--components: unknown component 'zip'"),
        (["--significance", "2"], "--significance: Input should be less than 0.5"),
        (["--link-mbps", "0"], "--link-mbps: must be greater than 0"),
        (["--verify-samples", "1"], "--verify-samples: at least 3"),
        (["--epsilon-decay", "1.5"], "--epsilon-decay: Input should be less than or equal to 1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_invalid_flags_name_the_flag(args, expected):
    line = one_line_error(cli("tune", *args))
    assert expected in line


def test_profile_that_is_not_yaml_or_missing(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    assert "not valid YAML" in one_line_error(cli("tune", "--profile", str(broken)))
    assert "No such file" in one_line_error(cli("tune", "--profile", str(tmp_path / "absent.yaml")))


def test_operator_flags_are_checked_before_connecting():
    assert "--tick-seconds: must be greater than 0" in one_line_error(cli("operator", "--tick-seconds", "0"))
    assert "--min-sample-seconds: must be at least 1" in one_line_error(cli("operator", "--min-sample-seconds", "0.5"))
