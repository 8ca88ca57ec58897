"""The parts of ``python -m benchmarks.chaos``, one module per role.

- :mod:`~benchmarks.faults.trial`: one observed run (its output lines timed as they
  arrive), the tasks' own log, the processes a trial left, one trial's outcome;
- :mod:`~benchmarks.faults.job`: the script every run executes, whose tasks record themselves;
- :mod:`~benchmarks.faults.local`: faults on local workers and on the root;
- :mod:`~benchmarks.faults.flood`: strangers flooding the broker's port;
- :mod:`~benchmarks.faults.cluster`: faults in the nodes of a Docker cluster;
- :mod:`~benchmarks.faults.up`: ``dockkit up`` interrupted, then ``down`` and ``up`` again;
- :mod:`~benchmarks.faults.engines`: the Docker Engine of a node lost mid-run;
- :mod:`~benchmarks.faults.report`: ``docs/reliability.md`` from the outcomes.
"""
