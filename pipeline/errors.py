"""The errors a user can cause, and the exit code of each; the CLI prints them as one line.

Anything not listed here is a bug and keeps its traceback (see `cli.guarded`).
"""

from __future__ import annotations

import errno

from gattanet.errors import InputError


class ParamsError(ValueError):
    """A params.yaml problem: the message names the key, the value and what is allowed."""


class SettingsError(ValueError):
    """Another settings file than params.yaml (the analysis plan) is missing or malformed: exit 2 like params."""


class UsageError(ValueError):
    """A CLI argument or this machine does not allow what was asked."""


class MissingInputError(FileNotFoundError):
    """A stage's input file is absent: the message names the stage that makes it."""


class StageFailed(RuntimeError):
    """A stage's worker processes (under torchrun) failed and printed why; exit with their code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


EXIT_CODES: dict[type, int] = {ParamsError: 2, UsageError: 2, SettingsError: 2, InputError: 1, MissingInputError: 1}
RESOURCES = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}  # the machine's, not a bug


def resource(error: BaseException) -> bool:
    """Whether `error` is a write refused by the machine (disk full, read-only or forbidden folder)."""
    return isinstance(error, OSError) and error.errno in RESOURCES


def message(error: BaseException) -> str:
    """A user error in one line; a refused write as 'PATH: cause'."""
    if resource(error):
        return f"{error.filename or '(a write)'}: {error.strerror}"
    return str(error)


def exit_code(error: BaseException) -> int | None:
    """The exit code of a user error (2: params, the analysis plan or arguments; 1: data, checkpoints, a diverged
    training, a write the machine refused), the workers' code for a failed torchrun, None for anything else."""
    if isinstance(error, StageFailed):
        return error.code
    if resource(error):
        return 1
    return next((code for kind, code in EXIT_CODES.items() if isinstance(error, kind)), None)
