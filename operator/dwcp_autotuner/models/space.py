"""Parameter spaces: typed parameters with hard bounds and steps, an objective, soft constraints.

These are the same models the ParameterProfile CRD is generated from, so every field carries a
description (it becomes `kubectl explain` text) and every rule lives in a validator here, once.

One agent action moves one parameter by one step, so a parameter's reachable values form a grid:
start at the default and step (linear `+step` or multiplicative `×2` / `÷2`) until a hard bound,
which is itself included. The grid is finite and the twin's exhaustive search runs over it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, StrictFloat, StrictInt, StrictStr, model_validator

from .base import CamelModel

ParamValue = int | float | str
#: Whether larger or smaller values of a metric are better (objective terms, guards, statistics).
Goal = Literal["maximize", "minimize"]
# Strict on input: YAML `true` must not silently become the number 1.
StrictParamValue = StrictInt | StrictFloat | StrictStr

#: A parameter with more reachable values than this is almost certainly a mistyped step.
MAX_GRID_VALUES = 4096

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"


class Parameter(CamelModel):
    """One tunable parameter and the rules it must always obey."""

    name: str = Field(
        pattern=NAME_PATTERN, max_length=63, description="Key of the parameter in the component's configuration."
    )
    type: Literal["int", "float", "choice"] = Field(
        "int", description="Value type: int, float or choice (one of `choices`)."
    )
    min: float | None = Field(None, description="Hard lower bound (numeric types); never crossed.")
    max: float | None = Field(None, description="Hard upper bound (numeric types); never crossed.")
    choices: list[StrictParamValue] | None = Field(None, description="Allowed values, in order (type choice).")
    default: StrictParamValue = Field(
        description="Value the component runs with before tuning; the grid is anchored here."
    )
    step: float | None = Field(None, description="Linear step (scale linear). Defaults to 1 for int parameters.")
    scale: Literal["linear", "log2"] = Field(
        "linear", description="linear: ±step per action; log2: ×2 or ÷2 per action."
    )
    unit: str = Field("", description="Unit, for reports only.")
    description: str = Field("", description="What the parameter does, for reports only.")

    @model_validator(mode="after")
    def _check_bounds(self) -> Parameter:
        if self.type == "choice":
            if not self.choices:
                raise ValueError(f"parameter {self.name!r}: choices must list at least one value")
            if len(set(map(str, self.choices))) != len(self.choices):
                raise ValueError(f"parameter {self.name!r}: choices must be unique")
            if self.default not in self.choices:
                raise ValueError(f"parameter {self.name!r}: default {self.default!r} is not one of the choices")
            return self
        if self.min is None or self.max is None:
            raise ValueError(f"parameter {self.name!r}: min and max are required for {self.type} parameters")
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError(f"parameter {self.name!r}: min and max must be finite")
        if self.min >= self.max:
            raise ValueError(f"parameter {self.name!r}: min ({_fmt(self.min)}) must be below max ({_fmt(self.max)})")
        if isinstance(self.default, str):
            raise ValueError(f"parameter {self.name!r}: default must be a number for {self.type} parameters")
        if not self.min <= self.default <= self.max:
            raise ValueError(
                f"parameter {self.name!r}: default {_fmt(self.default)} is outside [{_fmt(self.min)}, {_fmt(self.max)}]"
            )
        if self.type == "int":
            for label, value in (("min", self.min), ("max", self.max), ("default", self.default)):
                if float(value) != int(value):
                    raise ValueError(f"parameter {self.name!r}: {label} must be a whole number for int parameters")
            self.default = int(self.default)
        else:
            self.default = float(self.default)
        if self.scale == "log2":
            if self.min <= 0:
                raise ValueError(f"parameter {self.name!r}: log2 scale needs min > 0")
            if self.step is not None:
                raise ValueError(
                    f"parameter {self.name!r}: step is not used with scale log2 (each action doubles or halves)"
                )
        else:
            if self.step is None:
                if self.type == "float":
                    raise ValueError(f"parameter {self.name!r}: step is required for linear float parameters")
                self.step = 1.0
            if not self.step > 0:
                raise ValueError(f"parameter {self.name!r}: step must be greater than 0")
            if self.type == "int" and float(self.step) != int(self.step):
                raise ValueError(f"parameter {self.name!r}: step must be a whole number for int parameters")
            values = (self.max - self.min) / self.step
            if values > MAX_GRID_VALUES:
                raise ValueError(
                    f"parameter {self.name!r}: step {_fmt(self.step)} gives {int(values)} values "
                    f"(more than {MAX_GRID_VALUES}); use a larger step or scale log2"
                )
        return self

    # --- the grid -----------------------------------------------------------------------------
    def grid(self) -> tuple[ParamValue, ...]:
        """Every value an agent can reach from the default, in increasing order."""
        cached = self.__dict__.get("_grid_cache")
        if cached is None:
            cached = self._build_grid()
            self.__dict__["_grid_cache"] = cached
        return cached

    def _build_grid(self) -> tuple[ParamValue, ...]:
        if self.type == "choice":
            return tuple(self.choices or ())
        assert self.min is not None and self.max is not None
        values = {self._cast(self.default)}
        for direction in (+1, -1):
            value = self.default
            while True:
                nxt = self._raw_step(value, direction)
                nxt = min(max(nxt, self.min), self.max)
                nxt = self._cast(nxt)
                if nxt == value:
                    break
                values.add(nxt)
                value = nxt
                if len(values) > MAX_GRID_VALUES:  # defensive; the validator bounds linear grids
                    raise ValueError(f"parameter {self.name!r}: grid larger than {MAX_GRID_VALUES}")
        return tuple(sorted(values))

    def _raw_step(self, value: float, direction: int) -> float:
        if self.scale == "log2":
            return value * 2.0 if direction > 0 else value / 2.0
        assert self.step is not None
        return value + direction * self.step

    def _cast(self, value: float) -> ParamValue:
        if self.type == "int":
            return int(round(value))
        # Twelve significant digits keep float noise out of the grid (0.1 + 0.2 is 0.3). Ten decimals, as before, made
        # every value of a parameter below 1e-10 zero, and rounded a bound with more decimals (a generated manifest's
        # 0.6666666666666666) past itself: the canary's value was refused as out of bounds when it was written, and
        # the run stopped on its own stable configuration. A value rounded past a bound is the bound.
        assert self.min is not None and self.max is not None
        return min(max(float(f"{float(value):.12g}"), self.min), self.max)

    def index_of(self, value: ParamValue) -> int:
        """Index of the grid value nearest to `value` (values off the grid snap to it)."""
        grid = self.grid()
        if self.type == "choice":
            for i, choice in enumerate(grid):
                if choice == value or str(choice) == str(value):
                    return i
            raise ValueError(f"parameter {self.name!r}: {value!r} is not one of {list(grid)}")
        number = float(value)
        if self.scale == "log2":
            return min(range(len(grid)), key=lambda i: abs(math.log2(grid[i]) - math.log2(max(number, 1e-300))))
        return min(range(len(grid)), key=lambda i: abs(grid[i] - number))

    def move(self, value: ParamValue, direction: int) -> ParamValue:
        """One step up (+1) or down (-1) from `value`, never past a hard bound."""
        grid = self.grid()
        index = min(max(self.index_of(value) + direction, 0), len(grid) - 1)
        return grid[index]

    def normalize(self, value: ParamValue) -> float:
        """Position of `value` within the bounds, in [0, 1] (log-spaced for log2 parameters)."""
        if self.type == "choice":
            n = len(self.grid())
            return self.index_of(value) / (n - 1) if n > 1 else 0.0
        assert self.min is not None and self.max is not None
        number = float(value)
        if self.scale == "log2":
            return math.log(number / self.min) / math.log(self.max / self.min)
        return (number - self.min) / (self.max - self.min)

    def coerce(self, raw: object) -> ParamValue:
        """Parse a value from a config file or ConfigMap and check it against the hard bounds; raises ValueRefused."""
        if self.type == "choice":
            for choice in self.grid():
                if choice == raw or str(choice) == str(raw):
                    return choice
            raise ValueRefused("out_of_bounds", f"{self.name}: {raw!r} is not one of {list(self.grid())}")
        # A JSON/YAML `true` is not the number 1, and a list or object is no number at all.
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueRefused("invalid_value", f"{self.name}: {_json(raw)} is not a number")
        try:
            number = float(raw)
        except ValueError:
            raise ValueRefused("invalid_value", f"{self.name}: {_json(raw)} is not a number") from None
        if not math.isfinite(number):
            raise ValueRefused("invalid_value", f"{self.name}: {_json(raw)} is not a finite number")
        assert self.min is not None and self.max is not None
        if not self.min <= number <= self.max:
            raise ValueRefused(
                "out_of_bounds", f"{self.name}: {_fmt(number)} is outside [{_fmt(self.min)}, {_fmt(self.max)}]"
            )
        if self.type == "int":
            if number != int(number):
                raise ValueRefused("invalid_value", f"{self.name}: {_json(raw)} is not a whole number")
            return int(number)
        return number


class ValueRefused(ValueError):
    """A value that breaks a parameter's rules; `reason` names the rule (`invalid_value` or `out_of_bounds`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _json(value: object) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


class MetricSpec(CamelModel):
    """A measured quantity of the component."""

    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=63,
        description="Metric name, referenced by the objective, constraints and guards.",
    )
    unit: str = Field("", description="Unit, for reports only.")
    description: str = Field("", description="What the metric measures.")
    query: str | None = Field(
        None,
        description="PromQL template; `{{variant}}` is replaced by `stable` or `canary` and `{{window}}` by the analysis window.",
    )


class ObjectiveTerm(CamelModel):
    """One weighted metric of the objective: term = ±weight × value / scale (+ when maximized)."""

    metric: str = Field(description="Name of a metric in `metrics`.")
    goal: Goal = Field(description="Whether larger or smaller values are better.")
    weight: float = Field(1.0, gt=0, description="Relative importance of the term.")
    scale: float = Field(
        1.0, gt=0, description="Typical magnitude of the metric, so that terms of different units add up."
    )


class SoftConstraint(CamelModel):
    """A limit that may be crossed at a price: penalty × relative violation is subtracted from the objective."""

    metric: str = Field(description="Name of a metric in `metrics`.")
    max: float | None = Field(None, description="The metric should stay at or below this value.")
    min: float | None = Field(None, description="The metric should stay at or above this value.")
    max_increase_pct: float | None = Field(
        None,
        ge=0,
        description="The metric should not rise by more than this percentage over the baseline configuration.",
    )
    penalty: float = Field(1.0, ge=0, description="Objective units lost per unit of relative violation.")

    @model_validator(mode="after")
    def _one_limit(self) -> SoftConstraint:
        if self.max is None and self.min is None and self.max_increase_pct is None:
            raise ValueError(f"constraint on {self.metric!r}: set max, min or maxIncreasePct")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(
                f"constraint on {self.metric!r}: min ({_fmt(self.min)}) must not exceed max ({_fmt(self.max)})"
            )
        return self

    def violation(self, value: float, baseline: float | None) -> float:
        """Relative amount by which `value` breaks this constraint (0 when it holds)."""
        worst = 0.0
        if self.max is not None and value > self.max:
            worst = max(worst, (value - self.max) / max(abs(self.max), 1e-12))
        if self.min is not None and value < self.min:
            worst = max(worst, (self.min - value) / max(abs(self.min), 1e-12))
        if self.max_increase_pct is not None and baseline is not None:
            allowed = baseline * (1.0 + self.max_increase_pct / 100.0)
            if value > allowed:
                worst = max(worst, (value - allowed) / max(abs(baseline), 1e-12))
        return worst


class TuningSpace(CamelModel):
    """What can be changed (parameters), what is measured (metrics) and what counts as better."""

    parameters: list[Parameter] = Field(min_length=1, description="Tunable parameters.")
    metrics: list[MetricSpec] = Field(min_length=1, description="Measured metrics.")
    objective: list[ObjectiveTerm] = Field(min_length=1, description="Weighted metrics whose sum is maximized.")
    constraints: list[SoftConstraint] = Field(
        default_factory=list, description="Soft limits on metrics, with penalties."
    )

    @model_validator(mode="after")
    def _check_references(self) -> TuningSpace:
        _unique("parameters", [p.name for p in self.parameters])
        names = [m.name for m in self.metrics]
        _unique("metrics", names)
        known = set(names)
        for i, term in enumerate(self.objective):
            if term.metric not in known:
                raise ValueError(f"objective[{i}].metric: unknown metric {term.metric!r} (known: {', '.join(names)})")
        for i, constraint in enumerate(self.constraints):
            if constraint.metric not in known:
                raise ValueError(
                    f"constraints[{i}].metric: unknown metric {constraint.metric!r} (known: {', '.join(names)})"
                )
        return self

    # --- configurations -------------------------------------------------------------------------
    @property
    def parameter_names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def default_config(self) -> dict[str, ParamValue]:
        return {p.name: p.default for p in self.parameters}

    def coerce_config(self, raw: Mapping[str, object], *, fill_defaults: bool = True) -> dict[str, ParamValue]:
        """Parse and bound-check a whole configuration; unknown keys are an error (a typo would be silently ignored)."""
        unknown = sorted(set(raw) - set(self.parameter_names))
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(unknown)} (known: {', '.join(self.parameter_names)})")
        config: dict[str, ParamValue] = {}
        for p in self.parameters:
            if p.name in raw:
                config[p.name] = p.coerce(raw[p.name])
            elif fill_defaults:
                config[p.name] = p.default
            else:
                raise ValueError(f"{p.name}: missing")
        return config

    def grid_size(self) -> int:
        return math.prod(len(p.grid()) for p in self.parameters)

    # --- objective ------------------------------------------------------------------------------
    def objective_value(self, metrics: Mapping[str, float]) -> float:
        """Weighted sum of the objective terms (larger is better), before constraint penalties."""
        total = 0.0
        for term in self.objective:
            sign = 1.0 if term.goal == "maximize" else -1.0
            total += sign * term.weight * float(metrics[term.metric]) / term.scale
        return total

    def objective_magnitude(self, metrics: Mapping[str, float]) -> float:
        """The size of the objective's parts: the sum of its terms' magnitudes (weight × |value| / scale), over the
        terms whose metric is in `metrics`. It equals |objective| when every term is a maximized metric ≥ 0 and is
        larger where terms cancel (a minimized latency subtracted from a success rate): a percentage of a score
        near zero is taken of this instead (`exploration.safetyMarginPct`)."""
        return sum(
            term.weight * abs(float(metrics[term.metric])) / term.scale
            for term in self.objective
            if term.metric in metrics
        )

    def penalty(self, metrics: Mapping[str, float], baseline: Mapping[str, float] | None = None) -> float:
        """Sum of soft-constraint penalties; relative constraints need the baseline's metrics.

        A constraint whose metric is not in `metrics` is not measured (a profile metric without a query)
        and costs nothing; one whose baseline lacks the metric is judged on its absolute limits only."""
        total = 0.0
        for c in self.constraints:
            if c.metric not in metrics:
                continue
            reference = None if baseline is None or c.metric not in baseline else float(baseline[c.metric])
            total += c.penalty * c.violation(float(metrics[c.metric]), reference)
        return total

    def score(self, metrics: Mapping[str, float], baseline: Mapping[str, float] | None = None) -> float:
        """The quantity that tuning maximizes: objective minus soft-constraint penalties.

        The one score of the project: the canary analysis, the continuous watch, the twins' grids and
        `tune`'s verification all compute it here (the environment's vectorised copy is tested equal)."""
        return self.objective_value(metrics) - self.penalty(metrics, baseline)

    def space_hash(self) -> str:
        """Fingerprint of the parameter space: a checkpoint trained on another space must not be loaded."""
        canonical = json.dumps([p.dump() for p in self.parameters], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _unique(field: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{field}: duplicate name {name!r}")
        seen.add(name)


def _fmt(value: float | int | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
