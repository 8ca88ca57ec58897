"""The executor contract over real SSH hosts, with and without --tunnel."""

from __future__ import annotations

import sys

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
    with dockkit.Executor(hosts=["node0", "node1*2"], ssh_config=str(ssh_nodes.ssh_config_path),
                          tunnel=request.param) as ex:
        yield ex


class TestContractOverSSH(ExecutorContract):
    pass
