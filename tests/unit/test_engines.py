"""on_each_engine: one engine that fails neither stops the others nor passes unnoticed."""

import pytest

from dockkit.cluster.engines import on_each_engine
from dockkit.errors import DockerError, EngineGoneError


def test_every_engine_is_visited_and_the_counts_add_up():
    assert on_each_engine(["a", "b"], lambda host: {"a": 2, "b": 3}[host], "removing c") == 5


def test_a_failing_engine_is_named_after_the_others_are_done():
    done = []

    def action(host):
        if host == "tcp://gone:2375":
            raise DockerError("connecting to the Docker Engine at tcp://gone:2375: no route to host")
        done.append(host)
        return 1

    with pytest.raises(EngineGoneError) as gone:
        on_each_engine(["local", "tcp://gone:2375", "tcp://b:2375"], action, "taking down cluster c")
    assert done == ["local", "tcp://b:2375"]
    assert (gone.value.engines, gone.value.removed) == (["tcp://gone:2375"], 2)
    message = str(gone.value)
    assert message.startswith("taking down cluster c: 1 Docker Engine(s) did not answer")
    # the reason names the engine: once, not again before it
    assert "(connecting to the Docker Engine at tcp://gone:2375: no route to host)" in message
    assert message.count("tcp://gone:2375") == 1 and "\n" not in message


def test_an_engine_that_failed_an_earlier_pass_is_not_tried_again_but_named():
    tried = []

    def action(host):
        tried.append(host)
        return 1

    with pytest.raises(EngineGoneError) as gone:
        on_each_engine(["a", "dead", "b"], action, "taking down cluster c", {"dead": "no route to host"})
    assert tried == ["a", "b"]
    assert (gone.value.engines, gone.value.removed) == (["dead"], 2)
    assert "dead: no route to host" in str(gone.value)
