"""``dockkit.logger``: a standard logger whose records say which host and worker wrote them."""

from __future__ import annotations

import logging
import sys

from dockkit.runtime.context import current

FORMAT = "[%(asctime)s] %(levelname)-7s %(dockkit_host)s/%(dockkit_worker)s %(message)s"


class _WhereFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = current()
        record.dockkit_host = context.host
        record.dockkit_worker = context.worker
        return True


def _make_logger() -> logging.Logger:
    log = logging.getLogger("dockkit.user")
    log.addFilter(_WhereFilter())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


logger = _make_logger()
