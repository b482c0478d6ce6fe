"""ParameterProfile validation: everything the schema cannot check, as a Ready condition with a reason.

Reasons (Ready=False): InvalidSpec (a rule of the models, e.g. min >= max or an unknown metric),
MissingTarget, TargetNotFound, InvalidStableConfig (the ConfigMap's current values break the
bounds), MissingQuery, InvalidQuery (Prometheus rejects the PromQL), MetricsUnavailable.
Ready=True reason: Valid.

A second condition, ModelCompatible, appears once the profile has a stored model (a run saved one):
True/ModelCompatible, or False with ModelIncompatible (the parameter space changed since) or
ModelUnreadable. It is evaluated even when the profile is not Ready, so a user who edits the
parameters sees at once that the learned model will not be reused.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import NamedTuple

from pydantic import ValidationError

from ..canary.protocol import ConfigRef
from ..models.errors import format_validation_error
from ..models.profile import ParameterProfileSpec, ProfileStatus
from ..ports.base import ConfigStore, MetricsSource, NotFound, Unavailable, render_query
from ..proposers.store import stored_model_state
from ..proposers.twins import twin_mismatch
from .conditions import set_condition


def parse_profile(spec: Mapping) -> ParameterProfileSpec | str:
    """The validated spec, or one line naming the field that is wrong."""
    try:
        profile = ParameterProfileSpec.model_validate(dict(spec))
    except ValidationError as error:
        return format_validation_error(error, "spec")
    if profile.target is None:
        return "spec.target: required (the ConfigMap to tune)"
    return profile


class NotReady(NamedTuple):
    """Why a profile is not Ready: its condition's reason and message."""

    reason: str
    message: str


def validate_profile(
    spec: Mapping,
    namespace: str,
    *,
    configs: ConfigStore,
    metrics: MetricsSource | None,
    generation: int | None,
    now: dt.datetime,
    previous: ProfileStatus | None = None,
    name: str | None = None,
    allowed_target_namespaces: tuple[str, ...] | None = None,
) -> ProfileStatus:
    """The profile's status: Ready with a reason, plus ModelCompatible when `name` is given and a model is stored."""
    status = (previous or ProfileStatus()).model_copy(deep=True)
    status.observed_generation = generation

    def ready(ok: bool, reason: str, message: str) -> ProfileStatus:
        status.conditions = set_condition(
            status.conditions, "Ready", ok, reason, message, now=now, generation=generation
        )
        status.message = message
        return status

    profile = parse_profile(spec)
    if isinstance(profile, str):
        reason = "MissingTarget" if profile.startswith("spec.target") else "InvalidSpec"
        return ready(False, reason, profile)
    status.parameters = len(profile.parameters)
    status.twin = profile.twin
    if name is not None:
        _model_condition(status, profile, name, namespace, configs, now=now, generation=generation)
    mismatch = twin_mismatch(profile)
    if mismatch is not None:
        return ready(False, "TwinMismatch", mismatch)
    assert profile.target is not None
    ref = ConfigRef(profile.target.namespace or namespace, profile.target.name, profile.target.key)
    problem = _target_problem(profile, ref, namespace, configs, allowed_target_namespaces) or _query_problem(
        profile, metrics
    )
    if problem is not None:
        return ready(False, *problem)
    return ready(
        True, "Valid", f"{len(profile.parameters)} parameters, target {ref.namespace}/{ref.name} key {ref.key}."
    )


def _target_problem(
    profile, ref: ConfigRef, namespace: str, configs: ConfigStore, allowed: tuple[str, ...] | None
) -> NotReady | None:
    """Why the profile's target cannot be tuned (reason, message), or None: namespace allowed, ConfigMap there,
    its stable configuration a JSON object within the profile's bounds."""
    elsewhere = ref.namespace
    if elsewhere != namespace and allowed is not None and elsewhere not in allowed:
        return NotReady(
            reason="TargetNamespaceNotAllowed",
            message=f"spec.target.namespace {elsewhere}: the operator may change ConfigMaps only in the profile's own "
            f"namespace and in {', '.join(allowed) or 'none'} (chart values watchNamespaces/targetNamespaces, flag "
            "--allowed-target-namespace).",
        )
    try:
        snapshot = configs.read(ref)
    except NotFound:
        return NotReady(reason="TargetNotFound", message=f"ConfigMap {ref.namespace}/{ref.name} not found.")
    except Unavailable as error:
        return NotReady(reason="KubernetesUnavailable", message=str(error))
    if snapshot.stable is not None:
        try:
            current = json.loads(snapshot.stable)
            if not isinstance(current, dict):
                raise ValueError("not a JSON object")
            profile.coerce_config({k: v for k, v in current.items() if k in profile.parameter_names})
        except (ValueError, json.JSONDecodeError) as error:
            return NotReady(
                reason="InvalidStableConfig", message=f"ConfigMap {ref.namespace}/{ref.name} key {ref.key}: {error}"
            )
    return None


def _query_problem(profile, metrics: MetricsSource | None) -> NotReady | None:
    """Why the profile's queries cannot measure it (reason, message), or None."""
    needed = {t.metric for t in profile.objective} | {g.metric for g in profile.guards}
    for metric in profile.metrics:
        if metric.name in needed and not metric.query:
            return NotReady(
                reason="MissingQuery",
                message=f"spec.metrics: {metric.name} is used by the objective or a guard but has no query.",
            )
    if metrics is None:
        return None
    for metric in profile.metrics:
        if not metric.query:
            continue
        try:
            problem = metrics.validate(render_query(metric.query, "stable", 60))
        except Unavailable as error:
            return NotReady(reason="MetricsUnavailable", message=f"cannot check queries: {error}")
        if problem:
            return NotReady(
                reason="InvalidQuery", message=f"spec.metrics[{metric.name}].query: Prometheus rejects it: {problem}"
            )
    return None


def _model_condition(
    status: ProfileStatus,
    profile: ParameterProfileSpec,
    name: str,
    namespace: str,
    configs: ConfigStore,
    *,
    now: dt.datetime,
    generation: int | None,
) -> None:
    """ModelCompatible from the stored model's manifest; left out while no model is stored (or it cannot be read now)."""
    try:
        state = stored_model_state(configs, namespace, name, profile.space_hash())
    except Unavailable:
        return  # keep what the last check said; Ready reports the API problem
    if state is None:
        status.conditions = [c for c in status.conditions if c.type != "ModelCompatible"]
        return
    fits, reason, message = state
    status.conditions = set_condition(
        status.conditions, "ModelCompatible", fits, reason, message, now=now, generation=generation
    )
