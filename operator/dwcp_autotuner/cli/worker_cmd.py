"""`dwcp-autotuner worker twin|pretrain`: one heavy job, as a Kubernetes Job runs it (proposers/workers.py).

The operator creates the Job (its own image, this command) and an empty result ConfigMap owned by it; the worker
does the job and writes the result there (`result`: the twin; `checkpoint`: the trained DQN), or its error
(`error`) and exits 1 so the Job fails with it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from .errors import CliError, format_validation_error


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run one heavy job (what the operator's worker Jobs run)")
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    for name, text in (("twin", "measure a profile's twin"), ("pretrain", "measure the twin and pretrain a DQN")):
        job = jobs.add_parser(name, help=text)
        job.add_argument("--profile-json", required=True, help="the ParameterProfile spec, as JSON")
        job.add_argument("--result", required=True, metavar="NAMESPACE/NAME", help="the ConfigMap the result goes to")
        job.add_argument("--quick", action="store_true", help="the quick workload data (what the operator uses)")
        job.add_argument("--cache-dir", help="where twins are cached (default: a temporary folder)")
        job.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster credentials, else $KUBECONFIG)")
        if name == "twin":
            job.add_argument("--seed", type=int, default=0)
            job.add_argument(
                "--conditions-json", help="workload options to measure it under instead of the defaults, as JSON"
            )
        else:
            job.add_argument("--name", required=True, help="the profile's name")
            job.add_argument("--settings-json", required=True, help="the run's spec.agent, as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..handlers.runtime import make_api_client
    from ..ports.base import Conflict, Foreign, NotFound, Unavailable
    from ..ports.kubernetes import KubernetesConfigStore
    from ..proposers.workers import (
        CHECKPOINT_KEY,
        ERROR_KEY,
        RESULT_KEY,
        WORKER_LABELS,
        measure_twin_job,
        pretrain_job,
    )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    namespace, _, name = args.result.partition("/")
    if not namespace or not name:
        raise CliError(f"--result: expected NAMESPACE/NAME (got {args.result!r})")
    try:
        profile = json.loads(args.profile_json)
        settings = json.loads(args.settings_json) if args.job == "pretrain" else None
        conditions = json.loads(args.conditions_json) if getattr(args, "conditions_json", None) else None
    except ValueError as error:
        raise CliError(f"--profile-json/--settings-json/--conditions-json: not JSON ({error})") from None
    import kubernetes

    try:
        client = make_api_client(args.kubeconfig)
    except (kubernetes.config.ConfigException, OSError) as error:
        raise CliError(f"no cluster to write the result to: {' '.join(str(error).split())}") from None
    configs = KubernetesConfigStore(kubernetes.client.CoreV1Api(client))

    def put(binary: dict[str, bytes], data: dict[str, str]) -> None:
        """Write the result (or the job's error); where that fails, say so in one line: the operator then sees
        the Job fail without a result and records that."""
        try:
            configs.put_binary(namespace, name, binary, data=data, owner=None, labels=WORKER_LABELS)
        except (Unavailable, Conflict, NotFound, Foreign) as error:
            raise CliError(f"--result {namespace}/{name}: cannot write the result there ({error})") from None

    with tempfile.TemporaryDirectory(prefix="worker-") as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        try:
            if args.job == "twin":
                twin = measure_twin_job(profile, args.seed, cache, args.quick, conditions)
                if twin is None:
                    raise ValueError("the profile has no spec.twin to measure")
                binary = {RESULT_KEY: twin.to_bytes()}
            else:
                checkpoint, twin = pretrain_job(
                    args.name,
                    profile,
                    settings,
                    cache,
                    args.quick,
                    str(Path(tmp) / "progress"),
                    str(Path(tmp) / "stop"),
                )
                binary = {RESULT_KEY: twin.to_bytes(), CHECKPOINT_KEY: checkpoint}
        except Exception as error:
            if isinstance(error, ValidationError):  # a spec it cannot use: which field, in one line
                text = f"--profile-json/--settings-json: {format_validation_error(error, 'spec')}"[:2000]
            else:  # anything else may be a bug: the traceback too, for its report
                logging.exception("the %s job failed", args.job)
                text = f"{type(error).__name__}: {error}"[:2000]
            print(f"dwcp-autotuner worker {args.job}: {text}", file=sys.stderr)
            put({}, {ERROR_KEY: text})
            return 1
    put(binary, {"done": "true"})
    return 0
