"""The operator's runtime: Kubernetes and Prometheus adapters wired to the plain controller code.

Kopf handlers (handlers/kopf_handlers.py) only call the methods here; everything here is callable
without Kopf, which keeps it testable and keeps the handlers thin.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from ..canary.protocol import target_ref, withdraw
from ..controller.context import Ports, RunContext
from ..controller.profiles import parse_profile, validate_profile
from ..controller.run import RunRef, reconcile, reconcile_invalid, settled
from ..controller.target import config_ref
from ..models.base import API_VERSION, GROUP, VERSION
from ..models.errors import format_validation_error
from ..models.profile import ParameterProfileSpec, ProfileStatus
from ..models.run import TERMINAL_PHASES, OptimizationRunSpec, RunStatus, TargetRef, resolve_sampling
from ..ports.base import ConfigStore, EventSink, NotFound, OwnerRef, Unavailable
from ..ports.kubernetes import KubernetesConfigStore, KubernetesEvents
from ..ports.prometheus import PrometheusMetrics
from ..proposers.base import Proposer
from ..proposers.learned import LearnedTwinProposer
from ..proposers.pool import AgentPool
from ..proposers.store import ModelStore
from ..proposers.twins import measure_profile_twin

log = logging.getLogger(__name__)

__all__ = ["API_VERSION", "GROUP", "PROFILES", "RUNS", "VERSION", "OperatorConfig", "OperatorRuntime"]
PROFILES = "parameterprofiles"
RUNS = "optimizationruns"


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty: every namespace
    peering: str | None = None  # None: standalone (one replica, no peering objects)
    tick_seconds: float = 5.0
    profile_recheck_seconds: float = 30.0
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    # Floor of the default sample spacing: twice kube-prometheus-stack's 30 s scrape interval.
    min_sample_seconds: float = 60.0
    metrics_port: int = 9090  # the operator's own /metrics; 0 disables
    liveness: str | None = "http://0.0.0.0:8080/healthz"
    cache_dir: Path | None = None
    quick_twins: bool = True
    kubeconfig: str | None = None
    # Namespaces a profile's target may be in besides the profile's own; None: any (RBAC decides).
    allowed_target_namespaces: tuple[str, ...] | None = None


class OperatorMetrics:
    """The operator's own Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.proposals = Counter(
            "dwcp_autotuner_proposals",
            "Proposals rolled out (canary started)",
            ["namespace", "run", "profile"],
            registry=self.registry,
        )
        self.promotions = Counter(
            "dwcp_autotuner_promotions", "Canaries promoted to stable", ["namespace", "run"], registry=self.registry
        )
        self.rollbacks = Counter(
            "dwcp_autotuner_rollbacks", "Canaries rolled back", ["namespace", "run"], registry=self.registry
        )
        self.canary_weight = Gauge(
            "dwcp_autotuner_canary_weight_percent",
            "Current canary weight",
            ["namespace", "run", "profile"],
            registry=self.registry,
        )
        self.improvement = Gauge(
            "dwcp_autotuner_improvement_percent",
            "Objective improvement from promotions",
            ["namespace", "run"],
            registry=self.registry,
        )
        self.reconcile_latency = Histogram(
            "dwcp_autotuner_reconcile_seconds",
            "Time of one reconcile of a run or profile",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )


class CountingEvents:
    """An EventSink that also counts proposals, promotions and rollbacks for /metrics."""

    def __init__(
        self,
        inner: EventSink,
        metrics: OperatorMetrics,
        namespace: str,
        run: str,
        profile_of: callable,
        counted: set[str] | None = None,
    ) -> None:
        self.inner, self.metrics, self.namespace, self.run, self.profile_of = inner, metrics, namespace, run, profile_of
        # Keyed actions this process counted already (the Event's own key stops a repeat across restarts).
        self._counted = counted if counted is not None else set()

    def emit(self, kind, reason, message, key=None) -> bool:
        new = self.inner.emit(kind, reason, message, key=key)
        if key is not None:
            if not new or key in self._counted:
                return new  # this action was counted (and reported) before: a retried transition
            self._counted.add(key)
        if reason == "CanaryStarted":
            self.metrics.proposals.labels(self.namespace, self.run, self.profile_of()).inc()
        elif reason == "Promoted":
            self.metrics.promotions.labels(self.namespace, self.run).inc()
        elif reason == "RolledBack":
            self.metrics.rollbacks.labels(self.namespace, self.run).inc()
        return new


def make_api_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (explicit path, not the import-time default)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            config_file=kubeconfig or os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return kubernetes.client.ApiClient(configuration)


class OperatorRuntime:
    def __init__(
        self,
        config: OperatorConfig,
        api_client: kubernetes.client.ApiClient | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.config = config
        self.api_client = api_client or make_api_client(config.kubeconfig)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.configs: ConfigStore = KubernetesConfigStore(self.core)
        self.metrics = metrics or OperatorMetrics()
        self._pools: dict[str, Proposer] = {}
        self._profile_uids: dict[
            tuple[str, str], str
        ] = {}  # (namespace, name) -> uid: stored models are owned by their profile
        self._prometheus: dict[str, PrometheusMetrics] = {}
        self._counted_actions: dict[str, set[str]] = {}  # run uid -> keyed actions counted in /metrics
        self._lock = threading.Lock()

    # --- shared helpers -------------------------------------------------------------------------------
    def connection_info(self, *, trust_env: bool = False):
        """Kopf's credentials, taken from the runtime's own client configuration.

        Kopf's stock login handlers re-read $KUBECONFIG / ~/.kube/config and would ignore
        `--kubeconfig`; this way Kopf and the runtime always talk to the same cluster as the same user.
        """
        import kopf

        c = self.api_client.configuration
        header = c.get_api_key_with_prefix("BearerToken") or c.get_api_key_with_prefix("authorization")
        parts = header.split(" ", 1) if header else []
        scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        return kopf.ConnectionInfo(
            server=c.host,
            ca_path=c.ssl_ca_cert,
            insecure=not c.verify_ssl,
            username=c.username or None,
            password=c.password or None,
            scheme=scheme,
            token=token,
            certificate_path=c.cert_file,
            private_key_path=c.key_file,
            trust_env=trust_env,
        )

    def prometheus(self, url: str | None) -> PrometheusMetrics:
        url = url or self.config.prometheus_url
        with self._lock:
            if url not in self._prometheus:
                self._prometheus[url] = PrometheusMetrics(url)
            return self._prometheus[url]

    def pool(self, uid: str, spec: OptimizationRunSpec, namespace: str = "default", run: str | None = None) -> Proposer:
        """The run's proposer (one per run, kept across ticks): the strategy `spec.agent.strategy` names."""
        with self._lock:
            if uid not in self._pools:
                models = ModelStore(
                    self.configs, namespace, owner_of=lambda profile: self._profile_owner(namespace, profile), run=run
                )
                if spec.agent.strategy == "DQN":
                    self._pools[uid] = AgentPool(
                        spec.agent, cache_dir=self.config.cache_dir, quick_twins=self.config.quick_twins, models=models
                    )
                else:
                    seed, cache, quick = spec.agent.seed, self.config.cache_dir, self.config.quick_twins

                    def twin_source(name, profile):
                        return measure_profile_twin(profile, seed=seed, cache_dir=cache, quick=quick)

                    self._pools[uid] = LearnedTwinProposer(
                        spec.agent, exploration=spec.exploration, twin_source=twin_source, models=models
                    )
            return self._pools[uid]

    def _profile_owner(self, namespace: str, profile: str) -> OwnerRef | None:
        uid = self._profile_uids.get((namespace, profile))
        return None if uid is None else OwnerRef(API_VERSION, "ParameterProfile", profile, uid)

    def forget(self, uid: str) -> None:
        with self._lock:
            pool = self._pools.pop(uid, None)
            self._counted_actions.pop(uid, None)
        if pool is not None:
            pool.close()  # a deleted run's pretraining must not keep a core busy

    def patch_status(self, plural: str, namespace: str, name: str, status: Mapping) -> None:
        """A merge patch of the status subresource; nulls delete fields that are gone."""
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )

    # --- profiles ---------------------------------------------------------------------------------------
    def reconcile_profile(self, body: Mapping) -> dict:
        started = time.perf_counter()
        meta, spec = body.get("metadata", {}), body.get("spec") or {}
        previous = _parse_status(ProfileStatus, body.get("status"))
        parsed = parse_profile(spec)
        url = self.config.prometheus_url
        metrics = None if isinstance(parsed, str) else self.prometheus(url)
        status = validate_profile(
            spec,
            meta.get("namespace", "default"),
            configs=self.configs,
            metrics=metrics,
            generation=meta.get("generation"),
            now=_now(),
            previous=previous,
            name=meta.get("name"),
            allowed_target_namespaces=self.config.allowed_target_namespaces,
        )
        self.metrics.reconcile_latency.labels("profile").observe(time.perf_counter() - started)
        return status.model_dump(mode="json", by_alias=True)

    def load_profiles(
        self, namespace: str, names: list[str], *, require_ready: bool = False
    ) -> dict[str, ParameterProfileSpec | str]:
        """Each profile's spec, or why it cannot be used.

        With `require_ready` (before a new proposal) a profile must also have been validated by the
        operator (status Ready=True for its current generation): a profile whose PromQL Prometheus
        rejects, whose ConfigMap is missing or out of bounds, or that was not checked yet, is not
        used. During a rollout only a spec that no longer parses stops the run (a profile that is
        merely not Ready because, say, Prometheus is down is handled by the canary analysis).
        """
        profiles: dict[str, ParameterProfileSpec | str] = {}
        for name in names:
            try:
                obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PROFILES, name)
            except ApiException as error:
                profiles[name] = (
                    f"ParameterProfile {namespace}/{name} not found"
                    if error.status == 404
                    else f"cannot read it ({error.status} {error.reason})"
                )
                continue
            except Exception as error:
                profiles[name] = f"cannot read it ({error})"
                continue
            if (obj.get("metadata") or {}).get("uid"):
                self._profile_uids[(namespace, name)] = obj["metadata"]["uid"]
            profile = parse_profile(obj.get("spec") or {})
            if require_ready and not isinstance(profile, str):
                problem = _not_ready(obj)
                if problem:
                    profile = problem
            profiles[name] = profile
        return profiles

    # --- runs ---------------------------------------------------------------------------------------------
    def reconcile_run(self, body: Mapping) -> RunStatus | None:
        started = time.perf_counter()
        meta = body.get("metadata", {})
        namespace, name = meta.get("namespace", "default"), meta["name"]
        # The body a Kopf timer gets is the last one its watch delivered, which may predate the
        # status this process patched a moment ago. Reconciling from an older status would redo a
        # transition (a second promotion, a second event), so the status is always read afresh.
        try:
            body = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, name)
        except ApiException as error:
            if error.status == 404:
                return None  # deleted meanwhile
            raise
        meta = body.get("metadata", {})
        uid, generation = meta.get("uid", ""), meta.get("generation")
        status = _parse_status(RunStatus, body.get("status")) or RunStatus()
        raw_spec = body.get("spec") or {}
        if settled(status, generation, bool((raw_spec.get("continuous") or {}).get("enabled"))):
            return status  # finished; nothing to do until the spec changes (a continuous run keeps watching)
        latest = {"status": status}

        def persist(new: RunStatus) -> None:
            self.patch_status(RUNS, namespace, name, new.model_dump(mode="json", by_alias=True))
            latest["status"] = new

        events = KubernetesEvents(
            self.core,
            {"apiVersion": API_VERSION, "kind": "OptimizationRun", "name": name, "namespace": namespace, "uid": uid},
            component="dwcp-autotuner",
        )
        # The controller persists a proposal (write-ahead) before it starts its canary, so the
        # latest persisted status names the profile of a CanaryStarted event.
        counting = CountingEvents(
            events,
            self.metrics,
            namespace,
            name,
            lambda: latest["status"].current.profile if latest["status"].current else "",
            counted=self._counted_actions.setdefault(uid, set()),
        )

        try:
            spec = OptimizationRunSpec.model_validate(raw_spec)
            spec, problem = resolve_sampling(spec, self.config.min_sample_seconds)
        except ValidationError as error:
            problem = format_validation_error(error, "spec")
        if problem is not None:
            # (an API failure while withdrawing a canary raises: Kopf retries the tick)
            new_status = reconcile_invalid(
                RunRef(name, namespace, uid, generation, _now()),
                self.configs,
                counting,
                self._with_target(namespace, status),
                problem,
            )
            if new_status != status:
                persist(new_status)
            return new_status
        profiles = self.load_profiles(namespace, spec.profiles, require_ready=status.current is None)
        owner = OwnerRef(API_VERSION, "OptimizationRun", name, uid)
        ports = Ports(
            configs=self.configs,
            metrics=self.prometheus(spec.prometheus_url),
            events=counting,
            proposer=self.pool(uid, spec, namespace, name),
            persist=persist,
            clock=_now,
        )
        ctx = RunContext(name, namespace, uid, generation, spec, status, profiles, _now(), owner=owner)
        try:
            new_status = reconcile(ctx, ports)
        except Unavailable as error:
            # The API server or Prometheus failed mid-transition. Whatever was about to change is
            # recorded as the pending action; the next tick re-reads and finishes it.
            log.warning("run %s/%s: %s; retrying on the next tick", namespace, name, error)
            return latest["status"]
        if new_status != status:
            persist(new_status)
        if new_status.phase in TERMINAL_PHASES and not spec.continuous.enabled:
            self.forget(uid)  # a finished run proposes nothing more: free its agents
        self._export(namespace, name, new_status)
        self.metrics.reconcile_latency.labels("run").observe(time.perf_counter() - started)
        return new_status

    def _export(self, namespace: str, name: str, status: RunStatus) -> None:
        if status.current is not None:
            self.metrics.canary_weight.labels(namespace, name, status.current.profile).set(status.current.canary_weight)
        if status.improvement_pct is not None:
            self.metrics.improvement.labels(namespace, name).set(status.improvement_pct)

    def cleanup_run(self, body: Mapping) -> None:
        """A run deleted mid-rollout takes its canary keys with it; the stable bytes are never touched."""
        meta = body.get("metadata", {})
        self.forget(meta.get("uid", ""))
        status = _parse_status(RunStatus, body.get("status"))
        namespace = meta.get("namespace", "default")
        status = None if status is None else self._with_target(namespace, status)
        if status is None or status.current is None or status.current.target is None or status.current.revision is None:
            return
        try:
            withdraw(self.configs, config_ref(status.current.target), status.current.revision)
        except (NotFound, Unavailable) as error:
            log.warning("run %s/%s: could not withdraw its canary: %s", namespace, meta.get("name", ""), error)

    def _with_target(self, namespace: str, status: RunStatus) -> RunStatus:
        """The status with `current.target` filled in from the profile where an older operator did not record it."""
        current = status.current
        if current is None or current.target is not None:
            return status
        profile = self.load_profiles(namespace, [current.profile]).get(current.profile)
        if not isinstance(profile, ParameterProfileSpec) or profile.target is None:
            return status
        ref = target_ref(profile.target, namespace)
        status = status.model_copy(deep=True)
        status.current.target = TargetRef(namespace=ref.namespace, name=ref.name, key=ref.key)
        return status


def _not_ready(obj: Mapping) -> str | None:
    """Why a ParameterProfile object is not Ready (for its current generation), or None when it is."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or (generation is not None and status.get("observedGeneration") not in (None, generation)):
        return "not validated by the operator yet"
    if ready.get("status") != "True":
        return f"not Ready ({ready.get('reason')}): {ready.get('message') or ''}".rstrip(": ")
    return None


def _parse_status(model, raw):
    if not raw:
        return None
    try:
        return model.model_validate({k: v for k, v in dict(raw).items() if k != "kopf"})
    except ValidationError:
        log.warning("ignoring a status that does not parse; starting from a fresh one")
        return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
