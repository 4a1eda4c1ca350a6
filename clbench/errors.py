"""The exceptions that the CLI turns into one clear message: bad input (exit 2) and a full disk (exit 1)."""

import difflib
import errno
import os
from pathlib import Path


class UsageError(ValueError):
    """Bad user input: an unknown name, an ill-typed value, missing data, an unwritable path.

    The message must name the bad value and the valid choices; the CLI prints it without a traceback.
    """


def unknown_choice(kind: str, value, choices, *, where: str | None = None) -> UsageError:
    """The standard error for a name that is not one of `choices`, with the closest valid name (difflib) when one is
    close: "unknown strategy 'ewcc' (did you mean 'ewc'?); valid choices: ...". `where` follows the value: "unknown
    hyperparameter 'mem_size' for naive, ewc in --set; ..."."""
    names = sorted(str(c) for c in choices)
    context = f" {where}" if where else ""
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.6) if isinstance(value, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UsageError(f"unknown {kind} {value!r}{context}{hint}; valid choices: {', '.join(names)}")


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
