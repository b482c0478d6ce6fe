"""One-line errors for people: name the field, say what is wrong, exit 2, never a traceback."""

from __future__ import annotations

from pydantic import ValidationError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


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
    """The first problem of a pydantic error as one line, naming the field; the count of the rest."""
    errors = error.errors(include_url=False)
    first = errors[0]
    message = str(first.get("msg", "invalid value"))
    for noise in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(noise)
    location = format_location(tuple(first.get("loc", ())), aliases)
    where = ".".join(part for part in (prefix, location) if part)
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"
