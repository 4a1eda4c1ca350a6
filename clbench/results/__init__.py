"""Reading and writing an output folder: the journal and its tables (store), plots and the HTML report.

A results folder is untrusted input: nothing here imports a module, unpickles an object or executes anything named in
one. What produces runs (config, loop, sweeps, executors, the command line) lives in clbench.runners and imports
this package, never the other way round.
"""
