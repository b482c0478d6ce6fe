"""One-line errors for people: name the field, say what is wrong, exit 2, never a traceback."""

from __future__ import annotations

from ..models.errors import format_location, format_validation_error

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "CliError", "format_location", "format_validation_error"]


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""
