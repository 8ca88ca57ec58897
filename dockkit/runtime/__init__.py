"""The runtime: the wire protocol, the broker, its clients and the worker processes.

Nothing here knows how workers are started (``dockkit.launch``) or where they run
(``dockkit.cluster``); it imports neither paramiko nor docker.
"""
