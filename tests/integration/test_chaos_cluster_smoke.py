"""One trial of each cluster fault of ``make chaos``, through the suite's own code.

The Docker half of tests/unit/test_chaos_smoke.py: on a 3-node cluster, the local
``dockkit run`` SIGKILLed or SIGTERMed (nothing may be left in any node), and a worker
SIGKILLed in a node, a node container killed and a node paused past the heartbeat
timeout, each with ``max_retries=0`` and with the default. The same nodes serve as
plain SSH hosts of a ``dockkit run --hosts … --tunnel`` from this machine: a worker
killed on a host, and the root killed or interrupted (nothing may be left on the
hosts: no agent, worker or sshd session). After each the results are
right (or the run fails saying a worker was lost), nothing runs twice without
retries, nothing is left behind, and the exit status is the documented one. A node
cut off its network for 5 s may be lost or not, but the results are right either
way, and it is found by its name again afterwards; so with a node that drops 30% of
its packets for 10 s. On a cluster of its own with a
memory limit, a task that outgrows it is given up, saying so, and the pool goes on.
A ``dockkit up`` interrupted by SIGINT or SIGKILL leaves nothing after ``down``, and
``up`` works again.
"""

from __future__ import annotations

import signal

import pytest

from benchmarks.chaos import FAULTS, run_fault
from benchmarks.faults.cluster import MEMORY, ChaosCluster
from benchmarks.faults.local import BOTH
from tests.names import unique_name

CLUSTER = [fault for fault in FAULTS if fault.docker and not fault.memory and not fault.context]
BAD_LINKS = ["cluster-node-cut", "cluster-node-lossy"]  # the node may be lost, or not

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


@pytest.mark.parametrize("key, status", [("ssh-root-kill", -signal.SIGKILL), ("ssh-root-int", 130)])
def test_an_ssh_run_leaves_nothing_on_its_hosts_when_its_root_is_killed(results, key, status):
    (outcome,) = results[key].outcomes[3]
    assert outcome.status == status, outcome
    # 2 agents, 4 workers and the agents' 2 sshd sessions ran on the hosts before the signal
    assert outcome.detail["running_before"] >= 2 + 4 + 2, outcome
    assert outcome.left == 0 and outcome.noticed_s is not None, outcome  # all gone within 15 s


@pytest.mark.parametrize("key", [fault.key for fault in CLUSTER
                                 if fault.retries == BOTH and fault.key not in BAD_LINKS])
@pytest.mark.parametrize("max_retries, expected", [(0, (1, "WorkerLostError")), (3, (0, None))])
def test_a_cluster_fault_is_handled_as_documented(results, key, max_retries, expected):
    (outcome,) = results[key].outcomes[max_retries]
    assert (outcome.status, outcome.error) == expected, outcome
    assert outcome.correct is True, outcome
    assert outcome.left == 0, outcome
    if key != "cluster-node-pause":  # a frozen node's agent ends only once it wakes, after the run
        assert outcome.lingering == 0, outcome
    assert outcome.noticed_s is not None, outcome  # the run named the lost worker or node
    if max_retries == 0:
        assert outcome.duplicates == 0, outcome
    if key == "cluster-node-pause":  # the stop drops the frozen node rather than wait on it (5 s and more)
        assert outcome.detail["tail_s"] < 4, outcome


@pytest.mark.parametrize("key", BAD_LINKS)
@pytest.mark.parametrize("max_retries", [0, 3])
def test_a_node_on_a_bad_link_leaves_the_results_right(results, key, max_retries):
    (outcome,) = results[key].outcomes[max_retries]
    lost = (1, "WorkerLostError") if max_retries == 0 else (0, None)
    assert (outcome.status, outcome.error) in ((0, None), lost), outcome  # lost for good, or not at all
    assert outcome.correct is True, outcome
    assert outcome.left == 0 and outcome.lingering == 0, outcome
    if key == "cluster-node-cut":
        assert outcome.detail["resolves"] is True, outcome  # back under its name
    else:
        assert outcome.detail["dropped"] > 0, outcome  # the loss was real
    if max_retries == 0:
        assert outcome.duplicates == 0, outcome


@pytest.mark.parametrize("key", ["up-int", "up-kill"])
def test_after_an_interrupted_up_down_leaves_nothing_and_up_works_again(results, key):
    (outcome,) = results[key].outcomes[3]
    assert outcome.correct is True and outcome.left == 0, outcome
    assert outcome.detail["traceback"] != "dockkit", outcome  # Python's own, while it starts, is beyond reach


def test_the_cluster_is_gone_afterwards(results):
    assert results["containers left"] == 0


def test_a_task_past_the_memory_limit_is_given_up_and_the_pool_goes_on(worker_image):
    (fault,) = [fault for fault in FAULTS if fault.memory == MEMORY]
    with ChaosCluster(name=unique_name("chaos"), memory=MEMORY) as nodes:
        (outcome,) = run_fault(fault, 1, nodes).outcomes[3]
    assert (outcome.status, outcome.error) == (0, "WorkerLostError"), outcome
    assert "ran out of memory" in outcome.detail["message"], outcome
    assert outcome.correct is True and outcome.duplicates == 0, outcome  # not re-run; the next map right
    assert outcome.detail["oom_killed"] == 1, outcome
    assert outcome.left == 0 and outcome.lingering == 0, outcome
    assert nodes.containers_left == 0
