"""The executor contract on local workers, plus what only local workers can show."""

from __future__ import annotations

import pytest

import dockkit
from tests.contract import DefaultExecutorContract, ExecutorContract


@pytest.fixture(scope="module")
def executor():
    with dockkit.Executor(workers=2) as ex:
        yield ex


class TestLocalExecutor(ExecutorContract):
    pass


class TestDefaultExecutor(DefaultExecutorContract):
    pass
