"""Validation errors as lines for people: name the field, say what is wrong, list every problem.

Used wherever a model is validated for a person: the CLI (one line, exit 2), a run's or a profile's
Ready=False condition, and the operator's flag checks.
"""

from __future__ import annotations

from pydantic import ValidationError


def format_location(loc: tuple, aliases: dict[str, str] | None = None) -> str:
    """('parameters', 0, 'step') -> 'parameters[0].step'; top-level fields may map to CLI flags."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part)
            if i == 0 and aliases and name in aliases:
                name = aliases[name]
            out += ("." if out else "") + name
    return out


def format_validation_error(error: ValidationError, prefix: str = "", aliases: dict[str, str] | None = None) -> str:
    """Every problem of a pydantic error, each naming its field, joined by '; ' (the first one first)."""
    problems = []
    for item in error.errors(include_url=False):
        message = str(item.get("msg", "invalid value"))
        for noise in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(noise)
        location = format_location(tuple(item.get("loc", ())), aliases)
        where = ".".join(part for part in (prefix, location) if part)
        text = f"{where}: {message}" if where else message
        if text not in problems:
            problems.append(text)
    return "; ".join(problems)
