"""Reading a run's target ConfigMap: where a proposal's canary is, the stable configuration it starts from."""

from __future__ import annotations

from ..canary.protocol import ConfigRef, ConfigSnapshot, stable_object
from ..models.profile import ParameterProfileSpec
from ..models.run import TargetRef
from ..ports.base import NotFound, Unavailable
from .context import Ports
from .transitions import Transition


def config_ref(target: TargetRef) -> ConfigRef:
    return ConfigRef(target.namespace, target.name, target.key)


def read_target(ports: Ports, ref: ConfigRef, missing: str, *, fresh: bool = False) -> ConfigSnapshot | Transition:
    """The target ConfigMap, or the Degraded transition that says why it cannot be read now. `fresh`: past the
    ConfigMap cache, what the API has now."""
    try:
        return ports.configs.read_fresh(ref) if fresh else ports.configs.read(ref)
    except NotFound:
        return Transition("TargetNotFound", f"ConfigMap {ref.namespace}/{ref.name} {missing}")
    except Unavailable as error:
        return Transition("KubernetesUnavailable", str(error))


def parse_stable(profile: ParameterProfileSpec, snapshot: ConfigSnapshot) -> dict | str:
    """The tuned parameters of the stable configuration, or why it cannot be used."""
    try:
        data = stable_object(snapshot.stable)
    except ValueError as error:
        return f"ConfigMap {snapshot.ref.namespace}/{snapshot.ref.name} key {snapshot.ref.key!r}: {error}"
    # Keys the profile does not tune are kept by the component (and by a promotion) but are not ours to change.
    tuned = {k: v for k, v in data.items() if k in profile.parameter_names}
    try:
        return profile.coerce_config(tuned)
    except ValueError as error:
        return f"stable configuration: {error}"
