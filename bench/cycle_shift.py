#!/usr/bin/env python
"""A continuous run's next cycle after the workload shifted, against a new run on the shifted workload.

Each case drives the real controller (`reconcile`, the local adapters, `bench/live_tuning.py`'s simulated live
system and clock) with `spec.continuous.enabled`: the run tunes the component on its nominal workload until it
finishes; then the live workload shifts (`--shift`, the workload's own option names) and a trigger starts the next
cycle of the same run, with the same proposer and what it learned (a Schedule trigger: a shift that raises the
score fires neither Degradation nor, without workload metrics, WorkloadShift). That cycle runs until it finishes or
`--budget` canaries. Beside it, at equal canaries, a new run (a new proposer, nothing stored) on the shifted workload
from the same stable configuration. Printed per shift and method, mean over `--seeds`: the fraction of the shifted
workload's optimum where each ends, the canaries it ran and the harmful ones (truly worse than the stable one).

    python bench/cycle_shift.py                                   # five shifts, three seeds, ~2 min
    python bench/cycle_shift.py --seeds 61,62,63,64,65 --methods ours_no_dqn,ours_no_dqn_twin_prior
    python bench/cycle_shift.py --shift hde.link_mbps=1000 --seeds 1,2,3,4 --json out/cycle_shift.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent / "operator")]

import live_tuning as lt  # noqa: E402

from dwcp_autotuner.cli.arguments import names, whole  # noqa: E402

SHIFTS = [
    "hde.link_mbps=1000",
    "hde.dirty_fraction=0.2",
    "acp.arrival_rps=200",
    "acp.loss=0.05",
    "pba.trend_damping=0.9",
]
FINISHED = ("Succeeded", "RolledBack", "Failed", "Unchanged")


def _drive(live, spec, proposer, store, status, now, canaries: int, *, until_cycle=None, finish=True, steps=900):
    """Reconcile until `canaries` canaries, the run finishes (in cycle ≥ `until_cycle`), or `steps` intervals."""
    trace, last = [], max((r.number for r in status.history), default=0)
    metrics, events, profiles = live.metrics(), lt.RecordingEvents(), {"live": live.profile()}
    for _ in range(steps):
        now += dt.timedelta(seconds=lt.INTERVAL + 1)
        ctx = lt.RunContext("tune", lt.NS, "uid", 1, spec, status, profiles, now)
        status = lt.reconcile(ctx, lt.Ports(store, metrics, events, proposer))
        for record in [r for r in status.history if r.number > last]:
            last = record.number
            if record.verdict in ("Promoted", "RolledBack") and record.stable_config is not None:
                harmful = live.score(record.config) < live.score(record.stable_config) - 1e-12
                trace.append((live.fraction(live.config("stable")), harmful))
        if len(trace) >= canaries:
            break
        if until_cycle is not None and not finish and status.cycle >= until_cycle:
            break
        if finish and status.phase in FINISHED and status.cycle >= (until_cycle or 0):
            break
    return status, now, trace


def run_case(case: tuple[str, str, int, str, int]) -> dict:
    component, method, seed, shift, budget = case
    nominal, prior = lt.twins_for(component, {}, True, None, method.endswith("twin_prior"))
    shifted, _ = lt.twins_for(component, lt.parse_shifts([shift], [component]).get(component, {}), True, None, False)
    out = {}
    for mode in ("next_cycle", "new_run"):
        folder = Path(tempfile.mkdtemp(prefix="cycle-shift-"))
        store = lt.FileConfigStore(folder)
        live = lt.Live(component, nominal, store, seed)
        store.put(lt.NS, lt.CM, {"config.json": lt.canonical_json(nominal.space.default_config())})
        spec = lt.run_spec(seed, budget, None, None)
        watching = spec.continuous.model_copy(
            update={"enabled": True, "check_interval_seconds": lt.INTERVAL * 3, "window_seconds": lt.INTERVAL * 12}
        )
        spec = spec.model_copy(update={"continuous": watching})
        proposer = lt.make_proposer(method, seed, prior, spec)
        status, now = lt.RunStatus(), dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        status, now, _ = _drive(live, spec, proposer, store, status, now, budget)
        live.twin = shifted  # the workload shifts
        before = []
        if mode == "new_run":
            proposer.close()
            proposer, status = lt.make_proposer(method, seed + 1000, prior, spec), lt.RunStatus()
        else:  # a schedule trigger starts the next cycle of the same run
            schedule = spec.continuous.model_copy(update={"schedule_seconds": lt.INTERVAL * 3})
            scheduled = spec.model_copy(update={"continuous": schedule})
            status, now, before = _drive(
                live, scheduled, proposer, store, status, now, budget, until_cycle=status.cycle + 1, finish=False
            )
        status, now, after = _drive(
            live, spec, proposer, store, status, now, budget - len(before), until_cycle=status.cycle
        )
        trace = before + after
        start = live.fraction(live.config("stable")) if not trace else None
        out[mode] = {
            "fraction": trace[-1][0] if trace else start,
            "canaries": len(trace),
            "harmful": int(sum(h for _, h in trace)),
            "ended": str(status.message or "")[:200],
        }
        proposer.close()
        shutil.rmtree(folder, ignore_errors=True)
    return {"case": list(case), **out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift", action="append", help="COMPONENT.OPTION=VALUE (repeatable; default: five)")
    parser.add_argument("--seeds", default="61,62,63")
    parser.add_argument(
        "--methods",
        type=names(lt.METHODS + lt.EXTRA_METHODS),
        default="ours_no_dqn",
        help="comma-separated live_tuning methods (default: the learned twin without the planner, which adds nothing "
        "measured and plans after every verdict and hold: `ours` took over 20 min for the default cases)",
    )
    parser.add_argument("--budget", type=whole(1), default=20, help="canaries the cycle (and the new run) may use")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        raise SystemExit(f"--seeds: a comma-separated list of integers, not {args.seeds!r}") from None
    shifts = args.shift or SHIFTS
    for shift in shifts:
        component = shift.split(".", 1)[0]
        if component not in ("hde", "pba", "acp"):
            raise SystemExit(f"--shift: COMPONENT.OPTION=VALUE with COMPONENT one of hde, pba, acp, not {shift!r}")
        lt.parse_shifts([shift], [component])  # a malformed flag, an unknown option, a value out of range: one line
    cases = [(s.split(".")[0], m, seed, s, args.budget) for s in shifts for m in args.methods for seed in seeds]
    logging.disable(logging.CRITICAL)
    print(f"{len(cases)} cases (shift x method x seed), each a run to its end then the shifted cycle and a new run")
    with Pool(2) as pool:
        results = pool.map(run_case, cases, chunksize=1)
    print(f"{'shift':28s}{'method':24s}{'after the shift':>16s}{'fraction':>10s}{'canaries':>10s}{'harmful':>9s}")
    summary = {}
    for shift in shifts:
        for method in args.methods:
            rows = [r for r in results if r["case"][3] == shift and r["case"][1] == method]
            for mode in ("next_cycle", "new_run"):
                f = [r[mode]["fraction"] for r in rows]
                n = [r[mode]["canaries"] for r in rows]
                h = [r[mode]["harmful"] for r in rows]
                summary.setdefault(shift, {}).setdefault(method, {})[mode] = {
                    "fraction_mean": round(float(np.mean(f)), 4),
                    "fraction_min": round(float(np.min(f)), 4),
                    "canaries": round(float(np.mean(n)), 2),
                    "harmful": round(float(np.mean(h)), 2),
                }
                label = "next cycle" if mode == "next_cycle" else "new run"
                print(f"{shift:28s}{method:24s}{label:>16s}{np.mean(f):10.3f}{np.mean(n):10.1f}{np.mean(h):9.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": summary, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
