"""`dwcp-autotuner tune`: flags, validation into one-line errors, progress bars, the report."""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..models.builtin import BUILTIN_SPACES
from ..models.profile import ParameterProfileSpec
from ..models.space import TuningSpace
from .errors import EXIT_INTERRUPTED, CliError, format_validation_error, not_yaml

# Agent settings fields that have a flag of their own, so errors name the flag the user typed.
FLAG_OF_FIELD = {
    "episodes": "--episodes",
    "steps_per_episode": "--steps",
    "stepsPerEpisode": "--steps",
    "epsilon_decay": "--epsilon-decay",
    "epsilonDecay": "--epsilon-decay",
    "seed": "--seed",
    "learning_rate": "--learning-rate",
    "learningRate": "--learning-rate",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="tune the reference DWCP components on this machine and write a report",
        description=(
            "Measure each component's response surface with its real workload (cached), pretrain a DQN agent on it, "
            "propose a tuned configuration, verify it against the default on fresh real runs, and write a report."
        ),
    )
    p.add_argument(
        "--components", default="hde,pba,acp", help="comma-separated components to tune (default: hde,pba,acp)"
    )
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="ParameterProfile YAML replacing a built-in space (its spec.twin names the component); repeatable",
    )
    p.add_argument("--quick", action="store_true", help="small budget and data: about 2 minutes")
    p.add_argument("--episodes", type=int, help="training episodes (default 1000; quick 150)")
    p.add_argument("--steps", type=int, help="steps per episode (default 500; quick 120)")
    p.add_argument("--epsilon-decay", type=float, help="epsilon multiplier per episode (default 0.995; quick 0.97)")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate (default 0.001)")
    p.add_argument("--seed", type=int, default=0, help="seed of workloads, twins and agent (default 0)")
    p.add_argument(
        "--output", "-o", type=folder, default=Path("tune-report"), help="report folder (default ./tune-report)"
    )
    p.add_argument("--link-mbps", type=float, default=100.0, help="WAN link bandwidth for HDE, Mbit/s (default 100)")
    p.add_argument("--verify-samples", type=int, help="real runs per variant in verification (default 20; quick 10)")
    p.add_argument(
        "--significance", type=float, default=0.001, help="p-value a verified improvement must beat (default 0.001)"
    )
    p.add_argument("--cache-dir", type=folder, help="where measured twins are cached (default ~/.cache/dwcp-autotuner)")
    p.set_defaults(handler=run)


def folder(text: str) -> Path:
    """A folder argument: an empty string is not "the current folder" by accident."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder (got an empty string)")
    return Path(text)


def check_writable(flag: str, path: Path) -> None:
    """Fail before any work when `path` (a folder, created if missing) cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".dwcp-write-check-"):
            pass
    except OSError as error:
        raise CliError(f"{flag}: cannot write to {path} ({error.strerror or error})") from None


def load_profile_file(path: Path) -> tuple[str, ParameterProfileSpec]:
    """A ParameterProfile manifest (or a bare spec) -> (component name, spec); errors name file and field."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise CliError(f"--profile {path}: {error.strerror or error}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CliError(f"--profile {path}: {not_yaml(error)}") from None
    if not isinstance(document, dict):
        raise CliError(f"--profile {path}: expected a mapping (a ParameterProfile manifest)")
    prefix = ""
    if "kind" in document or "spec" in document:
        if document.get("kind") not in (None, "ParameterProfile"):
            raise CliError(f"--profile {path}: kind is {document.get('kind')!r}, expected ParameterProfile")
        document, prefix = document.get("spec"), "spec"
        if not isinstance(document, dict):
            raise CliError(f"--profile {path}: spec: expected a mapping")
    try:
        spec = ParameterProfileSpec.model_validate(document)
    except ValidationError as error:
        raise CliError(f"{path}: {format_validation_error(error, prefix)}") from None
    if spec.twin is None:
        raise CliError(f"{path}: {prefix + '.' if prefix else ''}twin: required by tune (one of hde, pba, acp)")
    return spec.twin, spec


def resolve_spaces(components_flag: str, profile_files: list[Path]) -> dict[str, TuningSpace]:
    names = [n.strip() for n in components_flag.split(",")]
    if not any(names):
        raise CliError("--components: name at least one of hde, pba, acp")
    if not all(names):
        raise CliError(f"--components: {components_flag!r} has an empty name (two commas, or one at an end)")
    unknown = [n for n in names if n not in BUILTIN_SPACES]
    if unknown:
        raise CliError(f"--components: unknown component {unknown[0]!r} (known: {', '.join(BUILTIN_SPACES)})")
    if len(set(names)) != len(names):
        raise CliError("--components: a component is named twice")
    spaces: dict[str, TuningSpace] = {n: BUILTIN_SPACES[n] for n in names}
    for path in profile_files:
        name, spec = load_profile_file(path)
        if name not in spaces:
            raise CliError(f"{path}: spec.twin is {name!r}, which is not in --components ({', '.join(names)})")
        spaces[name] = spec.tuning_space()
    return spaces


def build_options(args: argparse.Namespace):
    from ..models.agent import AgentSettings
    from ..rollout.statistics import AnalysisSettings
    from ..tuning.presets import DEFAULT, QUICK

    budget = QUICK if args.quick else DEFAULT
    spaces = resolve_spaces(args.components, args.profile)
    agent_fields = {
        "episodes": args.episodes if args.episodes is not None else budget.episodes,
        "steps_per_episode": args.steps if args.steps is not None else budget.steps_per_episode,
        "epsilon_decay": args.epsilon_decay if args.epsilon_decay is not None else budget.epsilon_decay,
        "seed": args.seed,
    }
    if args.learning_rate is not None:
        agent_fields["learning_rate"] = args.learning_rate
    try:
        agent = AgentSettings(**agent_fields)
    except ValidationError as error:
        raise CliError(format_validation_error(error, aliases=FLAG_OF_FIELD)) from None
    try:
        analysis = AnalysisSettings(significance=args.significance)
    except ValidationError as error:
        raise CliError(format_validation_error(error, aliases={"significance": "--significance"})) from None
    if not (math.isfinite(args.link_mbps) and args.link_mbps > 0):
        raise CliError(f"--link-mbps: must be a finite number greater than 0 (got {args.link_mbps})")
    verify = args.verify_samples if args.verify_samples is not None else budget.verify_samples
    if verify < 3:
        raise CliError(f"--verify-samples: at least 3 runs per variant are needed (got {verify})")
    if args.output.exists() and not args.output.is_dir():
        raise CliError(f"--output: {args.output} exists and is not a folder")
    check_writable("--output", args.output)
    from ..env.twin import default_cache_dir

    check_writable(
        "--cache-dir" if args.cache_dir else "the twin cache (--cache-dir)", args.cache_dir or default_cache_dir()
    )
    analysis = analysis.model_copy(update={"min_samples": min(analysis.min_samples, verify)})
    from ..tuning.pipeline import TuneOptions  # imports torch: only once the input is known to be good

    return TuneOptions(
        spaces=spaces,
        agent=agent,
        seed=args.seed,
        quick=budget.quick_workloads,
        link_mbps=args.link_mbps,
        verify_samples=verify,
        twin_repeats=budget.twin_repeats,
        analysis=analysis,
        output=args.output,
        cache_dir=args.cache_dir,
    )


class RichProgress:
    """Progress bars on stderr (stdout stays for the summary).

    Rich draws no live bars when stderr is not a terminal (a CI log, a pipe, `kubectl logs`), which
    would leave a twelve-minute run silent; there each task prints a plain line when it starts, at
    most every `line_seconds` while it runs, and when it completes.
    """

    def __init__(self, line_seconds: float = 30.0) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.plain = not self.console.is_terminal
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=self.plain,  # the plain lines below instead of a last, bar-less frame
        )
        self.tasks: dict[str, int] = {}
        self.line_seconds = line_seconds
        self._last_line: dict[str, float] = {}

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def start(self, task: str, description: str, total: int) -> None:
        self.tasks[task] = self.bars.add_task(description, total=total, info="")
        if self.plain:
            self._last_line[task] = time.monotonic()
            self.console.print(f"{description}: started ({total} to do)", highlight=False, soft_wrap=True)

    def advance(self, task: str, completed: int, info: str = "", total: int | None = None) -> None:
        self.bars.update(self.tasks[task], completed=completed, info=info, total=total)
        if self.plain:
            state = self.bars.tasks[self.tasks[task]]
            done = state.total is not None and completed >= state.total
            if done or time.monotonic() - self._last_line.get(task, 0.0) >= self.line_seconds:
                self._last_line[task] = time.monotonic()
                elapsed = state.elapsed or 0.0
                line = f"{state.description}: {completed}/{state.total:g} after {elapsed:.0f} s" + (
                    f"  {info}" if info else ""
                )
                self.console.print(line, highlight=False, soft_wrap=True)

    def finish(self, task: str) -> None:
        pass

    def log(self, message: str) -> None:
        if self.plain:  # no time column and source path in a log file
            self.console.print(message, highlight=False, soft_wrap=True)
        else:
            self.bars.console.log(message)


def run(args: argparse.Namespace) -> int:
    options = build_options(args)
    from ..tuning.pipeline import run_tune
    from ..tuning.report import write_report

    started = time.perf_counter()
    with RichProgress() as progress:
        result = run_tune(options, progress)
    data = write_report(result)
    print_summary(data, options.output, time.perf_counter() - started)
    return EXIT_INTERRUPTED if result.status == "interrupted" else 0


def print_summary(data: dict, output: Path, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log or a pipe has no width: never cut a configuration short
        console = Console(width=160)
    table = Table(title=f"dwcp-autotuner tune: {data['status']} in {seconds:.0f} s")
    for column in ("component", "tuned configuration", "improvement", "p-value", "verdict", "of twin optimum"):
        table.add_column(column)
    for name, comp in data["components"].items():
        tuned = comp["tuned"]["config"]
        imp, frac, p = comp["improvement_pct"], comp["fraction_of_optimum"], comp["p_value"]
        table.add_row(
            name,
            "–" if not tuned else "\n".join(f"{k}={v}" for k, v in tuned.items()),
            "–" if imp is None else f"{imp:+.1f} %",
            "–" if p is None else f"{p:.2g}",
            (comp["verdict"] or {}).get("reason", "–"),
            "–" if frac is None else f"{frac * 100:.1f} %",
        )
    console.print(table)
    console.print(f"Report: {output / 'report.md'} (machine-readable: {output / 'report.json'})")
    if data["status"] == "interrupted":
        print(
            f"interrupted: partial report written; checkpoint {data.get('checkpoint') or 'not yet created'}",
            file=sys.stderr,
        )
