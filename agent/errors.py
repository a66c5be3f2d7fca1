"""The one kind of error a person can fix: bad input or configuration (exit code 2).

Every error that a command reports as "bad input" derives from UsageError, so each command catches it
once; its message names what was wrong and what is accepted."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input or configuration; the message names the problem and what is accepted."""
