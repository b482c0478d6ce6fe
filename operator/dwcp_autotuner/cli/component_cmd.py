"""`dwcp-autotuner component hde|pba|acp`: run a reference DWCP service under the canary SDK.

Where the configuration comes from (the first that applies):
1. `--config-dir DIR`: a mounted ConfigMap folder (files named by key) or one JSON file, polled;
2. `--configmap NAME` or `--kubeconfig FILE` given, or $DWCP_CONFIGMAP set with Kubernetes credentials
   present (in a pod, or $KUBECONFIG): the ConfigMap is watched through the API;
3. $DWCP_CONFIG_DIR: the mounted folder;
4. Kubernetes credentials present: the ConfigMap `<name>-config` is watched through the API.
Environment defaults (what the Helm chart sets): DWCP_CONFIGMAP, DWCP_CONFIG_DIR, DWCP_CONFIG_KEY,
DWCP_METRICS_PORT, DWCP_METRICS_ADDRESS, POD_NAMESPACE.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from .errors import CliError

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "component",
        help="run a reference DWCP service (hde, pba, acp) under the canary SDK",
        description="Run the real HDE, PBA or ACP workload continuously: every unit of work is routed to the stable "
        "or the canary configuration of its ConfigMap and measured into per-variant Prometheus series.",
    )
    p.add_argument("name", choices=["hde", "pba", "acp"], help="which component")
    source = p.add_argument_group("configuration source")
    source.add_argument(
        "--config-dir",
        type=Path,
        help="mounted ConfigMap folder (files named by key) or a JSON file [$DWCP_CONFIG_DIR]",
    )
    source.add_argument(
        "--configmap", help="ConfigMap to watch through the API [$DWCP_CONFIGMAP, default <name>-config]"
    )
    source.add_argument("--namespace", "-n", help="its namespace [$POD_NAMESPACE, the pod's namespace, else default]")
    source.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster credentials, else $KUBECONFIG)")
    source.add_argument("--key", help="key of the stable configuration [$DWCP_CONFIG_KEY, default config.json]")
    source.add_argument(
        "--profile",
        type=Path,
        help="ParameterProfile YAML whose bounds validate the configuration (default: the built-in space)",
    )
    p.add_argument("--metrics-port", type=int, help="port of /metrics (0: none) [$DWCP_METRICS_PORT, default 9100]")
    p.add_argument(
        "--metrics-address",
        help="address /metrics listens on [$DWCP_METRICS_ADDRESS, default 127.0.0.1: this machine only; the chart "
        "sets 0.0.0.0 in a pod so Prometheus reaches it]",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    p.add_argument("--quick", action="store_true", help="smaller data (the size the operator's twins measure)")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="at most this many units of work per second (default 0: as fast as possible)",
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until SIGTERM)")
    p.add_argument("--link-mbps", type=float, default=100.0, help="hde: WAN link in Mbit/s (default 100)")
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(handler=run)


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return args.namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def build_source(args: argparse.Namespace, key: str):
    from ..sdk import DirectorySource, KubernetesSource

    if args.config_dir is not None:
        return DirectorySource(args.config_dir, key)
    configmap = args.configmap or os.environ.get("DWCP_CONFIGMAP") or f"{args.name}-config"
    credentials = bool(os.environ.get("KUBERNETES_SERVICE_HOST") or os.environ.get("KUBECONFIG"))
    api = lambda: KubernetesSource(_namespace(args), configmap, kubeconfig=args.kubeconfig)  # noqa: E731
    if args.configmap or args.kubeconfig or (os.environ.get("DWCP_CONFIGMAP") and credentials):
        return api()
    if os.environ.get("DWCP_CONFIG_DIR"):
        return DirectorySource(os.environ["DWCP_CONFIG_DIR"], key)
    if credentials:
        return api()
    raise CliError(
        "no configuration source: give --config-dir DIR, or --configmap NAME (with --kubeconfig, $KUBECONFIG or in a pod)"
    )


def run(args: argparse.Namespace) -> int:
    if args.rate < 0:
        raise CliError(f"--rate: must not be negative (got {args.rate})")
    if args.duration is not None and args.duration <= 0:
        raise CliError(f"--duration: must be greater than 0 (got {args.duration})")
    if args.link_mbps <= 0:
        raise CliError(f"--link-mbps: must be greater than 0 (got {args.link_mbps})")
    port = args.metrics_port
    if port is None:
        try:
            port = int(os.environ.get("DWCP_METRICS_PORT", "9100"))
        except ValueError:
            raise CliError(f"$DWCP_METRICS_PORT: not a port number ({os.environ['DWCP_METRICS_PORT']!r})") from None
    if not 0 <= port <= 65535:
        raise CliError(f"--metrics-port: must be a port number (got {port})")
    key = args.key or os.environ.get("DWCP_CONFIG_KEY") or "config.json"
    address = args.metrics_address or os.environ.get("DWCP_METRICS_ADDRESS") or "127.0.0.1"

    from ..models.builtin import BUILTIN_SPACES

    space = BUILTIN_SPACES[args.name]
    if args.profile is not None:
        import yaml
        from pydantic import ValidationError

        from ..sdk import space_from_profile
        from .errors import format_validation_error, not_yaml

        try:
            space = space_from_profile(args.profile)
        except OSError as error:
            raise CliError(f"--profile: cannot read {args.profile}: {error.strerror or error}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise CliError(f"--profile {args.profile}: {not_yaml(error)}") from None
        except ValidationError as error:
            raise CliError(f"--profile {args.profile}: {format_validation_error(error, 'spec')}") from None
        missing = [n for n in BUILTIN_SPACES[args.name].parameter_names if n not in space.parameter_names]
        if missing:
            raise CliError(f"--profile {args.profile}: lacks the {args.name} parameter(s) {', '.join(missing)}")
    source = build_source(args, key)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("dwcp_autotuner.components")

    from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server

    from ..components import ServiceLoop, make_component
    from ..sdk import ConfigFollower, SdkMetrics

    disable_created_metrics()
    registry = CollectorRegistry()
    options = {"link_mbps": args.link_mbps} if args.name == "hde" else {}
    component = make_component(args.name, registry, quick=args.quick, seed=args.seed, **options)
    follower = ConfigFollower(space, source, key=key, name=args.name, metrics=SdkMetrics(registry))
    loop = ServiceLoop(component, follower, registry, rate=args.rate)
    if port:
        try:
            start_http_server(port, addr=address, registry=registry)
        except OSError as error:
            raise CliError(
                f"--metrics-port {port} / --metrics-address {address}: cannot listen there ({error.strerror or error}); "
                "choose another port with --metrics-port, or 0 for none"
            ) from None
        log.info("%s: metrics on http://%s:%d/metrics", args.name, address, port)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    follower.start()
    if not follower.wait_ready(10):
        log.warning(
            "%s: no valid configuration after 10 s; running with %s until one arrives",
            args.name,
            dict(follower.snapshot().stable),
        )
    try:
        loop.run(stop, duration=args.duration)
    finally:
        follower.stop(timeout=1)
    log.info("%s: stopped after %d stable / %d canary units", args.name, loop.done["stable"], loop.done["canary"])
    return 0
