"""argparse value types that say what they expect: a bad flag is argparse's one-line usage error naming the flag,
never a traceback or a run that measures nothing (`--rounds 0`, `--components foo`). The bench scripts use them too.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable

__all__ = ["names", "positive", "whole", "wholes"]


def whole(least: int) -> Callable[[str], int]:
    """A whole number of `least` or more."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number of {least} or more, not {text!r}")
        return value

    return parse


def wholes(least: int) -> Callable[[str], list[int]]:
    """One or more whole numbers of `least` or more, separated by commas (e.g. 5,10,20)."""
    one = whole(least)

    def parse(text: str) -> list[int]:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        try:
            if parts:
                return [one(part) for part in parts]
        except argparse.ArgumentTypeError:
            pass
        raise argparse.ArgumentTypeError(
            f"expected whole numbers of {least} or more separated by commas (e.g. {least},{least + 1}), not {text!r}"
        )

    return parse


def positive(text: str) -> float:
    """A finite number greater than 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number greater than 0, not {text!r}")
    return value


def names(known: Iterable[str]) -> Callable[[str], list[str]]:
    """One or more of `known`, separated by commas."""
    choices = tuple(known)

    def parse(text: str) -> list[str]:
        given = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in given if name not in choices]
        if unknown or not given:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or '(none given)'}; expected one or more of {', '.join(choices)} "
                "separated by commas"
            )
        return given

    return parse
