"""Moved to :mod:`clbench.results.plots`; this path keeps working for one release."""

import warnings

from clbench.results.plots import *  # noqa: F403

warnings.warn("clbench.runners.plots moved to clbench.results.plots", DeprecationWarning, stacklevel=2)
