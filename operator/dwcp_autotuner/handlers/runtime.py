"""The operator's runtime: Kubernetes and Prometheus adapters wired to the plain controller code.

Kopf handlers (handlers/kopf_handlers.py) only call the methods here; everything here is callable
without Kopf, which keeps it testable and keeps the handlers thin.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import platform
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from .. import __version__
from ..canary.protocol import target_ref, withdraw
from ..controller.context import Ports, ProfileUnreadable, RunContext
from ..controller.profiles import parse_profile, validate_profile
from ..controller.run import RunRef, reconcile, reconcile_failed, reconcile_invalid, reconcile_recovered, settled
from ..controller.target import config_ref
from ..models.base import API_VERSION, GROUP, VERSION
from ..models.errors import format_validation_error
from ..models.profile import ParameterProfileSpec, ProfileStatus
from ..models.run import TERMINAL_PHASES, OptimizationRunSpec, Phase, RunStatus, TargetRef, resolve_sampling
from ..ports.base import ConfigStore, EventSink, NotFound, OwnerRef, Unavailable
from ..ports.cached import CachedConfigStore
from ..ports.kubernetes import PERMANENT_STATUSES, KubernetesConfigStore, KubernetesEvents, KubernetesJobs, Rejected
from ..ports.notify import Notifier, NotifyingEvents, Webhook
from ..ports.prometheus import PrometheusMetrics
from ..proposers.base import Proposer
from ..proposers.learned import LearnedTwinProposer
from ..proposers.pool import AgentPool
from ..proposers.store import ModelStore
from ..proposers.workers import JobWorkers, Workers, measure_twin_job

log = logging.getLogger(__name__)

__all__ = ["API_VERSION", "GROUP", "PROFILES", "RUNS", "VERSION", "OperatorConfig", "OperatorRuntime"]
PROFILES = "parameterprofiles"
RUNS = "optimizationruns"
CACHE_TICKS = 6  # a ConfigMap read serves this many ticks of a run (30 s at the default 5 s tick)


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty: every namespace
    peering: str | None = None  # None: standalone (one replica, no peering objects)
    tick_seconds: float = 5.0
    profile_recheck_seconds: float = 30.0
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    # Floor of the default sample spacing: twice kube-prometheus-stack's 30 s scrape interval.
    min_sample_seconds: float = 60.0
    metrics_port: int = 8081  # the operator's own /metrics (not Prometheus' 9090); 0 disables
    liveness: str | None = "http://0.0.0.0:8080/healthz"
    cache_dir: Path | None = None
    quick_twins: bool = True
    # Measure each twin under its workload's other live conditions too (`workloads.twin_conditions`), in the
    # background: the learned twin then recognises a live workload unlike the twinned one. CPU minutes, once.
    twin_conditions: bool = True
    kubeconfig: str | None = None
    # Namespaces a profile's target may be in besides the profile's own; None: any (RBAC decides).
    allowed_target_namespaces: tuple[str, ...] | None = None
    webhooks: tuple[Webhook, ...] = ()  # notified of promotions, rollbacks, holds and Degraded causes
    # How long a ConfigMap read (or write) is reused: a change by someone else is noticed this much later (every
    # write stays guarded by resourceVersion). None: CACHE_TICKS ticks.
    configmap_cache_seconds: float | None = None
    # Worker processes for twin measurement and DQN pretraining (0: threads of the operator's own process).
    worker_processes: int = 1
    # (k, n): this operator reconciles only the runs and profiles whose namespace/name hash to shard k of n.
    shard: tuple[int, int] | None = None
    # Heavy work as Kubernetes Jobs instead of worker processes (None: processes).
    jobs: JobsConfig | None = None


@dataclass
class JobsConfig:
    image: str  # the operator's own image
    namespace: str  # where the Jobs and their result ConfigMaps go (the operator's namespace)
    service_account: str | None = None  # may write the result ConfigMaps there
    parallelism: int = 2
    deadline_seconds: int = 3600
    resources: dict = field(default_factory=dict)


class OperatorMetrics:
    """The operator's own Prometheus metrics (the chart's dashboard queries every one of them).

    Counters exist at 0 for every run and profile from the run's first reconcile, so `increase()` counts the
    first proposal too; gauges of a run go back to 0 (weight) or disappear when it ends or is deleted."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["namespace", "run", "profile"]
        self.proposals = Counter(
            "dwcp_autotuner_proposals", "Proposals rolled out (canary started)", labels, registry=self.registry
        )
        self.promotions = Counter(
            "dwcp_autotuner_promotions", "Canaries promoted to stable", labels, registry=self.registry
        )
        self.rollbacks = Counter("dwcp_autotuner_rollbacks", "Canaries rolled back", labels, registry=self.registry)
        self.canary_weight = Gauge(
            "dwcp_autotuner_canary_weight_percent",
            "Current canary weight (0: none out)",
            labels,
            registry=self.registry,
        )
        self.improvement = Gauge(
            "dwcp_autotuner_improvement_percent",
            "Improvement of the profile's objective from its promotions (compounded), in %",
            labels,
            registry=self.registry,
        )
        self.phase = Gauge(
            "dwcp_autotuner_run_phase",
            "1 for the run's current phase, 0 for the others",
            ["namespace", "run", "phase"],
            registry=self.registry,
        )
        self.score = Gauge(
            "dwcp_autotuner_analysis_score",
            "Mean score (objective minus penalties) of each variant in the last analysis of the current canary",
            [*labels, "variant"],
            registry=self.registry,
        )
        self.p_value = Gauge(
            "dwcp_autotuner_analysis_p_value",
            "One-sided p-value that the canary is better, in the last analysis",
            labels,
            registry=self.registry,
        )
        self.internal_errors = Counter(
            "dwcp_autotuner_internal_errors",
            "Reconciles of a run that raised an unexpected error",
            ["namespace", "run"],
            registry=self.registry,
        )
        self.build_info = Gauge(
            "dwcp_autotuner_build_info",
            "The operator's version (value 1)",
            ["version", "python"],
            registry=self.registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.notifications = Counter(
            "dwcp_autotuner_notifications",
            "Webhook notifications by format and outcome (sent, failed after retries, dropped: queue full)",
            ["format", "outcome"],
            registry=self.registry,
        )
        self.tick_lateness = Histogram(
            "dwcp_autotuner_tick_lateness_ratio",
            "How late a run's tick came, relative to --tick-seconds: (interval between two ticks - tick) / tick",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=self.registry,
        )
        self.reconcile_latency = Histogram(
            "dwcp_autotuner_reconcile_seconds",
            "Time of one reconcile of a run or profile",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self._profiles: dict[tuple[str, str], set[str]] = {}  # (namespace, run) -> profiles with series

    def track(self, namespace: str, run: str, profiles: list[str]) -> None:
        """Create the run's series at 0 (counters, weight) for each of its profiles."""
        known = self._profiles.setdefault((namespace, run), set())
        for profile in profiles:
            if profile in known:
                continue
            known.add(profile)
            for counter in (self.proposals, self.promotions, self.rollbacks):
                counter.labels(namespace, run, profile)
            self.canary_weight.labels(namespace, run, profile).set(0)
            self.internal_errors.labels(namespace, run)

    def export(self, namespace: str, run: str, status: RunStatus) -> None:
        """The gauges as the status says: the weight of the canary out (0 for the others), phase, analysis."""
        self.track(namespace, run, sorted({h.profile for h in status.history} | set(status.improvements)))
        current = status.current
        for profile in self._profiles.get((namespace, run), ()):
            out = current is not None and current.profile == profile and current.canary_weight > 0
            self.canary_weight.labels(namespace, run, profile).set(current.canary_weight if out else 0)
        for profile, gain in status.improvements.items():
            self.improvement.labels(namespace, run, profile).set(gain)
        for phase in Phase:
            self.phase.labels(namespace, run, str(phase)).set(1 if status.phase == phase else 0)
        if current is not None and current.steps:
            last = current.steps[-1]
            for variant, measured in (("stable", last.stable), ("canary", last.canary)):
                if measured.score is not None:
                    self.score.labels(namespace, run, current.profile, variant).set(measured.score)
            if last.p_value is not None:
                self.p_value.labels(namespace, run, current.profile).set(last.p_value)
        elif current is None:
            self._drop(self.score, namespace, run)
            self._drop(self.p_value, namespace, run)

    def forget(self, namespace: str, run: str) -> None:
        """A deleted run: its gauges go (the counters stay, so `increase()` over a range that saw them is right)."""
        for gauge in (self.canary_weight, self.improvement, self.phase, self.score, self.p_value):
            self._drop(gauge, namespace, run)

    @staticmethod
    def _drop(metric, namespace: str, run: str) -> None:
        """Remove the run's children of a gauge (found through `collect()`, the client's public view of them)."""
        for family in metric.collect():
            for sample in family.samples:
                labels = sample.labels
                if labels.get("namespace") == namespace and labels.get("run") == run:
                    names = [n for n in labels if n not in ("namespace", "run")]
                    try:
                        metric.remove(namespace, run, *(labels[n] for n in names))
                    except KeyError:
                        pass


@dataclass
class ActionTally:
    """One run's keyed actions as this process counts them for /metrics."""

    counted: set[str] = field(default_factory=set)
    # Reported, not yet counted: an action is counted once the status that records it is written (`settle`), so a
    # tick that dies before its status (the process killed, the API failing) counts nothing, and the process that
    # finishes the action counts it once. (Counted at the report, an action whose Event could not be recorded was
    # counted twice across a restart: the next process found no Event to stop its repeat.)
    owed: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # key -> (reason, profile)


class CountingEvents:
    """An EventSink that also counts proposals, promotions and rollbacks for /metrics."""

    COUNTERS = {"CanaryStarted": "proposals", "Promoted": "promotions", "RolledBack": "rollbacks"}  # of OperatorMetrics

    def __init__(
        self,
        inner: EventSink,
        metrics: OperatorMetrics,
        namespace: str,
        run: str,
        profile_of: callable,
        tally: ActionTally | None = None,
    ) -> None:
        self.inner, self.metrics, self.namespace, self.run, self.profile_of = inner, metrics, namespace, run, profile_of
        self.tally = tally if tally is not None else ActionTally()

    def emit(self, kind, reason, message, key=None) -> bool:
        new = self.inner.emit(kind, reason, message, key=key)
        if reason not in self.COUNTERS:
            return new
        if key is None:
            self._count(reason, self.profile_of(key))
        elif key not in self.tally.counted and (new or key in self.tally.owed):
            # (not new and not owed: the action's Event was recorded by another process, which counts it)
            self.tally.owed[key] = (reason, self.profile_of(key))
        return new

    def reported(self, key: str) -> bool:
        return key in self.tally.owed or key in self.tally.counted or self.inner.reported(key)

    def settle(self) -> None:
        """The tick's status is written: count the actions it reported."""
        for key, (reason, profile) in self.tally.owed.items():
            self.tally.counted.add(key)
            self._count(reason, profile)
        self.tally.owed.clear()

    def _count(self, reason: str, profile: str | None) -> None:
        self.metrics.track(self.namespace, self.run, [profile])
        getattr(self.metrics, self.COUNTERS[reason]).labels(self.namespace, self.run, profile).inc()


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
        cache_seconds = (
            config.configmap_cache_seconds
            if config.configmap_cache_seconds is not None
            else CACHE_TICKS * config.tick_seconds
        )
        self.configs: ConfigStore = (
            CachedConfigStore(KubernetesConfigStore(self.core), cache_seconds, clock=lambda: _now().timestamp())
            if cache_seconds > 0
            else KubernetesConfigStore(self.core)
        )
        self.metrics = metrics or OperatorMetrics()
        self._pools: dict[str, Proposer] = {}
        self._profile_uids: dict[
            tuple[str, str], str
        ] = {}  # (namespace, name) -> uid: stored models are owned by their profile
        self._prometheus: dict[str, PrometheusMetrics] = {}
        self._counted_actions: dict[str, ActionTally] = {}  # run uid -> keyed actions counted in /metrics
        self._failures: dict[str, _Failure] = {}  # run uid -> the error its ticks keep raising
        self._last_tick: dict[str, float] = {}  # run uid -> monotonic time of its last tick (lateness)
        self._seen_rv: dict[str, str | None] = {}  # run uid -> the resourceVersion this process last wrote or read
        self._profile_bodies: dict[tuple[str, str], Mapping] = {}  # (namespace, name) -> as the watch delivered it
        self._profile_checked: dict[str, object] = {}  # profile uid -> the generation this process last validated
        self._unavailable: dict[str, str] = {}  # run uid -> the API or Prometheus failure logged for it
        self._lock = threading.Lock()
        if config.jobs is not None:
            jobs = config.jobs
            runner = KubernetesJobs(
                kubernetes.client.BatchV1Api(self.api_client),
                self.core,
                image=jobs.image,
                service_account=jobs.service_account,
                resources=jobs.resources,
            )
            self.workers = JobWorkers(
                runner,
                KubernetesConfigStore(self.core),  # no cache: the result is polled
                jobs.namespace,
                parallelism=jobs.parallelism,
                deadline_seconds=jobs.deadline_seconds,
            )
        else:
            self.workers = Workers(config.worker_processes)
        self.notifier = Notifier(
            config.webhooks, count=lambda fmt, outcome: self.metrics.notifications.labels(fmt, outcome).inc()
        )
        for hook in config.webhooks:  # every series at 0 from the start, so increase() counts the first message
            for outcome in ("sent", "failed", "dropped"):
                self.metrics.notifications.labels(hook.format, outcome)

    # --- shared helpers -------------------------------------------------------------------------------
    def owns(self, body: Mapping) -> bool:
        """Whether this operator's shard reconciles the object (always, without sharding)."""
        if self.config.shard is None:
            return True
        meta = body.get("metadata") or {}
        index, count = self.config.shard
        return shard_of(meta.get("namespace", "default"), meta.get("name", ""), count) == index

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
                # Half the re-check period: a profile edit reuses a fresh check, the periodic re-check asks again.
                self._prometheus[url] = PrometheusMetrics(
                    url, validation_seconds=self.config.profile_recheck_seconds / 2
                )
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
                        spec.agent,
                        cache_dir=self.config.cache_dir,
                        quick_twins=self.config.quick_twins,
                        models=models,
                        workers=self.workers,
                    )
                else:
                    seed, cache, quick = spec.agent.seed, self.config.cache_dir, self.config.quick_twins

                    def twin_source(name, profile, conditions=None):
                        # In a worker process: measuring runs the real workload (CPU minutes the first time).
                        dumped = profile.model_dump(mode="json", by_alias=True, exclude_none=True)
                        job = self.workers.submit(
                            measure_twin_job, dumped, seed, str(cache) if cache else None, quick, conditions
                        )
                        return job.result()

                    self._pools[uid] = LearnedTwinProposer(
                        spec.agent,
                        exploration=spec.exploration,
                        twin_source=twin_source,
                        models=models,
                        significance=spec.rollout.significance,
                        analyses=spec.rollout.max_inconclusive,
                        twin_conditions=self.config.twin_conditions,
                    )
            return self._pools[uid]

    def _profile_owner(self, namespace: str, profile: str) -> OwnerRef | None:
        uid = self._profile_uids.get((namespace, profile))
        return None if uid is None else OwnerRef(API_VERSION, "ParameterProfile", profile, uid)

    def forget(self, uid: str) -> None:
        with self._lock:
            pool = self._pools.pop(uid, None)
            self._counted_actions.pop(uid, None)
            self._failures.pop(uid, None)
            self._unavailable.pop(uid, None)
            self._last_tick.pop(uid, None)
            self._seen_rv.pop(uid, None)
        if pool is not None:
            pool.close()  # a deleted run's pretraining must not keep a core busy

    def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping, resource_version: str | None = None
    ) -> dict | None:
        """A merge patch of the status subresource; nulls delete fields that are gone. Returns the object written.
        With `resource_version`, only if the object is still at that version (else the API answers 409 Conflict)."""
        body: dict = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, body, _content_type="application/merge-patch+json"
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

    def profile_seen(self, event_type: str | None, body: Mapping) -> None:
        """A ParameterProfile as the watch delivered it (every change, including the status this process wrote):
        runs read profiles from here instead of the API. A deleted profile is forgotten (then read: not found)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", "default"), meta.get("name", ""))
        with self._lock:
            if event_type == "DELETED" or meta.get("deletionTimestamp"):
                self._profile_bodies.pop(key, None)
            else:
                self._profile_bodies[key] = dict(body)

    def profile_event(self, event_type: str | None, body: Mapping) -> dict | None:
        """Every watch event of a ParameterProfile: remembered for the runs, and validated when this process has not
        yet validated its generation (a new or changed spec, or the first sight after a start). Returns the status to
        write, or None.

        Level-triggered on the generation instead of Kopf's create/update/resume handlers: those keep a diff base
        and progress in annotations, which cost a second PATCH (of the object, beside its status) on every change.
        A status write that fails is written again by the periodic re-check."""
        self.profile_seen(event_type, body)
        meta = body.get("metadata") or {}
        uid = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
        with self._lock:
            if event_type == "DELETED" or meta.get("deletionTimestamp"):
                self._profile_checked.pop(uid, None)
                return None
            if not self.owns(body) or self._profile_checked.get(uid) == meta.get("generation"):
                return None
        status = self.reconcile_profile(body)
        with self._lock:
            self._profile_checked[uid] = meta.get("generation")
        return status

    def load_profiles(
        self, namespace: str, names: list[str], *, require_ready: bool = False
    ) -> dict[str, ParameterProfileSpec | str]:
        """Each profile's spec, or why it cannot be used.

        With `require_ready` (before a new proposal) a profile must also have been validated by the
        operator (status Ready=True for its current generation): a profile whose PromQL Prometheus
        rejects, whose ConfigMap is missing or out of bounds, or that was not checked yet, is not
        used. During a rollout only a spec that no longer parses stops the run (a profile that is
        merely not Ready because, say, Prometheus is down is handled by the canary analysis). A profile
        that could not be read for now (a 5xx, a lost answer) is a `ProfileUnreadable`: the run waits
        for it, whatever its phase.
        """
        profiles: dict[str, ParameterProfileSpec | str] = {}
        for name in names:
            try:
                obj = self._profile_bodies.get((namespace, name))  # what the watch delivered (Kopf's event handler)
                if obj is None:
                    obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PROFILES, name)
            except ApiException as error:
                why = f"cannot read it ({error.status} {error.reason})"
                if error.status == 404:
                    profiles[name] = f"ParameterProfile {namespace}/{name} not found"
                elif error.status in PERMANENT_STATUSES:  # refused for good (403: no longer allowed): a canary ends
                    profiles[name] = why
                else:  # a 5xx, a 409, a 429: read again next tick
                    profiles[name] = ProfileUnreadable(why)
                continue
            except Exception as error:  # a lost answer, a refused connection: read again next tick
                profiles[name] = ProfileUnreadable(f"cannot read it ({error})")
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
        """One tick of a run. Never raises: an unexpected error makes the run Degraded (InternalError) with one
        Warning Event and one logged traceback, and is retried on the next tick (Kopf would log a traceback per
        retry and the status would go on saying all is well)."""
        meta = body.get("metadata", {})
        uid = meta.get("uid", "")
        now = time.monotonic()
        last, self._last_tick[uid] = self._last_tick.get(uid), now
        if last is not None:
            tick = self.config.tick_seconds
            self.metrics.tick_lateness.observe(max(0.0, (now - last - tick) / tick))
        try:
            status = self._reconcile_run(body)
        except RunMoved as moved:  # not an error: the other writer's status is read and acted on next tick
            log.info("%s; reconciling it from there next tick", moved)
            return None
        except Exception as error:
            return self._internal_error(body, error)
        failure = self._failures.pop(uid, None)
        if failure is not None and status is not None:
            log.info(
                "run %s/%s: reconciling again after %d failed tick(s)",
                meta.get("namespace"),
                meta.get("name"),
                failure.ticks,
            )
            recovered = reconcile_recovered(self._ref(body), self._events(body), status)
            if recovered is not status:
                self.patch_status(
                    RUNS,
                    meta.get("namespace", "default"),
                    meta["name"],
                    recovered.model_dump(mode="json", by_alias=True),
                )
                status = recovered
        return status

    def _ref(self, body: Mapping) -> RunRef:
        meta = body.get("metadata", {})
        return RunRef(
            meta["name"], meta.get("namespace", "default"), meta.get("uid", ""), meta.get("generation"), _now()
        )

    def _events(self, body: Mapping) -> EventSink:
        """The run's Events (Kubernetes Events, and the webhooks for those worth a message)."""
        meta = body.get("metadata", {})
        namespace, name = meta.get("namespace", "default"), meta["name"]
        events = KubernetesEvents(
            self.core,
            {
                "apiVersion": API_VERSION,
                "kind": "OptimizationRun",
                "name": name,
                "namespace": namespace,
                "uid": meta.get("uid", ""),
            },
            component="dwcp-autotuner",
        )
        return NotifyingEvents(events, self.notifier, namespace, name) if self.config.webhooks else events

    def _internal_error(self, body: Mapping, error: Exception) -> RunStatus | None:
        """Log the first occurrence of an error with its traceback, then only a count; set Degraded on the run."""
        meta = body.get("metadata", {})
        namespace, name, uid = meta.get("namespace", "default"), meta.get("name", ""), meta.get("uid", "")
        text = f"{type(error).__name__}: {error}"[:500]
        failure = self._failures.get(uid)
        if failure is None or failure.error != text:
            failure = self._failures[uid] = _Failure(text, 0, _now().strftime("%Y-%m-%dT%H:%M:%SZ"))
            log.error(
                "run %s/%s: internal error (logged once; retried every tick): %s", namespace, name, text, exc_info=error
            )
        failure.ticks += 1
        self.metrics.internal_errors.labels(namespace, name).inc()
        if failure.ticks in (10, 100, 1000) or failure.ticks % 10_000 == 0:
            log.warning("run %s/%s: still failing after %d ticks: %s", namespace, name, failure.ticks, text)
        try:
            fresh = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, name)
            status = _parse_status(RunStatus, fresh.get("status")) or RunStatus()
            body = fresh
            new = reconcile_failed(self._ref(body), self._events(body), status, text, failure.ticks, failure.since)
            self.patch_status(RUNS, namespace, name, new.model_dump(mode="json", by_alias=True))
            return new
        except Exception as second:  # the API itself is failing: the count above and the log say so
            log.debug("run %s/%s: cannot record the internal error: %s", namespace, name, second)
            return None

    def _reconcile_run(self, body: Mapping) -> RunStatus | None:
        started = time.perf_counter()
        meta = body.get("metadata", {})
        namespace, name = meta.get("namespace", "default"), meta["name"]
        # The body a Kopf timer gets is the last one its watch delivered, which may predate the status this
        # process patched a moment ago. Reconciling from an older status would redo a transition (a second
        # promotion, a second event), so the body is used only when it is at least as new as what this process
        # last wrote or read of the run (its resourceVersion); otherwise, and on the first tick, it is read afresh.
        if not _at_least(meta.get("resourceVersion"), self._seen_rv.get(meta.get("uid", ""))):
            try:
                body = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, name)
            except ApiException as error:
                if error.status == 404:
                    return None  # deleted meanwhile
                raise
        meta = body.get("metadata", {})
        self._seen_rv[meta.get("uid", "")] = meta.get("resourceVersion")
        uid, generation = meta.get("uid", ""), meta.get("generation")
        status = _parse_status(RunStatus, body.get("status")) or RunStatus()
        raw_spec = body.get("spec") or {}
        annotations = dict(meta.get("annotations") or {})
        if settled(status, generation, bool((raw_spec.get("continuous") or {}).get("enabled")), annotations):
            return status  # finished; nothing to do until the spec changes (a continuous run keeps watching)
        latest = {"status": status}

        stored = {"status": body.get("status")}  # as the API last showed it (at version `self._seen_rv[uid]`)

        def persist(new: RunStatus) -> None:
            # Guarded by the version this tick read (or last wrote): during a fail-over another operator process may
            # have reconciled the run from the same status meanwhile, and two ticks acting on one status would each
            # record their own decision (the second erased the first's proposal while its canary was out). When only
            # the object's metadata or spec moved (Kopf's annotations, a person's edit), the decision still stands
            # on the status it was made from and is written on the new version.
            dumped = new.model_dump(mode="json", by_alias=True)
            for _ in range(3):
                try:
                    written = self.patch_status(RUNS, namespace, name, dumped, self._seen_rv.get(uid))
                    break
                except ApiException as error:
                    if error.status != 409:
                        raise
                fresh = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, name)
                if fresh.get("status") != stored["status"]:
                    self._seen_rv[uid] = None  # the next tick reads the run afresh
                    raise RunMoved(
                        f"run {namespace}/{name}: its status was written by someone else since this tick read it"
                    )
                self._seen_rv[uid] = (fresh.get("metadata") or {}).get("resourceVersion")
            else:
                self._seen_rv[uid] = None
                raise RunMoved(f"run {namespace}/{name} kept changing while this tick wrote its status")
            written = written or {}
            stored["status"] = written.get("status")
            self._seen_rv[uid] = (written.get("metadata") or {}).get("resourceVersion")
            latest["status"] = new

        events = self._events(body)
        # The controller persists a proposal (write-ahead) before it starts its canary, so the
        # latest persisted status names the profile of a CanaryStarted event.
        counting = CountingEvents(
            events,
            self.metrics,
            namespace,
            name,
            lambda key: _profile_of_action(latest["status"], key),
            tally=self._counted_actions.setdefault(uid, ActionTally()),
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
            counting.settle()
            return new_status
        self.metrics.track(namespace, name, spec.profiles)
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
        ctx = RunContext(
            name, namespace, uid, generation, spec, status, profiles, _now(), owner=owner, annotations=annotations
        )
        try:
            new_status = reconcile(ctx, ports)
        except Unavailable as error:
            # The API server or Prometheus failed mid-transition. Whatever was about to change is
            # recorded as the pending action; the next tick re-reads and finishes it.
            if self._unavailable.get(uid) != str(error):  # once per distinct cause, not once per tick
                log.warning("run %s/%s: %s; retrying every tick", namespace, name, error)
            self._unavailable[uid] = str(error)
            return latest["status"]
        if self._unavailable.pop(uid, None) is not None:
            log.info("run %s/%s: reconciling again", namespace, name)
        if new_status != status:
            persist(new_status)
        counting.settle()  # what the tick did is in the status now: its actions count
        if new_status.phase in TERMINAL_PHASES and not spec.continuous.enabled:
            self.forget(uid)  # a finished run proposes nothing more: free its agents
        self._export(namespace, name, new_status)
        self.metrics.reconcile_latency.labels("run").observe(time.perf_counter() - started)
        return new_status

    def _export(self, namespace: str, name: str, status: RunStatus) -> None:
        self.metrics.export(namespace, name, status)

    def cleanup_run(self, body: Mapping) -> None:
        """A run deleted mid-rollout takes its canary keys with it; the stable bytes are never touched.

        A transient failure (a 5xx, a lost answer, a conflict) raises, so Kopf calls this again and the run's
        finalizer keeps it until the canary is withdrawn; only a ConfigMap that is gone, or a request the API
        refuses for good (403: the operator may no longer touch that namespace), lets the run go with a warning."""
        meta = body.get("metadata", {})
        self.forget(meta.get("uid", ""))
        self.metrics.forget(meta.get("namespace", "default"), meta.get("name", ""))
        status = _parse_status(RunStatus, body.get("status"))
        namespace = meta.get("namespace", "default")
        status = None if status is None else self._with_target(namespace, status)
        if status is None or status.current is None or status.current.target is None or status.current.revision is None:
            return
        try:
            withdraw(self.configs, config_ref(status.current.target), status.current.revision)
        except (NotFound, Rejected) as error:
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


def _profile_of_action(status: RunStatus, key: str | None) -> str:
    """The profile of the proposal a keyed action ("3/Promoted") belongs to.

    The controller persists a proposal (write-ahead) before it starts its canary, so the latest persisted
    status names it: as `current` while it is out, in `history` once it ended (a promotion or rollback
    clears `current` before its Event is emitted)."""
    number = None if key is None else key.split("/", 1)[0]
    current = status.current
    if current is not None and (number is None or str(current.number) == number):
        return current.profile
    for record in reversed(status.history):
        if str(record.number) == number:
            return record.profile
    return ""


@dataclass
class _Failure:
    error: str
    ticks: int
    since: str


def shard_of(namespace: str, name: str, count: int) -> int:
    """The shard of an object: a stable hash of namespace/name (the same in every operator process and release)."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def same_status(new: Mapping, stored: Mapping) -> bool:
    """Whether writing `new` would change the stored status: its fields compared with nulls left out (the API
    server drops them, so a status with a None field never equals what it stored)."""

    def strip(value):
        if isinstance(value, Mapping):
            return {k: strip(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(new) == strip({k: v for k, v in stored.items() if k in new})


class RunMoved(Exception):
    """A run's status changed since the tick read it (another operator process wrote it): the tick stops there, and
    whatever it had not yet written is decided again from the new status."""


def _at_least(version: str | None, seen: str | None) -> bool:
    """Whether an object's resourceVersion is at least `seen`. Kubernetes' resourceVersions are etcd revisions,
    compared as numbers here; anything else (or nothing seen yet) counts as older, so the object is read afresh."""
    if not version or not seen:
        return False
    try:
        return int(version) >= int(seen)
    except ValueError:
        return False


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
