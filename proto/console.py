"""The serial console's keyboard: who may type (request/reply on ``virtbus.console.<vmi>.keyboard``).

Any number of sessions watch the output stream; one at a time holds the keyboard, on a lease it
renews, and sends its keystrokes with its session id in the header ``Virtbus-Console-Session``.
While a lease is held, the VM's launcher drops every other keystroke (a bare ``nats pub`` too);
with no holder, anyone types. A refused claim is a ``Conflict`` error reply: retry later.
"""

from __future__ import annotations

import re

from proto.api import Message
from proto.errors import ApiError, Code

SESSION_HEADER = "Virtbus-Console-Session"
RUN_HEADER = "Virtbus-Vmi-Uid"  # on each chunk of console output: the run (VMI uid) that printed it
LEASE_SECONDS = 6.0  # a holder renews every LEASE_SECONDS / 3; a vanished one loses it after this
_SESSION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class KeyboardRequest(Message, frozen=True):
    session: str
    release: bool = False


class KeyboardGrant(Message, frozen=True):
    session: str
    lease_seconds: float  # 0 once released


def check_session(session: str) -> str:
    if not _SESSION.fullmatch(session):
        raise ApiError(Code.INVALID, "a console session id is 1-64 of A-Za-z0-9_-", "session")
    return session
