"""The one exception type that the CLI turns into a clear message and exit code 2."""


class UsageError(ValueError):
    """Bad user input: an unknown name, an ill-typed value, missing data, an unwritable path.

    The message must name the bad value and the valid choices; the CLI prints it without a traceback.
    """


def unknown_choice(kind: str, value, choices) -> UsageError:
    """Build the standard 'unknown X' error listing the valid choices."""
    listed = ", ".join(sorted(str(c) for c in choices))
    return UsageError(f"unknown {kind} {value!r}; valid choices: {listed}")
