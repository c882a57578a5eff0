"""A real lab (nats-server, scheduler, 2 handler nodes in their own namespaces) for the module."""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servicekit import cpugroup, processes
from tests.conftest import REPO, free_port

# a file each CLI call of the lab appends its seconds, test and arguments to (tab-separated), if set
CLI_TIMES = os.environ.get("VIRTBUS_E2E_CLI_TIMES", "")


def guest_disk() -> str:
    disk = os.environ.get("VIRTBUS_GUEST_DISK")
    if not disk:
        disk = subprocess.run(["bash", str(REPO / "guest" / "build.sh")], capture_output=True, text=True,
                              check=True).stdout.strip().splitlines()[-1]
    return disk


@dataclass
class Lab:
    state_dir: Path
    prefix: str
    url: str

    @property
    def creds(self) -> str:
        """The lab's admin seed, what its CLI uses."""
        return str(self.state_dir / "creds" / "admin.nk")

    def creds_of(self, user: str) -> str:
        return str(self.state_dir / "creds" / f"{user}.nk")

    def cli(self, *args: str, check: bool = True, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "ctl", "--server", self.url, "--creds", self.creds, *args],
                              capture_output=True,
                              text=True, timeout=timeout, cwd=REPO)
        if CLI_TIMES:  # where the suite's time goes: most of it is in these calls
            with open(CLI_TIMES, "a") as times:
                times.write(f"{time.monotonic() - started:.2f}\t{os.environ.get('PYTEST_CURRENT_TEST', '')}"
                            f"\t{' '.join(args)}\n")
        if check and done.returncode != 0:
            raise AssertionError(f"virtbus {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str) -> object:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def netns(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        return sorted(line.split()[0] for line in out.splitlines() if line.startswith(f"{self.prefix}-"))

    def infra_netns(self) -> list[str]:
        """The lab's own namespaces: its bridge, its nodes and the outside host."""
        return sorted(f"{self.prefix}-{n}" for n in ("lab", "node1", "node2", "outside"))

    def logs(self, lines: int = 40) -> str:
        out = []
        for log in sorted((self.state_dir / "logs").glob("*.log")):
            out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report carries the tails of its lab's logs: the lab goes with the module's
    teardown, and a failure's cause (a handler that stopped renewing its lease, say) is only in them."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    lab = getattr(item, "funcargs", {}).get("lab")
    if report.failed and isinstance(lab, Lab):
        report.sections.append(("lab logs", lab.logs(lines=150)))


def _become_subreaper() -> None:
    """Orphans of the lab (its supervisor, once `lab up` exits) come to this process to be reaped."""
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _lab_leftovers(state: Path) -> dict[int, str]:
    """Our children (as subreaper) that are the lab's: a QEMU, a libvirtd, or anything naming its state dir."""
    found = {pid: processes.command(pid) for pid in processes.children() if processes.alive(pid)}
    return {pid: cmd for pid, cmd in found.items()
            if Path(cmd.split(" ", 1)[0]).name.startswith(("qemu-system", "libvirtd")) or str(state) in cmd}


def _reap_orphans(known: set[int]) -> None:
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit() or int(pid.name) in known:
            continue
        try:
            stat = (pid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] == "Z" and int(stat[1]) == os.getpid():
            try:
                os.waitpid(int(pid.name), os.WNOHANG)
            except ChildProcessError:
                pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A module's lab; its handlers keep the warm memory the module's WARM_MEMORY asks (default none)."""
    _become_subreaper()
    state = tmp_path_factory.mktemp("lab")
    prefix = f"vbt{secrets.token_hex(3)}"
    port = free_port()
    lab = Lab(state, prefix, f"nats://127.0.0.1:{port}")
    base = [sys.executable, "-m", "ctl", "lab"]
    try:
        kernel = str(Path(guest_disk()).with_name("bzImage"))  # what the handlers' KVM probe boots
        warm = getattr(request.module, "WARM_MEMORY", os.environ["VIRTBUS_WARM_MEMORY"])
        up = subprocess.run([*base, "up", "--nodes", "2", "--state-dir", str(state), "--prefix", prefix,
                             "--port", str(port), "--probe-kernel", kernel],
                            capture_output=True, text=True, timeout=180, cwd=REPO,
                            env={**os.environ, "VIRTBUS_WARM_MEMORY": warm})
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}\n{lab.logs()}"
        lab.cli("image", "import", "quay.io/kubevirt/cirros-container-disk-demo", "--file", guest_disk())
        yield lab
    finally:
        subprocess.run([*base, "down", "--state-dir", str(state)], capture_output=True, timeout=300, cwd=REPO)
        _reap_orphans(set())
        stray = _lab_leftovers(state)  # orphans come to us: a QEMU lab down left would run on under pytest
        processes.end(list(stray), 10)
        assert stray == {}, f"lab down left processes: {stray}"
        groups = [g for node in ("node1", "node2") for kind in cpugroup.SHARES
                  if (g := cpugroup.locate(cpugroup.group_name(prefix, node, kind))) and g.exists()]
        for group in groups:
            cpugroup.remove(group)
        assert groups == [], f"lab down left CPU groups: {groups}"
        left = lab.netns()
        for ns in left:  # last resort, so a failed test never leaks a namespace
            subprocess.run(["ip", "netns", "delete", ns], check=False)
        assert left == [], f"lab down left namespaces: {left}"
