"""Avalanche (avalanche-lib 0.6) both ways; needs the extra: pip install 'clbench[avalanche]'.

* clbench strategies in Avalanche pipelines: `ClbenchPlugin` (SGD-template strategies as a plugin for any
  Avalanche template) and `ClbenchStrategy` (any clbench strategy as an Avalanche `SupervisedTemplate`);
* Avalanche in clbench: `to_avalanche` / `from_avalanche` convert streams and benchmarks, and `--strategy
  avalanche:<ClassName>` runs Avalanche's own strategies in clbench's runner (`baselines.py`).

Plain clbench never imports this package unless an `avalanche:` strategy is asked for.
"""

from clbench.avalanche.plugin import ClbenchPlugin
from clbench.avalanche.streams import from_avalanche, spec_from_avalanche, to_avalanche
from clbench.avalanche.template import ClbenchStrategy

__all__ = ["ClbenchPlugin", "ClbenchStrategy", "from_avalanche", "spec_from_avalanche", "to_avalanche"]
