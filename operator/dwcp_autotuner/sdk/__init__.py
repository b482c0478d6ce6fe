"""The component SDK: follow a ConfigMap under the canary protocol and split work between two variants.

For any service tuned by the operator, not only the reference components. The service describes its
parameters with a `TuningSpace` (e.g. a ParameterProfile's spec: `space_from_profile(path)`), follows
its ConfigMap through the API or a mounted folder, and asks, for every unit of work, which variant
runs it and with which configuration::

    from dwcp_autotuner.sdk import ConfigFollower, KubernetesSource, space_from_profile

    space = space_from_profile("examples/generic/profile.yaml")
    follower = ConfigFollower(space, KubernetesSource("web", "web-config"), name="web").start()
    follower.wait_ready(10)
    variant, config = follower.assign(request_id)   # "stable" | "canary", and that variant's config
    # … serve the request with `config`; label its metrics variant=<variant> …

Configuration changes apply at once (no restart); an invalid value is refused (a log line and
`dwcp_sdk_config_refusals_total{key,reason}`) and the last good configuration keeps running. The
routing rule is in `routing.py` (SHA-256 of "<revision>/<unit key>", bucket mod 100 < weight).
This package imports the models for validation and nothing from the controller or the handlers.
"""

from __future__ import annotations

from pathlib import Path

from ..models.space import TuningSpace
from .follower import ConfigFollower, ConfigRefused, SdkMetrics, VariantState, parse_config, parse_weight
from .metrics import VariantCounter, VariantCounters, VariantGauge, VariantHistogram, geometric_buckets
from .routing import Variant, bucket, route
from .sources import DirectorySource, KubernetesSource, StaticSource, api_client


def space_from_profile(path: str | Path) -> TuningSpace:
    """The TuningSpace of a ParameterProfile YAML file (its `spec`), or of a bare spec."""
    import yaml

    from ..models.profile import ParameterProfileSpec

    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    spec = doc.get("spec", doc) if isinstance(doc, dict) else doc
    return ParameterProfileSpec.model_validate(spec).tuning_space()


__all__ = [
    "ConfigFollower",
    "ConfigRefused",
    "DirectorySource",
    "KubernetesSource",
    "SdkMetrics",
    "StaticSource",
    "Variant",
    "VariantCounter",
    "VariantCounters",
    "VariantGauge",
    "VariantHistogram",
    "VariantState",
    "api_client",
    "bucket",
    "geometric_buckets",
    "parse_config",
    "parse_weight",
    "route",
    "space_from_profile",
]
