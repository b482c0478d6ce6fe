"""The operator's Kopf settings (handlers/kopf_handlers.apply_settings) with real Kopf against the emulator.

Kopf stops an object's timers before it runs the deletion handler and removes the finalizer. A sync
timer caught mid-reconcile runs in a thread Kopf cannot interrupt, so Kopf polls for its exit, and its
default polling period is 60 s: a run deleted at that moment stayed (with its canary) for a minute.
This once timed out an e2e test under CI load. Here the timer is busy nearly all the time, so the
deletion always meets it mid-reconcile.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time
from typing import Any

import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException

from dwcp_autotuner.handlers.kopf_handlers import apply_settings
from dwcp_autotuner.handlers.runtime import GROUP, RUNS, VERSION, OperatorConfig
from tests.kube import running_emulator
from tests.support.tools import wait_for

CRDS = pathlib.Path(__file__).resolve().parents[1] / "crds"


def test_a_run_deleted_mid_reconcile_is_released_within_seconds_not_a_minute() -> None:
    with running_emulator([CRDS]) as (_emulator, url, kubeconfig):
        registry = kopf.OperatorRegistry()
        deleted: list[str] = []

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=url, insecure=True, scheme="Bearer", token="dummy")

        @kopf.timer(GROUP, VERSION, RUNS, interval=0.1, registry=registry)
        def busy_reconcile(**_: Any) -> None:
            time.sleep(1.0)  # a slow reconcile: the deletion lands inside one

        @kopf.on.delete(GROUP, VERSION, RUNS, registry=registry)
        def run_deleted(name: str, **_: Any) -> None:
            deleted.append(name)

        settings = kopf.OperatorSettings()
        apply_settings(settings, OperatorConfig())
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=lambda: asyncio.run(
                kopf.operator(
                    registry=registry,
                    settings=settings,
                    standalone=True,
                    namespaces=["default"],
                    stop_flag=stop,
                    ready_flag=ready,
                )
            ),
            name="kopf",
            daemon=True,
        )
        thread.start()
        try:
            assert ready.wait(timeout=15)
            custom = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(str(kubeconfig)))
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                "default",
                RUNS,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "OptimizationRun",
                    "metadata": {"name": "r1"},
                    "spec": {"profiles": ["p"]},
                },
            )
            finalizers = wait_for(
                lambda: custom.get_namespaced_custom_object(GROUP, VERSION, "default", RUNS, "r1")["metadata"].get(
                    "finalizers"
                ),
                15,
                "Kopf's finalizer on the run",
            )
            assert finalizers == [f"{GROUP}/cleanup"]  # the settings are the operator's
            time.sleep(1.5)  # the timer is running

            started = time.monotonic()
            custom.delete_namespaced_custom_object(GROUP, VERSION, "default", RUNS, "r1")

            def gone() -> bool:
                try:
                    custom.get_namespaced_custom_object(GROUP, VERSION, "default", RUNS, "r1")
                except ApiException as error:
                    return error.status == 404
                return False

            wait_for(gone, 30, "the deletion to complete", interval=0.1)
            took = time.monotonic() - started
            # Kopf calls the deletion handler again once the timer has stopped (with its default settings
            # too), which is why the operator's clean-up (runtime.cleanup_run) is idempotent.
            assert set(deleted) == {"r1"}
            assert took < 10, f"the deletion took {took:.1f} s"  # Kopf's default polling: about 60 s
        finally:
            stop.set()
            thread.join(timeout=15)


def test_a_deletion_that_cannot_withdraw_the_canary_yet_is_retried_with_one_line_not_a_traceback() -> None:
    """`cleanup_run` raises on a transient API failure (so the finalizer keeps the run); the Kopf handler turns it
    into a `kopf.TemporaryError`, which Kopf logs as one line (and an Event) and retries after the backoff, where any
    other exception is logged with its traceback."""
    from types import SimpleNamespace

    from dwcp_autotuner.handlers.kopf_handlers import register
    from dwcp_autotuner.ports.base import Unavailable

    def cleanup_run(body: Any) -> None:
        raise Unavailable("read ConfigMap dwcp/svc-config: HTTP 503: the API server is restarting")

    runtime = SimpleNamespace(config=OperatorConfig(tick_seconds=5.0), owns=lambda body: True, cleanup_run=cleanup_run)
    registry = kopf.OperatorRegistry()
    register(registry, runtime)  # type: ignore[arg-type]  (only what the deletion handler uses)
    handler = next(h for h in registry._changing.get_all_handlers() if h.fn.__name__ == "run_deleted")
    try:
        handler.fn(body={"metadata": {"name": "tune", "namespace": "dwcp"}})
    except kopf.TemporaryError as error:
        assert error.delay == 5.0
        assert "not withdrawn yet" in str(error) and "HTTP 503" in str(error)
    else:
        raise AssertionError("the deletion handler returned: Kopf would remove the finalizer with the canary out")
