"""Measure a reference workload over its built-in space's full grid and summarise the score surface.

    python bench/workload_surface.py --workload hde [--quick] [--seed 0] [--repeat 3]
                                     [--option link_mbps=50] [--save out/hde.json | --load out/hde.json]

Prints the time per run, the best configuration and its score, the default's score, which
parameters sit at a bound at the optimum, the score range over the grid, and per parameter the
score range when only that parameter varies around the optimum. `--repeat N` averages each grid
point's metrics over N seeds (timings then include N runs per point). The baseline of the score
(relative constraints) is the default configuration's metrics, as in a real tuning run.
`--save` keeps the measured metrics so that objective weights can be recalibrated with `--load`
without measuring again.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

from dwcp_autotuner.cli.arguments import whole
from dwcp_autotuner.models.builtin import BUILTIN_SPACES
from dwcp_autotuner.workloads import make_workload


def _parse_option(text: str) -> tuple[str, object]:
    key, _, raw = text.partition("=")
    if not key or not _:
        raise argparse.ArgumentTypeError(f"--option needs key=value, got {text!r}")
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def measure(name: str, quick: bool, seed: int, repeat: int, options: dict) -> dict:
    space = BUILTIN_SPACES[name]
    workload = make_workload(name, quick=quick, **options)
    names = space.parameter_names
    grids = [p.grid() for p in space.parameters]
    seeds = list(range(seed, seed + repeat))
    for s in seeds:
        workload.run(space.default_config(), s)  # warm caches (snapshot / trace generation)
    rows = []
    for values in itertools.product(*grids):
        config = dict(zip(names, values))
        runs, seconds = [], []
        for s in seeds:
            t0 = time.perf_counter()
            runs.append(workload.run(config, s))
            seconds.append(time.perf_counter() - t0)
        metrics = {m: statistics.fmean(r[m] for r in runs) for m in workload.metric_names}
        rows.append({"config": config, "metrics": metrics, "seconds": seconds})
    return {
        "workload": name,
        "quick": quick,
        "seed": seed,
        "repeat": repeat,
        "options": workload.options(),
        "rows": rows,
    }


def summarise(data: dict) -> None:
    space = BUILTIN_SPACES[data["workload"]]
    names = space.parameter_names
    rows = data["rows"]
    default = space.default_config()
    key = lambda config: tuple(config[n] for n in names)  # noqa: E731
    by_key = {key(r["config"]): r for r in rows}
    baseline = by_key[key(default)]["metrics"]
    scores = {key(r["config"]): space.score(r["metrics"], baseline) for r in rows}

    times = sorted(t for r in rows for t in (r["seconds"] if isinstance(r["seconds"], list) else [r["seconds"]]))
    repeat = data.get("repeat", 1)
    seeds = (
        f"seeds {data['seed']}..{data['seed'] + repeat - 1} (metrics averaged)"
        if repeat > 1
        else f"seed {data['seed']}"
    )
    print(f"workload {data['workload']}  quick={data['quick']}  {seeds}  grid={len(rows)} points")
    print(f"options  {json.dumps(data['options'], sort_keys=True)}")
    print(
        f"time/run median {statistics.median(times) * 1e3:.1f} ms  p90 {times[int(0.9 * (len(times) - 1))] * 1e3:.1f} ms  "
        f"max {times[-1] * 1e3:.1f} ms  total {sum(times):.1f} s"
    )
    best = max(scores, key=scores.get)
    best_config = dict(zip(names, best))
    default_score = scores[key(default)]
    print(f"optimum  {best_config}  score {scores[best]:.4f}")
    below = (1 - default_score / scores[best]) * 100 if scores[best] else float("nan")
    print(f"default  {default}  score {default_score:.4f}  ({below:.1f}% below optimum)")
    print(
        f"score over grid: min {min(scores.values()):.4f}  max {scores[best]:.4f}  "
        f"non-positive points {sum(1 for s in scores.values() if s <= 0)}"
    )
    at_bound = [p.name for p, v in zip(space.parameters, best) if v in (p.grid()[0], p.grid()[-1])]
    print(
        f"at a bound at the optimum: {', '.join(at_bound) if at_bound else 'none'}"
        f"  (interior: {', '.join(n for n in names if n not in at_bound) or 'none'})"
    )
    print("optimum metrics:", {k: round(v, 4) for k, v in by_key[best]["metrics"].items()})
    print("default metrics:", {k: round(v, 4) for k, v in baseline.items()})
    print("top 5:")
    for k in sorted(scores, key=scores.get, reverse=True)[:5]:
        print(f"  {dict(zip(names, k))}  {scores[k]:.4f}")
    print("sensitivity (vary one parameter, others at the optimum):")
    for i, p in enumerate(space.parameters):
        line = []
        values = []
        for v in p.grid():
            k = best[:i] + (v,) + best[i + 1 :]
            values.append(scores[k])
            line.append(f"{v}:{scores[k]:.3f}")
        print(f"  {p.name:<22} range {max(values) - min(values):.4f}   " + " ".join(line))
    print(
        "objective terms at the optimum:",
        {
            t.metric: round(
                (1 if t.goal == "maximize" else -1) * t.weight * by_key[best]["metrics"][t.metric] / t.scale, 4
            )
            for t in space.objective
        },
        " penalty",
        round(space.penalty(by_key[best]["metrics"], baseline), 4),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(BUILTIN_SPACES), required=True)
    parser.add_argument("--quick", action="store_true", help="the quick preset's smaller data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=whole(1), default=1, help="average the metrics over this many seeds (seed, seed+1, …)"
    )
    parser.add_argument(
        "--option",
        type=_parse_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="workload option (JSON value), e.g. link_mbps=50",
    )
    parser.add_argument("--save", type=Path, help="write the measured metrics to this JSON file")
    parser.add_argument("--load", type=Path, help="summarise metrics saved earlier instead of measuring")
    args = parser.parse_args(argv)
    if args.load:
        data = json.loads(args.load.read_text())
        for r in data["rows"]:
            r["config"] = {k: v for k, v in r["config"].items()}
    else:
        try:  # building one is cheap (its data is made on first run) and checks what the workload itself checks
            make_workload(args.workload, quick=True, **dict(args.option))
        except (TypeError, ValueError) as error:
            raise SystemExit(f"--option: {error}") from None
        data = measure(args.workload, args.quick, args.seed, args.repeat, dict(args.option))
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_text(json.dumps(data))
    summarise(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
