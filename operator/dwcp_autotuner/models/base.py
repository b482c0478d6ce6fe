"""Base model for everything that ends up in a custom resource.

Kubernetes speaks camelCase; Python speaks snake_case. Every model accepts both and dumps
camelCase (`by_alias=True`) so the same class validates a CR spec and a local YAML file.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

#: The API group and version of both custom resources (the CRDs, the operator and the CLI share them).
GROUP = "autotune.dwcp.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
#: Every ConfigMap key (and label) under this prefix belongs to the operator (`canary/protocol.py`).
RESERVED_PREFIX = f"{GROUP}."


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
    )

    def dump(self) -> dict:
        """The JSON-ready, camelCase form used in CRs, ConfigMaps and reports."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
