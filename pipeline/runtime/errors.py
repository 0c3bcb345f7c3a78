"""Errors the runtime raises: each str() is one line naming the file and the problem."""

from __future__ import annotations

import os


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, for error rows and messages."""
    return " ".join(str(exc).split()) or type(exc).__name__


class AudioError(Exception):
    """A file that cannot be used."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ModelError(Exception):
    """An exported model that cannot be used."""
