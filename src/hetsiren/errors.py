"""Errors a user can fix. The CLI prints them as one line (no traceback) and exits non-zero."""

from __future__ import annotations

import typing
from typing import Any, TypeVar

__all__ = ["UserInputError", "check_choice"]

_T = TypeVar("_T")


class UserInputError(Exception):
    """Bad input from the user: say what was received, what was expected and how to fix it.

    Name the file, and the row or column where one applies, in the message.
    """


def check_choice(what: str, value: _T, choices: Any) -> _T:
    """``value`` when it is one of the values of the ``Literal`` type ``choices``; otherwise a
    :class:`UserInputError` naming ``what`` (e.g. ``"--ctf-mode"``) and the allowed values.

    Modes are Literals: this is where a free string from a file or a Python caller is checked.
    """
    allowed = typing.get_args(choices)
    if value not in allowed:
        raise UserInputError(f"{what} {value!r}: expected one of "
                             f"{', '.join(repr(a) for a in allowed)}")
    return value
