"""Exceptions that sparseseg raises for bad input.

The CLI turns every :class:`SparsesegError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path


class SparsesegError(Exception):
    """A user-facing error: bad input, bad arguments, or a missing file.

    Args:
        message: What is wrong, in one line.
        path: The file or folder concerned, if any; it is named first in the message.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = message
        text = message if path is None else f"{path}: {message}"
        super().__init__(text)


class InputError(SparsesegError):
    """An input file or folder cannot be used (missing, corrupt, wrong shape...)."""


class ModelError(SparsesegError):
    """A model folder is missing, corrupt, or from an incompatible version."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters (its ``repr`` when
    the message is empty), to quote inside a one-line :class:`SparsesegError`."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else repr(exc)
