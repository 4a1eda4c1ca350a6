"""Moved to :mod:`clbench.results.report`; this path keeps working for one release."""

import warnings

from clbench.results.report import *  # noqa: F403

warnings.warn("clbench.runners.report moved to clbench.results.report", DeprecationWarning, stacklevel=2)
