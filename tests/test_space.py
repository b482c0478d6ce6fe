"""Parameter spaces: grids, steps at the bounds, validation that names the field, objective and penalties."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dwcp_autotuner.models.builtin import ACP, BUILTIN_SPACES, HDE, PBA
from dwcp_autotuner.models.profile import ParameterProfileSpec
from dwcp_autotuner.models.space import MetricSpec, ObjectiveTerm, Parameter, SoftConstraint, TuningSpace


def test_builtin_bounds_are_the_original_systems():
    bounds = {(name, p.name): (p.min, p.max) for name, s in BUILTIN_SPACES.items() for p in s.parameters}
    assert bounds == {
        ("hde", "compression_level"): (1, 9),
        ("hde", "chunk_size"): (1024, 65536),
        ("hde", "window_size"): (32768, 1048576),
        ("pba", "prediction_window"): (10, 300),
        ("pba", "confidence_threshold"): (0.5, 0.99),
        ("pba", "update_frequency"): (1, 60),
        ("acp", "timeout_ms"): (100, 5000),
        ("acp", "batch_size"): (1, 100),
        ("acp", "quorum_size"): (3, 15),
    }


def test_log2_grid_doubles_from_default_and_includes_the_bounds():
    timeout = ACP.parameter("timeout_ms")
    assert timeout.grid() == (100, 125, 250, 500, 1000, 2000, 4000, 5000)
    assert timeout.move(1000, +1) == 2000
    assert timeout.move(1000, -1) == 500
    assert timeout.move(4000, +1) == 5000  # clipped to the hard bound, not 8000
    assert timeout.move(5000, +1) == 5000  # never past it
    assert timeout.move(100, -1) == 100


def test_linear_grid_steps_and_clips_at_both_bounds():
    confidence = PBA.parameter("confidence_threshold")
    grid = confidence.grid()
    assert grid[0] == 0.5 and grid[-1] == 0.99 and 0.95 in grid
    assert confidence.move(0.95, +1) == 0.99
    assert confidence.move(0.99, +1) == 0.99
    assert confidence.move(0.5, -1) == 0.5
    level = HDE.parameter("compression_level")
    assert level.grid() == tuple(range(1, 10))
    assert level.move(1, -1) == 1 and level.move(9, +1) == 9 and level.move(3, +1) == 4


@pytest.mark.parametrize(
    "fields",
    [
        {"min": -0.8020666483629364, "max": 4.129512287831131, "default": -0.8020666483629364, "step": 0.35},
        {"min": 0.1, "max": 0.6666666666666666, "default": 0.6666666666666666, "step": 0.1},
        {"min": 0.00012345678901234, "max": 1.0, "default": 0.5, "scale": "log2"},
        {"min": 1e-12, "max": 1e-9, "default": 1e-12, "scale": "log2"},
    ],
)
def test_every_grid_value_is_within_bounds_that_have_more_than_ten_decimals(fields):
    """Grid values were rounded to ten decimals (to keep 0.30000000000000004 out), and a bound with more of them
    rounded past itself: -0.80206664836… became -0.8020666484, which the ConfigMap's check refused as outside the
    bounds when the canary wrote it, and the run stopped on its own stable configuration; a parameter below 1e-10 had
    no grid at all (every value rounded to 0)."""
    parameter = Parameter.model_validate({"name": "x", "type": "float", **fields})
    grid = parameter.grid()
    assert len(grid) >= 4 and list(grid) == sorted(set(grid))
    for value in grid:
        assert parameter.min <= value <= parameter.max and parameter.coerce(value) == value
    assert grid[0] == pytest.approx(parameter.min, rel=1e-9) and grid[-1] == pytest.approx(parameter.max, rel=1e-9)


def test_grid_values_carry_no_float_noise():
    parameter = Parameter.model_validate(
        {"name": "x", "type": "float", "min": 0.0, "max": 1.0, "default": 0.1, "step": 0.1}
    )
    assert parameter.grid() == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def test_normalize_maps_bounds_to_zero_and_one():
    for space in BUILTIN_SPACES.values():
        for p in space.parameters:
            grid = p.grid()
            assert p.normalize(grid[0]) == pytest.approx(0.0)
            assert p.normalize(grid[-1]) == pytest.approx(1.0)
            values = [p.normalize(v) for v in grid]
            assert values == sorted(values)


def test_choice_parameter_moves_through_its_choices():
    codec = Parameter(name="codec", type="choice", choices=["lz4", "zstd", "brotli"], default="zstd")
    assert codec.move("zstd", +1) == "brotli" and codec.move("brotli", +1) == "brotli"
    assert codec.move("lz4", -1) == "lz4"
    assert codec.normalize("zstd") == 0.5
    with pytest.raises(ValueError, match="not one of"):
        codec.coerce("gzip")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"min": 10, "max": 5, "default": 7}, "min (10) must be below max (5)"),
        ({"min": 1, "max": 9, "default": 3, "step": 0}, "step must be greater than 0"),
        ({"min": 1, "max": 9, "default": 12}, "default 12 is outside [1, 9]"),
        ({"min": 0, "max": 9, "default": 3, "scale": "log2"}, "log2 scale needs min > 0"),
        ({"min": 0, "max": 1e9, "default": 3, "step": 1}, "use a larger step or scale log2"),
        ({"type": "float", "min": 0.1, "max": 0.9, "default": 0.5}, "step is required"),
    ],
)
def test_invalid_parameters_are_rejected_with_the_reason(fields, message):
    with pytest.raises(
        ValidationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    ):
        Parameter(name="x", **fields)


def test_unknown_metric_in_objective_is_named():
    with pytest.raises(ValidationError, match=r"objective\[0\]\.metric: unknown metric 'latency'"):
        TuningSpace(
            parameters=[Parameter(name="x", min=1, max=3, default=2)],
            metrics=[MetricSpec(name="throughput")],
            objective=[ObjectiveTerm(metric="latency", goal="minimize")],
        )


def test_unknown_guard_metric_is_named():
    with pytest.raises(ValidationError, match=r"guards\[0\]\.metric: unknown metric 'errors'"):
        ParameterProfileSpec(
            parameters=[Parameter(name="x", min=1, max=3, default=2)],
            metrics=[MetricSpec(name="throughput")],
            objective=[ObjectiveTerm(metric="throughput", goal="maximize")],
            guards=[{"metric": "errors", "goal": "minimize"}],
        )


def test_objective_and_penalties():
    space = TuningSpace(
        parameters=[Parameter(name="x", min=1, max=3, default=2)],
        metrics=[MetricSpec(name="tput"), MetricSpec(name="lat"), MetricSpec(name="mem"), MetricSpec(name="cost")],
        objective=[
            ObjectiveTerm(metric="tput", goal="maximize", weight=2, scale=10),
            ObjectiveTerm(metric="lat", goal="minimize", scale=100),
        ],
        constraints=[
            SoftConstraint(metric="mem", max=80, penalty=1.0),
            SoftConstraint(metric="cost", max_increase_pct=10, penalty=3.0),
        ],
    )
    metrics = {"tput": 50.0, "lat": 20.0, "mem": 40.0, "cost": 1.0}
    assert space.objective_value(metrics) == pytest.approx(2 * 50 / 10 - 20 / 100)
    assert space.penalty(metrics, baseline=metrics) == 0.0
    over = dict(metrics, mem=100.0, cost=1.3)  # memory 25 % over its limit; cost +30 % where +10 % is allowed
    assert space.penalty(over, baseline=metrics) == pytest.approx(1.0 * 20 / 80 + 3.0 * 0.2)
    assert space.score(over, baseline=metrics) == pytest.approx(
        space.objective_value(over) - space.penalty(over, metrics)
    )


def test_coerce_config_rejects_out_of_bounds_and_unknown_keys():
    assert HDE.coerce_config({"compression_level": "5"})["compression_level"] == 5
    with pytest.raises(ValueError, match=r"compression_level: 12 is outside \[1, 9\]"):
        HDE.coerce_config({"compression_level": 12})
    with pytest.raises(ValueError, match="unknown parameter"):
        HDE.coerce_config({"compresion_level": 5})
    with pytest.raises(ValueError, match="not a number"):
        HDE.coerce_config({"chunk_size": "big"})


def test_space_hash_changes_with_the_parameter_space_only():
    widened = HDE.model_copy(deep=True)
    widened.parameters[0] = Parameter(name="compression_level", min=1, max=22, default=3)
    assert widened.space_hash() != HDE.space_hash()
    reweighted = HDE.model_copy(update={"objective": [ObjectiveTerm(metric="compression_ratio", goal="maximize")]})
    assert reweighted.space_hash() == HDE.space_hash()


def test_camel_case_round_trip():
    spec = ParameterProfileSpec.model_validate(
        {
            **HDE.dump(),
            "target": {"name": "hde-config"},
            "twin": "hde",
            "guards": [{"metric": "peak_memory_mb", "goal": "minimize", "maxDegradationPct": 5}],
        }
    )
    dumped = spec.dump()
    assert dumped["guards"][0]["maxDegradationPct"] == 5
    assert ParameterProfileSpec.model_validate(dumped) == spec
    assert spec.tuning_space() == HDE
