"""Moved to :mod:`clbench.results.store`; this path keeps working for one release."""

import warnings

from clbench.results.store import *  # noqa: F403

warnings.warn("clbench.runners.store moved to clbench.results.store", DeprecationWarning, stacklevel=2)
