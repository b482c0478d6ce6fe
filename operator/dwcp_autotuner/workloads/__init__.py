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


def make_workload(name: str, *, quick: bool = False, **options: object) -> Workload:
    """The reference workload `name` ("hde", "pba" or "acp"); `quick` uses smaller data.

    Options are passed to the workload's constructor (e.g. `link_mbps=50` for HDE); an unknown
    option is an error.
    """
    if name == "hde":
        from .hde import HdeWorkload

        return HdeWorkload(quick=quick, **options)  # type: ignore[arg-type]
    if name == "pba":
        from .pba import PbaWorkload

        return PbaWorkload(quick=quick, **options)  # type: ignore[arg-type]
    if name == "acp":
        from .acp import AcpWorkload

        return AcpWorkload(quick=quick, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOAD_NAMES)})")


__all__ = ["CONDITION_FACTORS", "WORKLOAD_NAMES", "Workload", "make_workload", "twin_conditions", "workload_interface"]
