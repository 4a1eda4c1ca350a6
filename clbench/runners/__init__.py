"""The method-agnostic loop, run configs, result tables, plots and the command line."""
