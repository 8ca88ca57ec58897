"""Launchers: how a run's workers are started and stopped, on this machine or on other hosts.

Every launcher has the same shape (see :mod:`dockkit.launch.base`); the executor
uses whichever one a run needs and never knows which. Launchers build on the
runtime and never on the Docker cluster.
"""
