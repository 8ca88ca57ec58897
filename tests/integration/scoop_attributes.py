"""SCOOP's module attributes in a remote run: a script printing them from the root and from its
tasks, and what it must print. Used over SSH hosts (test_launcher_ssh) and on a cluster
(test_cluster); tests/unit/test_scoop_compat.py checks a local run."""

from __future__ import annotations

SCRIPT = """
    import time
    import dockkit as scoop
    from dockkit import futures

    def attributes(_):
        time.sleep(0.01)  # long enough for every worker to take some
        return scoop.IS_RUNNING, scoop.IS_ORIGIN, scoop.SIZE, scoop.worker

    if __name__ == "__main__":
        print(f"root={scoop.IS_RUNNING},{scoop.IS_ORIGIN},{scoop.SIZE},{scoop.worker}")
        for seen in sorted(set(futures.map(attributes, range(200)))):
            print("task=" + ",".join(map(str, seen)))
"""


def check_printed(stdout: str, hosts: dict[str, int]) -> None:
    """The root ran under the launcher as the origin, named "root"; every task saw the run's
    size and a worker named ``host:wN`` of ``hosts`` ({host: its workers}), every host took part."""
    size = sum(hosts.values())
    lines = stdout.splitlines()
    assert f"root=True,True,{size},root" in lines, stdout
    tasks = [line.removeprefix("task=").split(",") for line in lines if line.startswith("task=")]
    assert tasks and all(seen[:3] == ["True", "False", str(size)] for seen in tasks), stdout
    names = {seen[3] for seen in tasks}
    assert names <= {f"{host}:w{i}" for host, count in hosts.items() for i in range(count)}, stdout
    assert {name.split(":")[0] for name in names} == set(hosts), stdout
