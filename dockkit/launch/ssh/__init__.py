"""SSH: host resolution, one connection per host, its remote processes and tunnels, keys.

Only this package talks to paramiko for connections.
"""
