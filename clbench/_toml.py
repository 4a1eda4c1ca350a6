"""TOML parsing on every supported Python: the standard library's tomllib from 3.11, its tomli backport on 3.10."""

try:
    from tomllib import TOMLDecodeError, loads
except ModuleNotFoundError:  # Python 3.10
    from tomli import TOMLDecodeError, loads

__all__ = ["TOMLDecodeError", "loads"]
