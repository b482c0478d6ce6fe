"""The bench scripts: a bad value on a command line is one line naming the field, never a traceback; the live-tuning
bench says whether its two quality targets are met."""

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


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--shift", "hde.nonsense=3"], "has no option nonsense"),
        (["--shift", "acp.loss=2", "--components", "acp"], "loss must be from 0 to 1"),
        (["--shift", "hde.link_mbps=0"], "link_mbps must be positive"),
        (["--shift", "acp.loss=0.2"], "acp is not among the components measured"),
        (["--shift", "xyz.a=1"], "xyz is not among the components measured"),
    ],
)
def test_live_tuning_says_which_flag_is_invalid_before_measuring_anything(args: list[str], named: str) -> None:
    components = [] if "--components" in args else ["--components", "hde"]
    _says_in_one_line("live_tuning.py", [*args, *components, "--seeds", "1", "--budgets", "5"], named)


@pytest.mark.parametrize(
    ("script", "args", "named"),
    [
        ("live_tuning.py", ["--components", "hde,foo"], "argument --components: unknown foo; expected one or more"),
        ("live_tuning.py", ["--seeds", "1,x"], "argument --seeds: expected whole numbers of 0 or more"),
        ("live_tuning.py", ["--budgets", "0"], "argument --budgets: expected whole numbers of 1 or more"),
        ("tuning_quality.py", ["--components", "nope"], "argument --components: unknown nope"),
        ("tuning_quality.py", ["--budgets", "0"], "argument --budgets"),
        ("tuning_quality.py", ["--methods", "dqn,nope"], "argument --methods: unknown nope"),
        ("component_overhead.py", ["--rounds", "0"], "argument --rounds: expected a whole number of 1 or more"),
        ("operator_scale.py", ["--runs", "50,0"], "argument --runs"),
        ("operator_scale.py", ["--tick", "nan"], "argument --tick: expected a finite number greater than 0"),
        ("reconcile_latency.py", ["--changes", "0"], "argument --changes"),
        ("guard_noise.py", ["--interval", "-1"], "argument --interval"),
        ("train_speed.py", ["--levels", "1"], "argument --levels: expected a whole number of 2 or more"),
        ("twin_measure.py", ["--repeats", "0"], "argument --repeats"),
        ("workload_surface.py", ["--workload", "hde", "--repeat", "0"], "argument --repeat"),
        ("guard_noise.py", ["--canary", '{"compresion_level": 3}'], "--canary: unknown parameter(s): compresion_level"),
        ("workload_surface.py", ["--workload", "pba", "--option", "trend=1"], "--option: workload pba has no option"),
        (
            "workload_surface.py",
            ["--workload", "hde", "--option", "link_mbps=0"],
            "--option: link_mbps must be positive",
        ),
        ("live_tuning.py", ["--methods", "ours,nope"], "argument --methods: unknown nope"),
        ("cycle_shift.py", ["--budget", "0"], "argument --budget"),
        ("cycle_shift.py", ["--methods", "ours,nope"], "--methods: unknown nope"),
    ],
)
def test_a_bench_refuses_a_flag_that_would_measure_nothing_before_it_starts(
    script: str, args: list[str], named: str
) -> None:
    """argparse's usage line and one error naming the flag (or one line of our own), no traceback, nothing run:
    before, `--rounds 0` ended in a traceback and `--budgets 0` in Optuna's, `--methods nope` measured nothing."""
    done = _bench(script, args)
    assert done.returncode in (1, 2)
    assert "Traceback" not in done.stderr
    assert named in done.stderr.strip().splitlines()[-1], done.stderr
    assert done.stdout == ""


def _bench(script: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def _says_in_one_line(script: str, args: list[str], named: str) -> None:
    """The script exits 1 with one line naming `named` on stderr, no traceback, and nothing run (no stdout)."""
    done = _bench(script, args)
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
        (["--shift", "acp.no_such_option=1"], "acp has no option no_such_option"),
        (["--shift", "hde.dirty_fraction=1.5"], "dirty_fraction must be from 0 to 1"),
    ],
)
def test_cycle_shift_says_which_flag_is_invalid_before_running_anything(args: list[str], named: str) -> None:
    _says_in_one_line("cycle_shift.py", args, named)


def _live_tuning():
    """bench/live_tuning.py as a module (bench/ is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("live_tuning", REPO / "bench" / "live_tuning.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["live_tuning"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _cell(fraction: float, harmful: float, most: int | None = None) -> dict:
    cell = {"fraction_mean": fraction, "fraction_min": fraction, "harmful": harmful, "canaries": 20.0}
    return cell if most is None else {**cell, "harmful_max": most}


def test_live_tuning_judges_the_no_prior_target_against_the_better_baseline_and_a_third_of_its_harm() -> None:
    targets = _live_tuning().targets
    # GP is the better baseline here: its 0.98 and its 15 harmful canaries set the bar, not TPE's 0.93 and 9.
    results = {"ours": {20: _cell(0.95, 4.0)}, "tpe": {20: _cell(0.93, 9.0)}, "gp": {20: _cell(0.98, 15.0)}}
    (line,) = targets(results, 20, shifted=False)
    assert "gp" in line and "0.980" in line and "5.00" in line and line.endswith("not met")
    results["ours"][20] = _cell(0.98, 4.9)
    assert targets(results, 20, shifted=False)[0].endswith(": met")
    results["ours"][20] = _cell(0.99, 5.1)  # closer, but more than a third of GP's harm
    assert targets(results, 20, shifted=False)[0].endswith("not met")
    assert targets({"ours": {20: _cell(0.9, 1.0)}}, 20, shifted=False) == []  # no baseline run: nothing judged


def test_live_tuning_judges_the_targets_at_full_precision_and_rounds_only_the_json() -> None:
    """Means judged after rounding to four digits read 0.97196 against 0.97204 as a tie, and a tie is met."""
    bench = _live_tuning()

    def traces(fractions: list[float]) -> list:
        return [bench.Trace(fractions=[f] * 20, harmful=[False] * 20) for f in fractions]

    results = {
        "ours": bench.summarize(traces([0.97196, 0.97196]), [20]),
        "gp": bench.summarize(traces([0.97204, 0.97204]), [20]),
    }
    (line,) = bench.targets(results, 20, shifted=False)
    assert line.endswith("not met"), line
    written = bench.rounded({"acp": results})["acp"]
    assert written["ours"][20]["fraction_mean"] == written["gp"][20]["fraction_mean"] == 0.972
    assert written["ours"][20]["harmful_max"] == 0 and written["ours"][20]["canaries"] == 20.0


def test_live_tuning_judges_the_shift_target_on_the_worst_run_not_the_mean() -> None:
    targets = _live_tuning().targets
    results = {"ours_twin_prior": {20: _cell(0.97, 0.67, most=1)}}
    assert targets(results, 20, shifted=False) == []  # the shift target is for shifted workloads only
    (line,) = targets(results, 20, shifted=True)
    assert line.endswith(": met")
    results["ours_twin_prior"][20] = _cell(0.97, 0.67, most=2)  # one run had two harmful canaries
    assert targets(results, 20, shifted=True)[0].endswith("not met")
    results["ours_twin_prior"][20] = _cell(0.949, 0.0, most=0)
    assert targets(results, 20, shifted=True)[0].endswith("not met")


def test_live_tuning_shows_its_progress_on_a_terminal_and_keeps_the_table_clean(tmp_path) -> None:
    """Measuring the twins and the runs took minutes with nothing shown: on a terminal one line says what it does
    now; the table on stdout, and stderr where it is a file (CI), carry none of it."""
    import os
    import pty

    leader, follower = pty.openpty()
    args = [
        "--components",
        "pba",
        "--seeds",
        "1,2",
        "--budgets",
        "3",
        "--methods",
        "random",
        "--cache-dir",
        str(tmp_path),
    ]
    with subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "live_tuning.py"), *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
        cwd=REPO,
    ) as done:
        os.close(follower)
        table, _ = done.communicate(timeout=300)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal is gone with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert done.returncode == 0
    text = shown.decode()
    assert "pba: measuring the live twin and the prior" in text
    assert "pba random: run 1 of 2 (seed 1)" in text and "pba random: run 2 of 2 (seed 2)" in text
    assert "run 1 of 2" not in table and "\r" not in table and "random " in table
    quiet = _bench("live_tuning.py", args)  # stderr a file: nothing there
    assert quiet.returncode == 0 and quiet.stderr == ""
