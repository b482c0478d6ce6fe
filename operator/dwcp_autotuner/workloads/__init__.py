"""Reference implementations of the DWCP v3 components that really do the work.

* `hde` — delta compression of successive VM memory snapshots with real zstd;
* `pba` — bandwidth-demand prediction and allocation on a synthetic demand trace;
* `acp` — a discrete-event simulation of PBFT-style consensus over WAN latencies.

`make_workload(name, quick=False, **options)` builds one; every workload has the interface of
`base.Workload`: `name`, `metric_names` (those of the matching built-in tuning space),
`options()` (a JSON-able cache key) and `run(config, seed) -> {metric: value}`. `twin_conditions(name)`
lists the other live conditions (option values) its twin is also measured under.
This package imports nothing else of `dwcp_autotuner`.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping

from .base import Workload

WORKLOAD_NAMES = ("hde", "pba", "acp")


def _module(name: str):
    """Workload `name`'s module (imported on first use: each brings its own dependencies)."""
    if name not in WORKLOAD_NAMES:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOAD_NAMES)})")
    return importlib.import_module(f"{__name__}.{name}")


def workload_interface(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(parameter names, metric names) of workload `name`, without building its data."""
    module = _module(name)
    return module.PARAMS, module.METRICS


#: The factors each condition is varied by, one at a time (2.5 apart, two steps each way): from a sixth to six
#: times the default covers a link ten times faster, a fifth of the dirty pages, twice the request rate.
CONDITION_FACTORS = (0.16, 0.4, 2.5, 6.25)


def twin_conditions(name: str) -> list[dict[str, float | int]]:
    """The other live conditions workload `name`'s twin is measured under: each of its `CONDITIONS` (an option
    standing for the environment, not for how much is measured) at `CONDITION_FACTORS` times its default, one
    option at a time, kept inside the option's valid range (a probability stops at 1) and without duplicates.

    The learned twin weighs these twins by how well each explains the live canaries (`proposers/surrogate.py`),
    so a live workload that differs from the default one (a faster link, fewer dirty pages) is recognised."""
    defaults = make_workload(name, quick=True).options()  # building one is cheap: its data is made on first run
    variations: list[dict[str, float | int]] = []
    for option, (low, high) in _module(name).CONDITIONS.items():
        default = defaults[option]
        seen = {default}
        for factor in CONDITION_FACTORS:
            value = float(f"{default * factor:.3g}")
            value = max(value, low) if low is not None else value
            value = min(value, high) if high is not None else value
            value = int(round(value)) if isinstance(default, int) else value
            if value not in seen:
                seen.add(value)
                variations.append({option: value})
    return variations


def _workload_class(name: str) -> type:
    module = _module(name)
    return getattr(module, f"{name.capitalize()}Workload")


def _check_options(name: str, options: Mapping[str, object]) -> None:
    """Raise ValueError, in words a user can act on, where `options` are not options of workload `name` or a
    condition lies outside its valid range (a probability above 1, a negative rate)."""
    known = sorted(set(inspect.signature(_workload_class(name)).parameters) - {"quick"})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"workload {name} has no option {', '.join(unknown)} (its options: {', '.join(known)})")
    for option, (low, high) in _module(name).CONDITIONS.items():
        if option not in options:
            continue
        value = options[option]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"workload {name}: {option} must be a finite number (got {value!r})")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low:g} to {high:g}" if high is not None else f"{low:g} or more"
            raise ValueError(f"workload {name}: {option} must be {bounds} (got {value:g})")


def make_workload(name: str, *, quick: bool = False, **options: object) -> Workload:
    """The reference workload `name` ("hde", "pba" or "acp"); `quick` uses smaller data.

    Options are passed to the workload's constructor (e.g. `link_mbps=50` for HDE); an unknown
    option, or a condition outside its range, is a ValueError that says which options there are.
    """
    _check_options(name, options)
    return _workload_class(name)(quick=quick, **options)


__all__ = [
    "CONDITION_FACTORS",
    "WORKLOAD_NAMES",
    "Workload",
    "make_workload",
    "twin_conditions",
    "workload_interface",
]
