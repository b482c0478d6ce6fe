"""One-line errors for people: name the field, say what is wrong, exit 2, never a traceback."""

from __future__ import annotations

from ..models.errors import format_location, format_validation_error

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CliError",
    "format_location",
    "format_validation_error",
    "not_yaml",
]


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def not_yaml(error: Exception) -> str:
    """Why a file that should be YAML (a `yaml.YAMLError`, or a `UnicodeDecodeError` reading it) is not, in one
    parenthesised phrase: where and what, as `--profile PATH: not valid YAML (...)` says it."""
    if isinstance(error, UnicodeDecodeError):
        return "not valid YAML (not UTF-8 text)"
    where = getattr(error, "problem_mark", None)
    at = f"line {where.line + 1}, column {where.column + 1}: " if where is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"not valid YAML ({at}{problem})"
