"""Shared test setup.

``tests`` is a package so every suite can ``from tests.contract import ExecutorContract``
(pytest puts the repository root on ``sys.path`` for it). The default executor that
``dockkit.futures`` starts on first use is shut down once, after the last test.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _stop_default_executor():
    yield
    from dockkit.executor import shutdown_default

    shutdown_default(wait=False)
