#!/usr/bin/env python3
"""Check the import structure of operator/dwcp_autotuner: layers point down, and no module imports itself round.

    python scripts/check_layers.py          # exit 1 and one line per problem; CI and tests/test_layers.py run it

Every import counts, including those inside functions and under TYPE_CHECKING (a cycle hidden in a
function is still a cycle). The layers, top to bottom (docs/architecture.md says what each holds):

    cli, handlers            may import everything below
    components               sdk, canary, models, workloads, ports
    controller               proposers, rollout, canary, ports, models
    tuning                   proposers, env, agent, rollout, workloads, models
    proposers                env, agent, rollout, canary, ports, workloads, models
    sdk                      canary, models
    env                      workloads, models
    agent, rollout           models
    ports                    canary, models
    canary                   models
    models, workloads        nothing of ours
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "operator" / "dwcp_autotuner"
PACKAGE = "dwcp_autotuner"

ALLOWED: dict[str, set[str]] = {
    "models": set(),
    "workloads": set(),
    "canary": {"models"},
    "agent": {"models"},
    "rollout": {"models"},
    "ports": {"canary", "models"},
    "env": {"workloads", "models"},
    "sdk": {"canary", "models"},
    "proposers": {"env", "agent", "rollout", "canary", "ports", "workloads", "models"},
    "tuning": {"proposers", "env", "agent", "rollout", "workloads", "models"},
    "controller": {"proposers", "rollout", "canary", "ports", "models"},
    "components": {"sdk", "canary", "models", "workloads", "ports"},
    "handlers": {
        "controller",
        "proposers",
        "tuning",
        "env",
        "agent",
        "rollout",
        "canary",
        "ports",
        "workloads",
        "models",
        "sdk",
    },
}
ALLOWED["cli"] = set(ALLOWED) | {"components"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The modules of ours that `path` imports (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
            else:
                base = []
            stem = ".".join(base + ([node.module] if node.module else []))
            targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target != PACKAGE:
                found.add(target)
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def problems(root: Path = ROOT) -> list[str]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    graph = {name: imports_of(path, name, modules) for name, path in files.items()}
    # A package's __init__ re-exporting its own modules is not a cycle of the design: leave those edges out.
    for name in graph:
        if files[name].name == "__init__.py":
            graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    found = []
    for name, targets in sorted(graph.items()):
        source = layer(name)
        if source is None:
            continue
        if source not in ALLOWED:
            found.append(f"{name}: package {source!r} has no place in the layer table (scripts/check_layers.py)")
            continue
        for target in sorted(targets):
            dest = layer(target)
            if dest is not None and dest != source and dest not in ALLOWED[source]:
                found.append(f"{name} imports {target}: {source} may not import {dest}")
    for component in cycles(graph):
        found.append("import cycle: " + " <-> ".join(component))
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    if not found:
        print(f"layers ok: {sum(1 for _ in ROOT.rglob('*.py'))} modules, no cycle, every import points down")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
