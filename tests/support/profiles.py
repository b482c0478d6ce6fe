"""Profiles the tests build from the built-in spaces."""

from __future__ import annotations

from typing import Any

from dwcp_autotuner.models.builtin import BUILTIN_SPACES


def tiny_twin_spec(twin: str, target: str, metric_prefix: str = "") -> dict[str, Any]:
    """A ParameterProfile spec on the built-in space of `twin`, each parameter narrowed to its default and
    one grid step either side (27 configurations: a twin measured and trained on in seconds).

    Queries read `<metric_prefix><twin>_<metric>{variant="{{variant}}"}`, averaged over instances.
    """
    space = BUILTIN_SPACES[twin]
    parameters = []
    for p in space.parameters:
        grid, i = p.grid(), p.index_of(p.default)
        parameters.append({**p.dump(), "min": grid[max(i - 1, 0)], "max": grid[min(i + 1, len(grid) - 1)]})
    return {
        "target": {"name": target},
        "twin": twin,
        "parameters": parameters,
        "metrics": [
            {**m.dump(), "query": f'avg({metric_prefix}{twin}_{m.name}{{variant="{{{{variant}}}}"}})'}
            for m in space.metrics
        ],
        "objective": [t.dump() for t in space.objective],
        "constraints": [c.dump() for c in space.constraints],
    }
