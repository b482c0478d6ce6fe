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

from .errors import CliError


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
    from ..handlers.runtime import make_api_client
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

    configs = KubernetesConfigStore(kubernetes.client.CoreV1Api(make_api_client(args.kubeconfig)))
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
            logging.exception("the %s job failed", args.job)
            text = f"{type(error).__name__}: {error}"[:2000]
            configs.put_binary(namespace, name, {}, data={ERROR_KEY: text}, owner=None, labels=WORKER_LABELS)
            print(f"dwcp-autotuner worker {args.job}: {text}", file=sys.stderr)
            return 1
    configs.put_binary(namespace, name, binary, data={"done": "true"}, owner=None, labels=WORKER_LABELS)
    return 0
