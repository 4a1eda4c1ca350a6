"""The exceptions that the CLI turns into one clear message: bad input (exit 2) and a full disk (exit 1)."""

import errno
import os
from pathlib import Path


class UsageError(ValueError):
    """Bad user input: an unknown name, an ill-typed value, missing data, an unwritable path.

    The message must name the bad value and the valid choices; the CLI prints it without a traceback.
    """


def unknown_choice(kind: str, value, choices) -> UsageError:
    """Build the standard 'unknown X' error listing the valid choices."""
    listed = ", ".join(sorted(str(c) for c in choices))
    return UsageError(f"unknown {kind} {value!r}; valid choices: {listed}")


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full.

    Raised by clbench's writers in place of the bare OSError, carrying the file that could not be written; the CLI
    prints it as one line and exits with 1 (the input was fine, the machine was not).
    """

    def __init__(self, path, code: int = errno.ENOSPC):
        super().__init__(code, os.strerror(code), str(path))
        self.path = Path(path)

    def __reduce__(self):  # rebuild from (path, code), not from OSError's (errno, strerror, filename)
        return type(self), (self.filename, self.errno)

    def __str__(self) -> str:
        return f"cannot write {self.filename!r}: the disk is full ({self.strerror})"
