"""One trial of ``make chaos``'s engine fault per setting, through the suite's own code.

A cluster over this machine's engine and one of the engine bed's; the bed's engine is
killed mid-map, taking node1 with it. Without retries the run fails saying a worker was
lost, and nothing runs twice; with the default the results are right. Either way the
loss is named, nothing is left in the nodes that survive nor here, and ``dockkit down``
cleans this machine's engine and names the engine that is gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from benchmarks.chaos import FAULTS, run_fault
from benchmarks.faults.engines import SpreadCluster
from tests.names import unique_name

pytestmark = pytest.mark.timeout(600)  # a bed and a cluster per trial: past pytest-timeout's default


@pytest.fixture(scope="module")
def outcomes(docker_client, worker_image):
    (fault,) = [fault for fault in FAULTS if fault.context is SpreadCluster]
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        if os.environ.get("CI"):  # as the docker_client fixture: in CI a missing piece fails
            pytest.fail("the engine bed needs root and iptables, and CI must run it")
        pytest.skip("the engine bed needs root and iptables")
    name = unique_name("chaos")
    with SpreadCluster(name=name) as spread:  # a cluster that cannot be made fails the test
        outcomes = run_fault(fault, 1, spread).outcomes
    # the beds' engines and firewall rules, and the clusters' nodes and networks here, all named after it
    rules = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    outcomes["left"] = ([c.name for c in docker_client.containers.list(all=True) if name in c.name]
                        + [n.name for n in docker_client.networks.list() if name in n.name]
                        + [line for line in rules.splitlines() if name in line])
    return outcomes


@pytest.mark.parametrize("max_retries, expected", [(0, (1, "WorkerLostError")), (3, (0, None))])
def test_an_engine_lost_mid_run_is_handled_as_documented(outcomes, max_retries, expected):
    (outcome,) = outcomes[max_retries]
    assert outcome.detail.get("injected", True), outcome
    assert (outcome.status, outcome.error) == expected, outcome
    assert outcome.correct is True, outcome
    assert outcome.noticed_s is not None, outcome  # the run named the lost node or its workers
    assert outcome.left == 0 and outcome.lingering == 0, outcome
    if max_retries == 0:
        assert outcome.duplicates == 0, outcome


@pytest.mark.parametrize("max_retries", [0, 3])
def test_down_names_the_lost_engine_and_leaves_nothing_here(outcomes, max_retries):
    (outcome,) = outcomes[max_retries]
    assert outcome.detail["down_status"] == 1 and outcome.detail["down_named"], outcome
    assert outcome.detail["down_lines"] == 1, outcome
    assert outcome.detail["containers_left"] == 0, outcome


def test_the_engines_and_clusters_are_gone_afterwards(outcomes):
    assert outcomes["left"] == []
