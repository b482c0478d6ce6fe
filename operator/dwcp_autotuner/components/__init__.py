"""Reference DWCP services (HDE, PBA, ACP) that run the real workloads continuously under the SDK.

`dwcp-autotuner component hde|pba|acp` runs one (cli/component_cmd.py). Each follows its ConfigMap
with `sdk.ConfigFollower`, routes every unit of work to the stable or the canary configuration by the
canary weight, and exports per-variant Prometheus series that the built-in profiles'
(examples/*-profile.yaml) queries read; the queries compute the same metrics the workloads (and so
the operator's twins) compute.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from .service import Component, ServiceLoop, Unit

COMPONENT_NAMES = ("hde", "pba", "acp")


def make_component(
    name: str, registry: CollectorRegistry, *, quick: bool = False, seed: int = 0, **options: Any
) -> Component:
    if name == "hde":
        from .hde import HdeComponent

        return HdeComponent(registry, quick=quick, seed=seed, **options)
    if name == "pba":
        from .pba import PbaComponent

        return PbaComponent(registry, quick=quick, seed=seed, **options)
    if name == "acp":
        from .acp import AcpComponent

        return AcpComponent(registry, quick=quick, seed=seed, **options)
    raise ValueError(f"unknown component {name!r} (known: {', '.join(COMPONENT_NAMES)})")


__all__ = ["COMPONENT_NAMES", "Component", "ServiceLoop", "Unit", "make_component"]
