"""Errors a user can fix. The CLI prints them as one line (no traceback) and exits non-zero."""

from __future__ import annotations

__all__ = ["UserInputError"]


class UserInputError(Exception):
    """Bad input from the user: say what was received, what was expected and how to fix it.

    Name the file, and the row or column where one applies, in the message.
    """
