"""dockkit's benchmark suite: dockkit side by side with its peers.

Run it from the repository root with ``python -m benchmarks`` (``--help`` for the options).
The package imports nothing at import time: worker processes import
:mod:`benchmarks.workloads` and the startup workload must not pay for the harness.
"""
