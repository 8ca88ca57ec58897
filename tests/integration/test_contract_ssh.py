"""The executor contract over real SSH hosts, with and without --tunnel."""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest

import dockkit
import tests.contract
from tests.contract import ExecutorContract

# The hosts don't have the test modules: their functions travel by value.
cloudpickle.register_pickle_by_value(tests.contract)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module", params=[True, False], ids=["tunnel", "direct"])
def executor(request, ssh_nodes):
    with dockkit.Executor(hosts=["node0", "node1:2"], ssh_config=str(ssh_nodes.ssh_config_path),
                          tunnel=request.param) as ex:
        yield ex
    # after the whole suite, shutdown has stopped every agent and worker on both hosts
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_left(ssh_nodes, n) for n in ("node0", "node1")):
        time.sleep(0.2)
    assert not _left(ssh_nodes, "node0") and not _left(ssh_nodes, "node1")


def _left(ssh_nodes, node) -> list[str]:
    return ssh_nodes.run_processes(node)


class TestContractOverSSH(ExecutorContract):
    def test_traffic_off_loopback_is_encrypted(self, executor):
        # direct: workers connect over the network, so the run uses CurveZMQ; through a
        # tunnel the broker listens on loopback and SSH does the encrypting
        tunnelled = executor.address.startswith("tcp://127.0.0.1:")
        assert (executor._curve is None) == tunnelled, executor.address
