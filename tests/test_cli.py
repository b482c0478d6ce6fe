"""Bad input to the CLI: one line naming the field, exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
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
        (["--link-mbps", "0"], "--link-mbps: must be a finite number greater than 0"),
        (["--link-mbps", "inf"], "--link-mbps: must be a finite number greater than 0 (got inf)"),
        (["--seed", str(2**70)], "--seed: Input should be less than or equal to 4294967295"),
        (["--learning-rate", "inf"], "--learning-rate: Input should be a finite number"),
        (["--learning-rate", "nan"], "--learning-rate: Input should be a finite number"),
        (["--episodes", str(10**30)], "--episodes: Input should be less than or equal to 1000000"),
        (["--episodes", "100000", "--steps", "100000"], "is more than 100,000,000"),
        (["--components", "hde,,pba"], "--components: 'hde,,pba' has an empty name"),
        (["--output", ""], "argument --output/-o: must name a folder"),
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
    broken.write_bytes(b"\xff\xfe\x00binary")
    assert "not valid YAML (not UTF-8 text)" in one_line_error(cli("tune", "--profile", str(broken)))
    assert "No such file" in one_line_error(cli("tune", "--profile", str(tmp_path / "absent.yaml")))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"spec: [unclosed\n", "not valid YAML (line 2, column 1: expected ',' or ']'"),
        (b"\xff\xfe\x00binary", "not valid YAML (not UTF-8 text)"),
    ],
)
def test_a_component_profile_that_is_not_yaml_is_one_line(tmp_path, content, expected):
    broken = tmp_path / "broken.yaml"
    broken.write_bytes(content)
    line = one_line_error(cli("component", "acp", "--profile", str(broken), "--config-dir", str(tmp_path)))
    assert line.startswith(f"dwcp-autotuner component: error: --profile {broken}: ") and expected in line


def test_folders_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for flag in ("--output", "--cache-dir"):
        started = time.monotonic()
        line = one_line_error(cli("tune", "--quick", flag, str(blocker / "inside")))
        assert (
            line.startswith(f"dwcp-autotuner tune: error: {flag}: cannot write to")
            or "exists and is not a folder" in line
        )
        assert time.monotonic() - started < 60  # refused at once, not after measuring twins


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--tick-seconds", "0"], "--tick-seconds: must be a finite number greater than 0"),
        (["--tick-seconds", "nan"], "--tick-seconds: must be a finite number greater than 0 (got nan)"),
        (["--profile-recheck-seconds", "nan"], "--profile-recheck-seconds: must be a finite number greater than 0"),
        (["--min-sample-seconds", "0.5"], "--min-sample-seconds: must be a finite number at least 1"),
        (["--min-sample-seconds", "inf"], "--min-sample-seconds: must be a finite number at least 1 (got inf)"),
        (["--prometheus-url", "http://[::1"], "--prometheus-url: 'http://[::1' is not a valid URL"),
    ],
)
def test_operator_flags_are_checked_before_connecting(args, expected):
    assert expected in one_line_error(cli("operator", *args))


def test_a_metrics_port_in_use_is_one_line_naming_the_port_and_the_flag(tmp_path):
    import socket

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(
            cli(
                "operator",
                "--kubeconfig",
                str(kubeconfig),
                "--metrics-port",
                str(port),
                "--metrics-address",
                "127.0.0.1",
                "--liveness",
                "",
            )
        )
    assert f"--metrics-port {port}" in line and "--metrics-address 127.0.0.1" in line and "cannot listen" in line


def test_a_worker_without_a_cluster_or_a_writable_result_says_so_in_its_last_line(tmp_path):
    """The Job's log ends with why no result was written, not with a traceback or an "internal error"."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    line = one_line_error(cli("worker", "twin", "--profile-json", "{}", "--result", "a/b", "--kubeconfig", "/nope"))
    assert line.startswith("dwcp-autotuner worker: error: no cluster to write the result to: ")

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{closed}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c}}]\ncurrent-context: c\n"
    )
    done = cli("worker", "twin", "--profile-json", "{}", "--result", "a/b", "--kubeconfig", str(kubeconfig))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("dwcp-autotuner worker: error: --result a/b: cannot write the result there (")
    job_error = "dwcp-autotuner worker twin: --profile-json/--settings-json: spec.parameters: Field required; "
    assert any(line.startswith(job_error) for line in lines)  # the job's own error, in one line, first
