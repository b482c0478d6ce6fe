"""ConfigFollower: a component's view of its ConfigMap under the canary protocol.

A follower reads the target ConfigMap's data (through the Kubernetes API or a mounted folder, see
`sources.py`), validates it against the profile's `TuningSpace`, and keeps an immutable
`VariantState` (stable config, canary config, canary weight, revision) that any thread may read
without locking. Work is split with `route(unit_key)` / `assign(unit_key)`; changes apply at once,
without a restart.

Validation, per key (docs/concepts.md, "The canary protocol"):

* `<key>` (stable, e.g. `config.json`): a JSON object whose keys are the space's parameters (missing
  ones take the parameter's default) and whose values are inside the hard bounds. Anything else is
  REFUSED: a WARNING log line, `dwcp_sdk_config_refusals_total{key,reason}` + 1, and the last good
  stable configuration keeps running (before any good one: the space's defaults, or `initial`).
* `autotune.dwcp.io.canary`: validated the same way; when refused, every unit runs with the stable
  configuration (the canary then shows no data and the operator's analysis rolls it back).
* `autotune.dwcp.io.canary-weight`: an integer 0–100; missing → 0; anything else is refused and
  counts as 0. Without a (valid) canary the weight is 0.

Refusal reasons: `parse` (not JSON, or not a JSON object), `unknown_key`, `invalid_value` (not a
number, not a whole number for an int parameter, not finite), `out_of_bounds` (outside [min, max] or
not one of the choices), `missing` (the ConfigMap has no stable key). The same refused text is
counted and logged once, however often the ConfigMap is re-read.

Metrics (prometheus-client, in the registry given; one `SdkMetrics` may be shared by followers):
`dwcp_sdk_config_refusals_total{key,reason}`, `dwcp_sdk_config_updates_total{key}` (accepted
changes), `dwcp_sdk_canary_weight` (the weight in effect), `dwcp_sdk_parameter_value{variant,parameter}`
(numeric parameters in effect; the canary's series disappear with the canary) and
`dwcp_sdk_units_total{variant}` (units handed out by `assign`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from ..canary.protocol import (
    CANARY_KEY,
    CANARY_REVISION_KEY,
    CANARY_WEIGHT_KEY,
    WeightRefused,
    canonical_json,
    stable_object,
)
from ..canary.protocol import parse_weight as protocol_weight
from ..models.space import ParamValue, TuningSpace, ValueRefused
from .routing import Variant, route

log = logging.getLogger("dwcp_autotuner.sdk")

Config = Mapping[str, Any]


class ConfigRefused(ValueError):
    """A configuration value the follower will not run with; `reason` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_config(space: TuningSpace, text: str, *, allow_extra_keys: bool = False) -> dict[str, Any]:
    """Parse and validate one configuration (a JSON object) against the space's hard bounds.

    Missing parameters take their defaults. Raises `ConfigRefused`. With `allow_extra_keys`, keys that
    are not parameters are passed through untouched (a service may keep untuned settings beside them).
    """
    try:
        raw = stable_object(text)
    except (ValueError, TypeError) as error:
        raise ConfigRefused("parse", str(error)) from None
    names = space.parameter_names
    unknown = sorted(set(raw) - set(names))
    if unknown and not allow_extra_keys:
        raise ConfigRefused("unknown_key", f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(names)})")
    config: dict[str, Any] = {}
    for p in space.parameters:
        try:
            config[p.name] = p.coerce(raw[p.name]) if p.name in raw else p.default
        except ValueRefused as refusal:
            raise ConfigRefused(refusal.reason, refusal.message) from None
    if allow_extra_keys:
        for name in unknown:
            config[name] = raw[name]
    return config


def parse_weight(text: str) -> int:
    """The canary weight (`canary/protocol.py`'s rule); raises `ConfigRefused`."""
    try:
        return protocol_weight(text)
    except WeightRefused as refusal:
        raise ConfigRefused(refusal.reason, str(refusal)) from None


def _canonical(config: Config | None) -> str | None:
    return None if config is None else canonical_json(config)


@dataclass(frozen=True)
class VariantState:
    """What the component runs with right now. Immutable: read it once per unit of work."""

    stable: Config
    canary: Config | None = None
    weight: int = 0  # in effect: 0 whenever there is no (valid) canary
    revision: str = ""
    version: int = 0  # bumped on every accepted change
    origin: str = ""  # where the data came from (resourceVersion, file signature)

    def route(self, unit_key: str) -> Variant:
        return route(unit_key, self.weight, self.revision) if self.canary is not None else "stable"

    def config(self, variant: Variant) -> Config:
        return self.canary if variant == "canary" and self.canary is not None else self.stable

    def assign(self, unit_key: str) -> tuple[Variant, Config]:
        variant = self.route(unit_key)
        return variant, self.config(variant)


class SdkMetrics:
    """The follower's own series; share one instance between followers that share a registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry = registry
        self.refusals = Counter(
            "dwcp_sdk_config_refusals",
            "Configuration values refused (the last good configuration kept running)",
            ["key", "reason"],
            registry=registry,
        )
        self.updates = Counter(
            "dwcp_sdk_config_updates", "Configuration values accepted and applied", ["key"], registry=registry
        )
        self.weight = Gauge("dwcp_sdk_canary_weight", "Canary weight in effect (percent of units)", registry=registry)
        self.parameters = Gauge(
            "dwcp_sdk_parameter_value",
            "Numeric parameter values in effect",
            ["variant", "parameter"],
            registry=registry,
        )
        self.units = Counter("dwcp_sdk_units", "Units of work assigned to each variant", ["variant"], registry=registry)
        self.units_by_variant = {v: self.units.labels(v) for v in ("stable", "canary")}


class Source(Protocol):
    """Where ConfigMap data comes from (see sources.py). `run` blocks until `stop` is set."""

    def describe(self) -> str: ...

    def run(self, sink: DataSink, stop: threading.Event) -> None: ...


class DataSink(Protocol):
    def apply(self, data: Mapping[str, str], origin: str = "") -> VariantState: ...

    def unavailable(self, message: str) -> None: ...


_MISSING = "\x00missing"  # what `_Raw.refused` holds after a refusal for a missing key


@dataclass
class _Raw:
    accepted: str | None = None
    refused: str | None = None


@dataclass
class _Tracker:
    raw: dict[str, _Raw] = field(default_factory=dict)

    def get(self, key: str) -> _Raw:
        return self.raw.setdefault(key, _Raw())


class ConfigFollower:
    """Follows one ConfigMap (via a `Source`) and validates it against `space`.

    Typical use::

        follower = ConfigFollower(space, KubernetesSource("dwcp", "hde-config"), name="hde").start()
        follower.wait_ready(10)
        for key in work:
            variant, config = follower.assign(key)     # one consistent read per unit
            ...do the unit with `config`, label its metrics with `variant`...
    """

    def __init__(
        self,
        space: TuningSpace,
        source: Source | None = None,
        *,
        key: str = "config.json",
        name: str = "",
        metrics: SdkMetrics | None = None,
        registry: CollectorRegistry | None = None,
        initial: Config | None = None,
        allow_extra_keys: bool = False,
    ) -> None:
        self.space = space
        self.source = source
        self.key = key
        self.name = name or key
        self.allow_extra_keys = allow_extra_keys
        self.metrics = metrics if metrics is not None else SdkMetrics(registry)
        start = dict(initial) if initial is not None else space.default_config()
        self._state = VariantState(stable=MappingProxyType(start))
        self._lock = threading.Lock()
        self._tracker = _Tracker()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._callbacks: list[Callable[[VariantState, VariantState], None]] = []
        self._unavailable: str | None = None
        self._publish_parameters(self._state, None)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> ConfigFollower:
        if self.source is None:
            raise ValueError("no source to follow (call apply() directly, or pass a source)")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"config-follower-{self.name}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        assert self.source is not None
        log.info("%s: following %s", self.name, self.source.describe())
        try:
            self.source.run(self, self._stop)
        except Exception:
            log.exception("%s: the configuration source stopped", self.name)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ConfigFollower:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once a valid stable configuration has been read."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def on_change(self, callback: Callable[[VariantState, VariantState], None]) -> None:
        """`callback(old, new)` after every accepted change, in the source's thread."""
        self._callbacks.append(callback)

    # --- reading -------------------------------------------------------------------------------
    def snapshot(self) -> VariantState:
        return self._state  # an immutable object, replaced atomically

    def route(self, unit_key: str) -> Variant:
        return self._state.route(unit_key)

    def assign(self, unit_key: str) -> tuple[Variant, Config]:
        """The unit's variant and the configuration to run it with (from one snapshot); counted."""
        state = self._state
        variant = state.route(unit_key)
        self.metrics.units_by_variant[variant].inc()
        return variant, state.config(variant)

    # --- writing (called by sources, or directly) ------------------------------------------------
    def unavailable(self, message: str) -> None:
        """The source cannot read the ConfigMap now; logged once per distinct message."""
        if message != self._unavailable:
            self._unavailable = message
            log.warning(
                "%s: %s; keeping the last good configuration %s", self.name, message, _canonical(self._state.stable)
            )

    def apply(self, data: Mapping[str, str], origin: str = "") -> VariantState:
        """Validate one read of the ConfigMap's data and switch to it (what is valid of it)."""
        with self._lock:
            self._unavailable = None
            old = self._state
            was_ready = self._ready.is_set()
            stable = self._stable(data, old)
            if not was_ready and self._ready.is_set():
                log.info("%s: stable configuration %s (from %s)", self.name, _canonical(stable), origin or "the source")
            canary = self._canary(data, old)
            weight = self._weight(data) if canary is not None else 0
            revision = (data.get(CANARY_REVISION_KEY) or "") if canary is not None else ""
            changed = (
                _canonical(stable) != _canonical(old.stable)
                or _canonical(canary) != _canonical(old.canary)
                or weight != old.weight
                or revision != old.revision
            )
            if not changed:
                return old
            same_stable = _canonical(stable) == _canonical(old.stable)
            same_canary = _canonical(canary) == _canonical(old.canary)
            new = VariantState(  # unchanged configurations keep their object: `config is last_config` holds
                stable=old.stable if same_stable else MappingProxyType(dict(stable)),
                canary=old.canary if same_canary else None if canary is None else MappingProxyType(dict(canary)),
                weight=weight,
                revision=revision,
                version=old.version + 1,
                origin=origin,
            )
            self._state = new
            self._publish_parameters(new, old)
            self._log_change(old, new, stable_logged=not was_ready)
        for callback in list(self._callbacks):
            try:
                callback(old, new)
            except Exception:
                log.exception("%s: a configuration-change callback failed", self.name)
        return new

    def _stable(self, data: Mapping[str, str], old: VariantState) -> Config:
        raw = data.get(self.key)
        if raw is None:
            self._refuse(self.key, _MISSING, ConfigRefused("missing", f"the ConfigMap has no key {self.key!r}"))
            return old.stable
        tracked = self._tracker.get(self.key)
        if raw == tracked.accepted and self._ready.is_set():
            tracked.refused = None
            return old.stable
        try:
            config = parse_config(self.space, raw, allow_extra_keys=self.allow_extra_keys)
        except ConfigRefused as refusal:
            self._refuse(self.key, raw, refusal)
            return old.stable
        tracked.accepted, tracked.refused = raw, None
        self._ready.set()
        if _canonical(config) != _canonical(old.stable) or old.version == 0:
            self.metrics.updates.labels(self.key).inc()
        return config

    def _canary(self, data: Mapping[str, str], old: VariantState) -> Config | None:
        raw = data.get(CANARY_KEY)
        tracked = self._tracker.get(CANARY_KEY)
        if raw is None:
            tracked.accepted = tracked.refused = None
            return None
        if raw == tracked.accepted and old.canary is not None:
            return old.canary
        try:
            config = parse_config(self.space, raw, allow_extra_keys=self.allow_extra_keys)
        except ConfigRefused as refusal:
            self._refuse(CANARY_KEY, raw, refusal, fallback="every unit runs with the stable configuration")
            tracked.accepted = None
            return None
        tracked.accepted, tracked.refused = raw, None
        self.metrics.updates.labels(CANARY_KEY).inc()
        return config

    def _weight(self, data: Mapping[str, str]) -> int:
        raw = data.get(CANARY_WEIGHT_KEY)
        if raw is None:
            return 0
        try:
            weight = parse_weight(raw)
        except ConfigRefused as refusal:
            self._refuse(CANARY_WEIGHT_KEY, raw, refusal, fallback="the canary weight counts as 0")
            return 0
        tracked = self._tracker.get(CANARY_WEIGHT_KEY)
        if tracked.accepted != raw:
            tracked.accepted, tracked.refused = raw, None
            self.metrics.updates.labels(CANARY_WEIGHT_KEY).inc()
        return weight

    def _refuse(self, key: str, raw: str, refusal: ConfigRefused, fallback: str = "") -> None:
        tracked = self._tracker.get(key)
        if tracked.refused == raw:
            return  # this very value was already counted and logged
        tracked.refused = raw
        self.metrics.refusals.labels(key, refusal.reason).inc()
        keeping = fallback or f"keeping the last good configuration {_canonical(self._state.stable)}"
        log.warning("%s: refused %s (%s): %s; %s", self.name, key, refusal.reason, refusal.message, keeping)

    # --- metrics and logs ------------------------------------------------------------------------
    def _publish_parameters(self, new: VariantState, old: VariantState | None) -> None:
        self.metrics.weight.set(new.weight)
        for variant, config in (("stable", new.stable), ("canary", new.canary)):
            for p in self.space.parameters:
                if config is None:
                    if old is not None and old.canary is not None:
                        try:
                            self.metrics.parameters.remove(variant, p.name)
                        except KeyError:
                            pass
                    continue
                value = _numeric(config.get(p.name))
                if value is not None:
                    self.metrics.parameters.labels(variant, p.name).set(value)

    def _log_change(self, old: VariantState, new: VariantState, *, stable_logged: bool) -> None:
        if _canonical(old.stable) != _canonical(new.stable) and not stable_logged:
            log.info("%s: stable configuration %s (was %s)", self.name, _canonical(new.stable), _canonical(old.stable))
        if new.canary is None and old.canary is not None:
            log.info(
                "%s: canary %s removed; every unit runs with the stable configuration",
                self.name,
                old.revision or "(no revision)",
            )
        elif new.canary is not None and (
            _canonical(new.canary) != _canonical(old.canary) or new.revision != old.revision
        ):
            log.info(
                "%s: canary %s at %d %%: %s",
                self.name,
                new.revision or "(no revision)",
                new.weight,
                _canonical(new.canary),
            )
        elif new.canary is not None and new.weight != old.weight:
            log.info(
                "%s: canary %s weight %d %% (was %d %%)",
                self.name,
                new.revision or "(no revision)",
                new.weight,
                old.weight,
            )


def _numeric(value: ParamValue | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
