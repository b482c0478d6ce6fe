"""Kopf handlers: decorators and nothing else. The work is in handlers/runtime.py and controller/.

Handlers are registered into a given registry (not the global one) so that tests and the CLI can
run several operators with different settings in one process.
"""

from __future__ import annotations

import logging
import random

import kopf

from ..ports.base import Conflict, Unavailable
from .runtime import GROUP, PROFILES, RUNS, VERSION, OperatorConfig, OperatorRuntime, same_status


def apply_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Kopf's settings for this operator (a plain function, so tests can run Kopf with exactly these)."""
    settings.persistence.finalizer = f"{GROUP}/cleanup"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.WARNING  # Kubernetes Events for warnings; ours are posted by the controller
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 8  # runs reconcile in threads; pretraining has its own threads
    # A run deleted while its timer is mid-reconcile (a thread Kopf cannot interrupt) waits for the
    # timer to exit, and Kopf re-checks only every `cancellation_polling` seconds: 60 by default, so
    # such a deletion (and its canary clean-up) took a minute. A reconcile takes milliseconds:
    # re-check every second.
    settings.background.cancellation_polling = 1.0
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.mandatory = True
        # Kopf pauses every operator that sees a peer of the same priority; distinct random
        # priorities make exactly one replica active and the others stand by.
        settings.peering.priority = random.randint(1, 32767)
    else:
        settings.peering.standalone = True


def register(registry: kopf.OperatorRegistry, runtime: OperatorRuntime) -> None:
    config: OperatorConfig = runtime.config

    def owned(body, **_) -> bool:  # sharding: only the runs and profiles of this operator's shard
        return runtime.owns(body)

    # A failed handler (e.g. the API server briefly unreachable) is retried after this long, not
    # Kopf's default minute: every reconcile is idempotent, so retrying soon is safe.
    backoff = max(config.tick_seconds, 1.0)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_) -> None:
        apply_settings(settings, config)

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_) -> None:
        runtime.workers.shutdown()  # the worker processes go with the operator
        runtime.notifier.close(timeout=5.0)  # what is queued is sent first, for a few seconds at most

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **_) -> kopf.ConnectionInfo:
        # Same credentials as the runtime's own client (in-cluster service account, else --kubeconfig/$KUBECONFIG).
        return runtime.connection_info(trust_env=settings.networking.trust_env)

    # --- ParameterProfile: validate each new generation and re-check periodically (a missing ConfigMap may appear) ---
    @kopf.on.event(GROUP, VERSION, PROFILES, registry=registry)
    def profile_event(type, body, patch, **_) -> None:
        status = runtime.profile_event(type, body)
        if status is not None:
            patch.status.update(status)

    @kopf.timer(
        GROUP,
        VERSION,
        PROFILES,
        interval=config.profile_recheck_seconds,
        idle=config.profile_recheck_seconds,
        backoff=backoff,
        when=owned,
        registry=registry,
    )
    def profile_recheck(body, patch, **_) -> None:
        status = runtime.reconcile_profile(body)
        if not same_status(status, body.get("status") or {}):  # a status written only when it changed
            patch.status.update(status)

    # --- OptimizationRun: one transition per tick; the status is the state -----------------------------
    # sharp: every tick-seconds from the run's first tick, however long a reconcile took (lateness is measurable).
    @kopf.timer(
        GROUP, VERSION, RUNS, interval=config.tick_seconds, sharp=True, backoff=backoff, when=owned, registry=registry
    )
    def run_tick(body, **_) -> None:
        runtime.reconcile_run(body)

    @kopf.on.delete(GROUP, VERSION, RUNS, backoff=backoff, when=owned, registry=registry)
    def run_deleted(body, **_) -> None:
        try:
            runtime.cleanup_run(body)
        except (Conflict, Unavailable) as error:  # one line in the log and an Event on the run, not a traceback
            raise kopf.TemporaryError(
                f"the run's canary is not withdrawn yet (retried in {backoff:g} s; the finalizer keeps the run until "
                f"it is): {error}",
                delay=backoff,
            ) from None
