"""virtbus console as people use it: interactive terminals (on ptys), many watching, one typing."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import nats
import pytest

from proto import subjects
from tests.conftest import REPO
from tests.e2e.conftest import Lab
from tests.e2e.test_networking import started, write_manifest

pytestmark = pytest.mark.e2e


class Terminal:
    """``virtbus console NAME`` on a pseudo-terminal, as a person runs it."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "ctl", "--server", lab.url, "--creds", lab.creds,
                                      "console", name],
                                     stdin=slave, stdout=slave, stderr=slave, cwd=REPO, start_new_session=True)
        os.close(slave)
        self.seen = b""

    def read_until(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not on the terminal; it shows:\n{self.seen.decode(errors='replace')}"
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the console ended: nothing more comes
                    assert text.encode() in self.seen, self.seen.decode(errors="replace")
        return self.seen.decode(errors="replace")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        if self.proc.poll() is None:
            os.write(self.master, b"\x1d")  # ^] leaves
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        return self.proc.returncode


def publish_raw(lab: Lab, name: str, text: str) -> None:
    """As ``nats pub virtbus.console.NODE.NAME.in TEXT`` does: no session header."""
    node = json.loads(lab.cli("get", "vmis", name, "-o", "json").stdout)["status"]["nodeName"]

    async def pub() -> None:
        nc = await nats.connect(lab.url, nkeys_seed=lab.creds)
        await nc.publish(subjects.console_in(node, name), text.encode())
        await nc.flush()
        await nc.close()

    asyncio.run(pub())


def test_many_watch_one_types(lab: Lab) -> None:
    lab.cli("apply", "-f", write_manifest(lab, "typist", "masquerade"))
    started(lab, "typist")
    lab.cli("console", "typist", "--log", "--until", "VIRTBUS-GUEST-READY", "--timeout", "120")
    first = Terminal(lab, "typist")
    second: Terminal | None = None
    try:
        first.read_until("[you have the keyboard]")
        second = Terminal(lab, "typist")
        second.read_until("read only: another session is typing")

        first.type("echo first-$((40+2))\r")
        first.read_until("first-42")
        second.read_until("first-42")  # the other session watches the same console

        second.type("echo second-$((40+3))\r")  # read only: not sent
        refused = lab.cli("console", "typist", "--send", "echo send-$((40+4))\\n", check=False)
        assert refused.returncode == 1 and "another console session is typing" in refused.stderr
        publish_raw(lab, "typist", "echo raw-$((40+5))\n")  # the launcher drops keys without the lease
        time.sleep(1)
        first.type("echo after-$((40+6))\r")
        log = lab.cli("console", "typist", "--log", "--until", "after-46", "--timeout", "30").stdout
        assert "second-43" not in log and "send-44" not in log and "raw-45" not in log, log

        assert first.close() == 0  # ^] leaves and lets go of the keyboard
        second.read_until("[you have the keyboard]", timeout=15)
        second.type("echo second-$((40+7))\r")
        second.read_until("second-47")

        lab.cli("stop", "typist", "--wait", "--timeout", "120")
        second.read_until("[the VM stopped; console closed]", timeout=30)
        second.proc.wait(15)
        assert second.proc.returncode == 0
    finally:
        for terminal in (first, second):
            if terminal is not None:
                terminal.close()
        lab.cli("delete", "typist", "--wait", "--timeout", "120", check=False)
