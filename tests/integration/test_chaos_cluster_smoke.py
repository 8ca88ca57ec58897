"""One trial of each cluster fault of ``make chaos``, through the suite's own code.

The Docker half of tests/unit/test_chaos_smoke.py: on a 3-node cluster, the local
``dockkit run`` SIGKILLed or SIGTERMed (nothing may be left in any node), and a worker
SIGKILLed in a node, a node container killed and a node paused past the heartbeat
timeout, each with ``max_retries=0`` and with the default. After each the results are
right (or the run fails saying a worker was lost), nothing runs twice without
retries, nothing is left behind, and the exit status is the documented one.
"""

from __future__ import annotations

import signal

import pytest

from benchmarks.chaos import FAULTS, run_fault
from benchmarks.faults.cluster import ChaosCluster
from benchmarks.faults.local import BOTH
from tests.names import unique_name

CLUSTER = [fault for fault in FAULTS if fault.docker]

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def results(worker_image):
    with ChaosCluster(name=unique_name("chaos")) as nodes:
        results = {fault.key: run_fault(fault, 1, nodes) for fault in CLUSTER}
    results["containers left"] = nodes.containers_left
    return results


@pytest.mark.parametrize("key, signum", [("cluster-run-kill", signal.SIGKILL), ("cluster-run-term", signal.SIGTERM)])
def test_the_run_in_the_cluster_ends_with_the_local_dockkit_run(results, key, signum):
    (outcome,) = results[key].outcomes[3]
    assert outcome.status == -signum, outcome
    assert outcome.detail["running_before"] >= 1 + 3 + 6, outcome  # the head's root, 3 agents, 6 workers
    assert outcome.left == 0 and outcome.noticed_s is not None, outcome  # all gone within 15 s


@pytest.mark.parametrize("key", [fault.key for fault in CLUSTER if fault.retries == BOTH])
@pytest.mark.parametrize("max_retries, expected", [(0, (1, "WorkerLostError")), (3, (0, None))])
def test_a_cluster_fault_is_handled_as_documented(results, key, max_retries, expected):
    (outcome,) = results[key].outcomes[max_retries]
    assert (outcome.status, outcome.error) == expected, outcome
    assert outcome.correct is True, outcome
    assert outcome.left == 0 and outcome.lingering == 0, outcome
    assert outcome.noticed_s is not None, outcome  # the run named the lost worker or node
    if max_retries == 0:
        assert outcome.duplicates == 0, outcome


def test_the_cluster_is_gone_afterwards(results):
    assert results["containers left"] == 0
