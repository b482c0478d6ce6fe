"""Whether a profile's declared twin (`spec.twin`) can stand in for its component: checked when the profile is validated."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..env.twin import Twin, load_or_measure_twin
from ..models.profile import ParameterProfileSpec
from ..workloads import make_workload, workload_interface


def measure_profile_twin(
    profile: ParameterProfileSpec,
    *,
    seed: int,
    cache_dir: Path | None,
    quick: bool,
    conditions: Mapping[str, float | int] | None = None,
) -> Twin | None:
    """The twin of the profile's space measured with its built-in workload (cached on disk), or None without one;
    with `conditions`, under those workload options (one of `workloads.twin_conditions`) instead of the defaults."""
    if profile.twin is None:
        return None
    workload = make_workload(profile.twin, quick=quick, **dict(conditions or {}))
    twin, _ = load_or_measure_twin(profile.tuning_space(), workload, seed=seed, cache_dir=cache_dir)
    return twin


def twin_mismatch(profile: ParameterProfileSpec) -> str | None:
    """Why the built-in workload `profile.twin` cannot measure the profile's space, or None when it can.

    The twin is measured by running the workload at every grid point of the profile's parameters and
    scoring the metrics it returns, so the profile must tune exactly the workload's parameters and score
    only metrics the workload measures (its guards too)."""
    if profile.twin is None:
        return None
    parameters, metrics = workload_interface(profile.twin)
    problems = []
    missing = [p for p in parameters if p not in profile.parameter_names]
    unknown = [p for p in profile.parameter_names if p not in parameters]
    if missing:
        problems.append(f"lacks the parameter(s) {', '.join(missing)} the {profile.twin} workload needs")
    if unknown:
        problems.append(f"tunes {', '.join(unknown)}, which the {profile.twin} workload does not have")
    scored = [t.metric for t in profile.objective] + [c.metric for c in profile.constraints]
    scored += [g.metric for g in profile.guards]
    unmeasured = sorted({m for m in scored if m not in metrics})
    if unmeasured:
        problems.append(
            f"scores {', '.join(unmeasured)}, which the {profile.twin} workload does not measure "
            f"(it measures {', '.join(metrics)})"
        )
    if not problems:
        return None
    return f"spec.twin {profile.twin}: the profile " + "; it ".join(problems) + ". Fix the names, or remove spec.twin."
