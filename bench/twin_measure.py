#!/usr/bin/env python
"""Twin measurement on one core vs every core, at equal work. (A script, not a test.)

    python bench/twin_measure.py                 # ACP, quick data, 3 seeds per grid point (as `tune --quick`)
    python bench/twin_measure.py --full --repeats 3

Measures the same twin (same space, workload, seeds) twice: one run at a time in this process, then spread over
`--processes` worker processes (default: every core this process may use), and prints both times, the speed-up
and whether the two twins are identical. Only workloads whose space reads no timing are measured in parallel by
`tune` and the operator; the table at the end says which, and why the others are not.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from dwcp_autotuner.cli.arguments import whole
from dwcp_autotuner.env.twin import measure_twin, twin_processes
from dwcp_autotuner.models.builtin import BUILTIN_SPACES
from dwcp_autotuner.workloads import make_workload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="acp", choices=sorted(BUILTIN_SPACES))
    parser.add_argument("--full", action="store_true", help="the full workload's data (default: quick)")
    parser.add_argument("--repeats", type=whole(1), default=3, help="seeds per grid point")
    parser.add_argument("--processes", type=whole(1), default=None, help="default: every core this process may use")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    space, workload = BUILTIN_SPACES[args.workload], make_workload(args.workload, quick=not args.full)
    allowed = twin_processes(space, workload)
    processes = args.processes or len(os.sched_getaffinity(0))
    if allowed == 1:
        print(
            f"note: {args.workload}'s space reads a timing ({', '.join(workload.timed_metrics)}); tune measures it "
            "serially. Timed here in parallel only to show the cost.",
            file=sys.stderr,
        )
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores here; other work shares them)")
    runs = space.grid_size() * args.repeats
    timings = {}
    twins = {}
    for count in (1, processes):
        started = time.perf_counter()
        twins[count] = measure_twin(space, workload, seed=args.seed, repeats=args.repeats, processes=count)
        timings[count] = time.perf_counter() - started
        print(f"{args.workload} twin, {runs} runs (+ noise points), {count} process(es): {timings[count]:.1f} s")
    same = np.array_equal(twins[1].means, twins[processes].means) and np.array_equal(
        twins[1].noise_cv, twins[processes].noise_cv
    )
    print(
        f"speed-up {timings[1] / timings[processes]:.2f}x on {processes} processes; "
        f"twins identical: {'yes' if same else 'NO (timings in the metrics)'}; "
        f"load average at end: {os.getloadavg()[0]:.2f}"
    )
    print("\nwho is measured in parallel (tune, worker Jobs):")
    for name, built in BUILTIN_SPACES.items():
        load = make_workload(name, quick=True)
        used = {t.metric for t in built.objective} | {c.metric for c in built.constraints}
        timed = sorted(set(load.timed_metrics) & used)
        print(f"  {name}: " + (f"serial (its space reads timings: {', '.join(timed)})" if timed else "every core"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
