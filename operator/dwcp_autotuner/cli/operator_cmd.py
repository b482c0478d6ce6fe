"""`dwcp-autotuner operator`: run the Kopf operator with the project's settings."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path

from ..models.run import check_http_url
from ..ports.notify import webhooks_from
from .errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "operator",
        help="run the Kubernetes operator",
        description="Run the Kopf operator that reconciles ParameterProfiles and OptimizationRuns.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch only this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    p.add_argument(
        "--peering",
        metavar="NAME",
        help="Kopf peering name for HA (replicas elect one active operator); default: standalone",
    )
    p.add_argument(
        "--prometheus-url",
        default="http://prometheus-operated.monitoring.svc:9090",
        help="default Prometheus for runs without spec.prometheusUrl",
    )
    p.add_argument(
        "--min-sample-seconds",
        type=float,
        default=60.0,
        help="floor of a run's default rollout.sampleSeconds; keep it >= 2x Prometheus' scrape interval (default 60)",
    )
    p.add_argument("--tick-seconds", type=float, default=5.0, help="how often each run is reconciled (default 5)")
    p.add_argument(
        "--profile-recheck-seconds", type=float, default=30.0, help="how often profiles are re-validated (default 30)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=8081,
        help="port of the operator's own /metrics (0 disables; default 8081: not Prometheus' own 9090)",
    )
    p.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        help="address /metrics binds to (default 0.0.0.0: every interface of the pod; 127.0.0.1 outside a cluster)",
    )
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL ('' disables)")
    p.add_argument(
        "--allowed-target-namespace",
        action="append",
        default=None,
        metavar="NS",
        help="a namespace whose ConfigMaps profiles may target besides their own (repeatable; the chart sets "
        "these from watchNamespaces and targetNamespaces); '*': any namespace",
    )
    p.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="[FORMAT=]URL",
        help="notify this webhook of promotions, rollbacks, holds, approvals, aborts and Degraded causes (repeatable); "
        "FORMAT json (default) or slack; FORMAT=env:VAR reads the URL from an environment variable (a Secret)",
    )
    p.add_argument(
        "--configmap-cache-seconds",
        type=float,
        default=None,
        help="reuse a ConfigMap read for this long (fewer API requests; a change by someone else is noticed this "
        "much later; every write stays guarded by resourceVersion). Default: 6 ticks (30 s); 0: read every tick",
    )
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="reconcile only the runs and profiles whose namespace/name hash to shard K of N (0 <= K < N); run one "
        "operator (or one peered group) per shard. Default: everything",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes for twin measurement and DQN pretraining, off the reconcile loop's interpreter "
        "(default 1; 0: threads of the operator's process)",
    )
    p.add_argument(
        "--twin-conditions",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure each profile's twin under its workload's other live conditions (a faster link, another "
        "request rate ...), in the background after the twin itself, so that the learned twin recognises a live "
        "workload unlike the twinned one (default: on; CPU minutes per twin, once, cached)",
    )
    jobs = p.add_argument_group("worker Jobs (chart value workers.jobs)")
    jobs.add_argument(
        "--worker-jobs-image",
        metavar="IMAGE",
        help="run twin measurement and pretraining as Kubernetes Jobs of this image (the operator's own) instead of "
        "worker processes",
    )
    jobs.add_argument("--worker-jobs-namespace", help="where the Jobs run (default: $POD_NAMESPACE, else default)")
    jobs.add_argument("--worker-jobs-service-account", help="the Jobs' ServiceAccount (writes their result ConfigMaps)")
    jobs.add_argument("--worker-jobs-parallelism", type=int, default=2, help="Jobs running at once (default 2)")
    jobs.add_argument(
        "--worker-jobs-deadline-seconds", type=int, default=3600, help="a Job's activeDeadlineSeconds (default 3600)"
    )
    jobs.add_argument(
        "--worker-jobs-resources",
        default="{}",
        metavar="JSON",
        help='the Jobs\' container resources as JSON, e.g. {"requests": {"cpu": "1", "memory": "1Gi"}}',
    )
    p.add_argument("--cache-dir", type=Path, help="where measured twins are cached")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else $KUBECONFIG)")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line (run, namespace, reason, phase as fields) for log pipelines",
    )
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(handler=run)


def configure_logging(fmt: str, *, verbose: bool) -> None:
    """One line per transition and per failure; quiet where the libraries are chatty on success."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level"})
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        # Kopf logs "Timer ... succeeded" for every tick of every run; keep its per-object warnings and errors.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # Every liveness probe, and urllib3's "Retrying ..." lines with URL-encoded PromQL: the operator logs
        # what failed itself, once (handlers/runtime.py).
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def _seconds(flag: str, value: float, minimum: float, *, inclusive: bool) -> None:
    ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
    if not ok:
        bound = f"at least {minimum:g}" if inclusive else f"greater than {minimum:g}"
        raise CliError(f"{flag}: must be a finite number {bound} (got {value})")


def _allowed(values: list[str] | None) -> tuple[str, ...] | None:
    """None (the flag not given, or '*'): any namespace; else exactly those named ('' adds none: own namespace only)."""
    if values is None or "*" in values:
        return None
    return tuple(v for v in values if v)


def run(args: argparse.Namespace) -> int:
    _seconds("--tick-seconds", args.tick_seconds, 0, inclusive=False)
    _seconds("--min-sample-seconds", args.min_sample_seconds, 1, inclusive=True)
    _seconds("--profile-recheck-seconds", args.profile_recheck_seconds, 0, inclusive=False)
    shard = None
    if args.shard is not None:
        try:
            index, count = (int(x) for x in args.shard.split("/"))
        except ValueError:
            raise CliError(f"--shard: expected K/N, e.g. 0/2 (got {args.shard!r})") from None
        if not (count >= 1 and 0 <= index < count):
            raise CliError(f"--shard: K must be in 0..N-1 and N at least 1 (got {args.shard})")
        shard = (index, count)
    jobs = None
    if args.worker_jobs_image:
        if not 1 <= args.worker_jobs_parallelism <= 100:
            raise CliError(f"--worker-jobs-parallelism: must be 1 to 100 (got {args.worker_jobs_parallelism})")
        if args.worker_jobs_deadline_seconds < 1:
            raise CliError("--worker-jobs-deadline-seconds: must be at least 1")
        try:
            resources = json.loads(args.worker_jobs_resources)
            assert isinstance(resources, dict)
        except (ValueError, AssertionError):
            raise CliError(f"--worker-jobs-resources: not a JSON object ({args.worker_jobs_resources!r})") from None
        from ..handlers.runtime import JobsConfig

        jobs = JobsConfig(
            image=args.worker_jobs_image,
            namespace=args.worker_jobs_namespace or os.environ.get("POD_NAMESPACE") or "default",
            service_account=args.worker_jobs_service_account,
            parallelism=args.worker_jobs_parallelism,
            deadline_seconds=args.worker_jobs_deadline_seconds,
            resources=resources,
        )
    if not 0 <= args.workers <= 64:
        raise CliError(f"--workers: must be 0 to 64 (got {args.workers})")
    if args.configmap_cache_seconds is not None:
        _seconds("--configmap-cache-seconds", args.configmap_cache_seconds, 0, inclusive=True)
    try:
        check_http_url(args.prometheus_url)
    except ValueError as error:
        raise CliError(f"--prometheus-url: {error}") from None
    if not 0 <= args.metrics_port <= 65535:
        raise CliError(f"--metrics-port: must be a port number (got {args.metrics_port})")
    try:
        webhooks = tuple(webhooks_from(args.webhook, os.environ))
    except ValueError as error:
        raise CliError(f"--webhook: {error}") from None
    configure_logging(args.log_format, verbose=args.verbose)

    import kopf
    from prometheus_client import disable_created_metrics, start_http_server

    from ..handlers.kopf_handlers import register
    from ..handlers.runtime import OperatorConfig, OperatorRuntime

    config = OperatorConfig(
        namespaces=list(args.namespace),
        peering=args.peering,
        tick_seconds=args.tick_seconds,
        profile_recheck_seconds=args.profile_recheck_seconds,
        prometheus_url=args.prometheus_url,
        min_sample_seconds=args.min_sample_seconds,
        metrics_port=args.metrics_port,
        liveness=args.liveness or None,
        cache_dir=args.cache_dir,
        kubeconfig=args.kubeconfig,
        allowed_target_namespaces=_allowed(args.allowed_target_namespace),
        webhooks=webhooks,
        configmap_cache_seconds=args.configmap_cache_seconds,
        worker_processes=args.workers,
        twin_conditions=args.twin_conditions,
        shard=shard,
        jobs=jobs,
    )
    try:
        runtime = OperatorRuntime(config)
    except Exception as error:
        raise CliError(f"cannot connect to Kubernetes: {error}") from None
    if config.metrics_port:
        disable_created_metrics()  # no `*_created` gauge beside every counter and histogram
        try:
            start_http_server(config.metrics_port, addr=args.metrics_address, registry=runtime.metrics.registry)
        except OSError as error:
            raise CliError(
                f"--metrics-port {config.metrics_port} / --metrics-address {args.metrics_address}: cannot listen there "
                f"({error.strerror or error}); choose another port with --metrics-port, or 0 to turn /metrics off"
            ) from None
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    kopf.run(
        registry=registry,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,  # Kopf wants a list even when cluster-wide (None crashes its observer)
        liveness_endpoint=config.liveness,
        standalone=config.peering is None,
        peering_name=config.peering,
    )
    return 0
