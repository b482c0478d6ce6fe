#!/usr/bin/env python
"""How often a profile's guards would roll a canary back on noise: the real component, the real Prometheus.

The reference component runs with a fixed canary (`--canary`, JSON) at a fixed weight, Prometheus scrapes it
every second, and the run is cut into consecutive analyses of `--interval` seconds. Each analysis collects the
guard metrics exactly as the operator does (`controller/analysis.collect`: the profile's PromQL, both variants,
the operator's sample spacing) and evaluates every guard with `rollout/statistics.evaluate_guard`. Printed per
guard, over the same analyses: the mean degradation and its spread between analyses, how many the guard breached
(a one-sided margin test: worse by significantly more than `maxDegradationPct`) and left inconclusive, and how
many the earlier rule would have breached (worse at all, significantly, and the mean beyond the tolerance).

    python bench/guard_noise.py                                   # HDE's example proposal at 50 %, 5 minutes
    python bench/guard_noise.py --weight 25 --seconds 120 --json out/guard_noise.json

The default canary is the examples' HDE proposal that a closed-loop run rolled back on its compression-ratio
guard (2026-12-05): level 5, 64 KiB chunks, 256 KiB window, which compresses 6-8 % worse than the default
over the component's data, within the guard's 10 %.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO))

from dwcp_autotuner.canary.protocol import CANARY_KEY, CANARY_REVISION_KEY, CANARY_WEIGHT_KEY  # noqa: E402
from dwcp_autotuner.cli.arguments import positive, whole  # noqa: E402
from dwcp_autotuner.controller.analysis import collect  # noqa: E402
from dwcp_autotuner.models.profile import ParameterProfileSpec  # noqa: E402
from dwcp_autotuner.models.run import RolloutSettings, sample_seconds  # noqa: E402
from dwcp_autotuner.ports.prometheus import PrometheusMetrics  # noqa: E402
from dwcp_autotuner.rollout.statistics import evaluate_guard  # noqa: E402
from tests.support.prometheus import free_port, prometheus_available, running_prometheus  # noqa: E402

HDE_PROPOSAL = {"compression_level": 5, "chunk_size": 65536, "window_size": 262144}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--component", default="hde", choices=["hde", "pba", "acp"])
    parser.add_argument("--canary", type=json.loads, default=HDE_PROPOSAL, help="the canary's configuration (JSON)")
    parser.add_argument("--weight", type=int, default=50, help="canary weight in percent (1-99)")
    parser.add_argument("--seconds", type=positive, default=300.0, help="how long to measure")
    parser.add_argument("--interval", type=positive, default=10.0, help="seconds per analysis (the run's interval)")
    parser.add_argument("--min-samples", type=whole(1), default=3, help="rollout.minSamples")
    parser.add_argument("--rate", type=positive, default=100.0, help="the component's units of work per second")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not 1 <= args.weight <= 99:
        raise SystemExit("--weight: between 1 and 99 (both variants must get work)")
    if not prometheus_available():
        raise SystemExit("no Prometheus binary (apt-get install prometheus, or set DWCP_TEST_PROMETHEUS)")
    profile_doc = yaml.safe_load((REPO / "examples" / f"{args.component}-profile.yaml").read_text())
    profile = ParameterProfileSpec.model_validate(profile_doc["spec"])
    if not profile.guards:
        raise SystemExit(f"the {args.component} example profile has no guards")
    rollout = RolloutSettings.model_validate({"analysisIntervalSeconds": args.interval, "minSamples": args.min_samples})
    step = sample_seconds(rollout)
    stable = {p.name: p.default for p in profile.parameters}
    if not isinstance(args.canary, dict):
        raise SystemExit(f"--canary: expected a JSON object of parameter values, e.g. {json.dumps(stable)}")
    try:  # a typo in a key or a value out of bounds would canary the stable configuration: nothing to measure
        canary = profile.coerce_config(args.canary)
    except ValueError as error:
        raise SystemExit(f"--canary: {error}") from None

    with tempfile.TemporaryDirectory(prefix="guard-noise-") as tmp:
        folder = Path(tmp)  # a mounted ConfigMap, as the component reads one
        (folder / "config.json").write_text(json.dumps(stable))
        (folder / CANARY_KEY).write_text(json.dumps(canary))
        (folder / CANARY_WEIGHT_KEY).write_text(str(args.weight))
        (folder / CANARY_REVISION_KEY).write_text("bench-1")
        port = free_port()
        with running_prometheus([f"127.0.0.1:{port}"], scrape_interval="1s") as prometheus:
            command = [
                sys.executable,
                "-m",
                "dwcp_autotuner.cli.main",
                "component",
                args.component,
                "--config-dir",
                str(folder),
            ]
            command += ["--metrics-port", str(port), "--quick", "--seed", "1", "--rate", str(args.rate)]
            env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
            component = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                time.sleep(15)  # the component's first units and two scrapes
                if component.poll() is not None:
                    raise SystemExit(f"the component stopped: {component.stderr.read().decode()[-2000:]}")
                start = time.time()
                print(f"{args.component}: canary {json.dumps(canary)} at {args.weight} %, {args.seconds:.0f} s")
                time.sleep(args.seconds)
                source = PrometheusMetrics(prometheus.url)
                checks: dict[str, list] = {g.metric: [] for g in profile.guards}
                t = start
                while t + args.interval <= start + args.seconds:
                    window = [dt.datetime.fromtimestamp(x, dt.UTC) for x in (t, t + args.interval)]
                    _, guards, _ = collect(profile, source, *window, step)
                    for limit, samples in guards:
                        checks[limit.metric].append(evaluate_guard(limit, samples, rollout))
                    t += args.interval
            finally:
                component.terminate()
                component.wait(timeout=30)

    results = {}
    print(f"load average {os.getloadavg()[0]:.2f}; {len(next(iter(checks.values())))} analyses of {args.interval:g} s")
    print(f"{'guard':<22}{'tolerance':>10}{'degradation':>22}{'breached':>10}{'inconclusive':>14}{'earlier rule':>14}")
    for limit in profile.guards:
        found = checks[limit.metric]
        degradation = np.array([c.degradation_pct for c in found if c.degradation_pct is not None])
        earlier = sum(
            c.p_value_worse is not None
            and c.p_value_worse < rollout.significance
            and (c.degradation_pct or 0.0) > limit.max_degradation_pct
            for c in found
        )
        row = {
            "analyses": len(found),
            "degradation_mean": float(degradation.mean()) if degradation.size else None,
            "degradation_sd": float(degradation.std(ddof=1)) if degradation.size > 1 else None,
            "breached": sum(c.status == "Breached" for c in found),
            "inconclusive": sum(c.status == "Inconclusive" for c in found),
            "earlier_rule_breached": int(earlier),
        }
        results[limit.metric] = row
        spread = (
            f"{row['degradation_mean']:+.1f} % ± {row['degradation_sd']:.1f}"
            if row["degradation_sd"] is not None
            else "n/a"
        )
        print(
            f"{limit.metric:<22}{limit.max_degradation_pct:>9g}%{spread:>22}{row['breached']:>10}"
            f"{row['inconclusive']:>14}{row['earlier_rule_breached']:>14}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {**vars(args), "json": str(args.json)}, "guards": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
