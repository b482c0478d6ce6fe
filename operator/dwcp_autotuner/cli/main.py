"""`dwcp-autotuner` command line: argument parsing only; the work lives in the layers below."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .errors import EXIT_USAGE, CliError


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; people scanning a CI log want one line naming the flag."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dwcp-autotuner",
        description="Keeps the runtime parameters of distributed services tuned (DQN agent + canary rollouts).",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"dwcp-autotuner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    from . import component_cmd, operator_cmd, tune, worker_cmd

    tune.add_parser(sub)
    component_cmd.add_parser(sub)
    operator_cmd.add_parser(sub)
    worker_cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except CliError as error:
        print(f"dwcp-autotuner {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:
        if os.environ.get("DWCP_AUTOTUNER_DEBUG"):
            raise
        print(
            f"dwcp-autotuner {args.command}: internal error: {type(error).__name__}: {error} "
            "(set DWCP_AUTOTUNER_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
