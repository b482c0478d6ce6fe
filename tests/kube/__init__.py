"""
Test helpers: an in-memory Kubernetes API emulator (see :mod:`tests.kube.emulator`).

The names are imported lazily, so that ``python -m tests.kube.emulator`` runs cleanly.
"""

from typing import Any

__all__ = [
    "ApiError",
    "EmulatorServer",
    "KubeEmulator",
    "ResourceType",
    "KOPF_PEERING_CRDS",
    "running_emulator",
    "serve_emulator",
    "write_kubeconfig",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import emulator

        return getattr(emulator, name)
    raise AttributeError(name)
