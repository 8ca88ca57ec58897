"""Names for the clusters and compose projects the integration tests create.

Every name starts with the test run's id, so CI's cleanup (``.ci/run``) removes what
this run made and nothing else: not a developer's own clusters, not another run's.
``.ci/run`` sets ``DOCKKIT_TEST_RUN``; elsewhere each test session picks its own.
"""

from __future__ import annotations

import os
import uuid

TEST_RUN = os.environ.get("DOCKKIT_TEST_RUN") or f"dkt{uuid.uuid4().hex[:6]}"


def unique_name(kind: str) -> str:
    """A fresh cluster or project name, ``<run id>-<kind><4 hex digits>``."""
    return f"{TEST_RUN}-{kind}{uuid.uuid4().hex[:4]}"
