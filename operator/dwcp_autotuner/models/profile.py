"""ParameterProfile: a tunable component — where its configuration lives, its space, how it is measured."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .analysis import GuardLimit
from .base import RESERVED_PREFIX, CamelModel
from .run import Condition
from .space import TuningSpace

TwinName = Literal["hde", "pba", "acp"]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ConfigMapTarget(CamelModel):
    """The ConfigMap that holds the component's configuration (the canary protocol's keys sit beside it)."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Name of the ConfigMap.")
    namespace: str | None = Field(
        None, pattern=DNS_LABEL, max_length=63, description="Namespace; defaults to the profile's."
    )
    key: str = Field(
        "config.json",
        pattern=r"^[-._a-zA-Z0-9]+$",
        max_length=253,
        description=f"Key holding the stable configuration as a JSON object. Keys under `{RESERVED_PREFIX}` belong to "
        "the canary protocol and cannot be used.",
    )

    @field_validator("key")
    @classmethod
    def _not_a_protocol_key(cls, key: str) -> str:
        if key.startswith(RESERVED_PREFIX):
            raise ValueError(f"{key!r} is a canary-protocol key (every key under {RESERVED_PREFIX} is reserved)")
        return key


class ParameterProfileSpec(TuningSpace):
    """The spec of a ParameterProfile custom resource; also accepted by `dwcp-autotuner tune --profile`."""

    target: ConfigMapTarget | None = Field(None, description="The ConfigMap to tune (required by the operator).")
    guards: list[GuardLimit] = Field(
        default_factory=list, description="Metrics that must not get worse during a rollout."
    )
    twin: TwinName | None = Field(
        None, description="Built-in workload whose measured twin pretrains the agent (hde, pba, acp)."
    )

    @model_validator(mode="after")
    def _check_guards(self) -> ParameterProfileSpec:
        known = {m.name for m in self.metrics}
        for i, guard in enumerate(self.guards):
            if guard.metric not in known:
                raise ValueError(
                    f"guards[{i}].metric: unknown metric {guard.metric!r} (known: {', '.join(sorted(known))})"
                )
        return self

    def tuning_space(self) -> TuningSpace:
        return TuningSpace.model_validate(
            self.model_dump(include={"parameters", "metrics", "objective", "constraints"})
        )


class ProfileStatus(CamelModel):
    """The status of a ParameterProfile, written by the operator after it checks the spec and the target."""

    observed_generation: int | None = Field(None, description="The metadata.generation this status describes.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready: the spec is valid and the target ConfigMap holds a configuration inside the bounds. "
        "ModelCompatible (once a model is stored): whether the stored model fits the current parameter space.",
    )
    parameters: int | None = Field(None, ge=0, description="Number of tunable parameters in the spec.")
    twin: str | None = Field(
        None, description="Built-in twin the agent pretrains on for this profile; empty when it has none."
    )
    message: str | None = Field(None, description="Human-readable summary of the last reconciliation.")
