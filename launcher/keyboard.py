"""Who may type on the serial console (pure; the clock is passed in). See proto.console."""

from __future__ import annotations

from dataclasses import dataclass

from proto.console import LEASE_SECONDS, KeyboardGrant
from proto.errors import ApiError, Code


@dataclass
class Keyboard:
    vmi: str
    lease_seconds: float = LEASE_SECONDS
    holder: str | None = None
    expires: float = 0.0

    def _held(self, now: float) -> bool:
        return self.holder is not None and now < self.expires

    def claim(self, session: str, now: float) -> KeyboardGrant:
        """Take or renew the lease; refused while another session holds it."""
        if self._held(now) and self.holder != session:
            raise ApiError(Code.CONFLICT, f"another console session is typing on {self.vmi} (its lease ends within "
                                          f"{self.expires - now:.0f}s unless renewed); watch, or try again later")
        self.holder, self.expires = session, now + self.lease_seconds
        return KeyboardGrant(session=session, lease_seconds=self.lease_seconds)

    def release(self, session: str) -> KeyboardGrant:
        if self.holder == session:
            self.holder, self.expires = None, 0.0
        return KeyboardGrant(session=session, lease_seconds=0.0)

    def accepts(self, session: str | None, now: float) -> bool:
        """Keystrokes from this session (None: no header) reach the guest."""
        return not self._held(now) or session == self.holder
