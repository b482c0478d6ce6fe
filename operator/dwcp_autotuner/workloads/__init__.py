"""Reference implementations of the DWCP v3 components that really do the work.

* `hde` — delta compression of successive VM memory snapshots with real zstd;
* `pba` — bandwidth-demand prediction and allocation on a synthetic demand trace;
* `acp` — a discrete-event simulation of PBFT-style consensus over WAN latencies.

`make_workload(name, quick=False, **options)` builds one; every workload has the interface of
`base.Workload`: `name`, `metric_names` (those of the matching built-in tuning space),
`options()` (a JSON-able cache key) and `run(config, seed) -> {metric: value}`.
This package imports nothing else of `dwcp_autotuner`.
"""

from __future__ import annotations

from .base import Workload

WORKLOAD_NAMES = ("hde", "pba", "acp")


def workload_interface(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(parameter names, metric names) of workload `name`, without building its data."""
    if name == "hde":
        from .hde import METRICS, PARAMS
    elif name == "pba":
        from .pba import METRICS, PARAMS
    elif name == "acp":
        from .acp import METRICS, PARAMS
    else:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOAD_NAMES)})")
    return PARAMS, METRICS


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


__all__ = ["WORKLOAD_NAMES", "Workload", "make_workload", "workload_interface"]
