"""The systemd units of a real host (deploy/systemd, rendered by ctl.hostinstall) pass
``systemd-analyze verify``, signal only the handler itself on its stop (its launchers run on), and
the NATS config they generate runs a real nats-server that admits the node's key and no anonymous
client. (Running the units under systemd needs systemd as PID 1, which this sandbox has not.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctl import hostinstall
from servicekit import natsserver
from tests.conftest import free_port, running_nats_server, try_connect

pytestmark = pytest.mark.integration
VENV_PYTHON = sys.executable


def problems(units: list[Path]) -> list[str]:
    """What systemd-analyze says of the units: errors fail it, but a bad setting is only a warning
    (it is then ignored at run time), so any line naming one of our units is a problem."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt package systemd, in scripts/setup.sh)")
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)], capture_output=True, text=True,
                          timeout=60, check=False)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if any(u.name in line for u in units)]
    return lines if lines or done.returncode == 0 else [f"exit {done.returncode}: {done.stderr.strip()}"]


def render(out: Path) -> list[Path]:
    return hostinstall.render_units(out, python=VENV_PYTHON, nats_server=natsserver.executable())


def test_the_units_verify(tmp_path: Path) -> None:
    units = render(tmp_path)
    assert [u.name for u in units] == list(hostinstall.UNIT_NAMES)
    assert problems(units) == []


def test_a_broken_unit_does_not_verify(tmp_path: Path) -> None:
    """The check above can fail: a bad kill mode, and a missing interpreter, are caught."""
    handler = tmp_path / "virtbus-handler.service"
    render(tmp_path)
    handler.write_text(handler.read_text().replace("KillMode=process", "KillMode=processes"))
    assert problems([handler]) != []
    scheduler = tmp_path / "virtbus-scheduler.service"
    scheduler.write_text(scheduler.read_text().replace(VENV_PYTHON, "/nonexistent/python"))
    assert problems([scheduler]) != []


def setting(unit: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith(f"{key}=")]


def test_a_handler_stop_signals_only_the_handler_and_every_unit_comes_back_at_boot(tmp_path: Path) -> None:
    units = {u.name: u for u in render(tmp_path)}
    # only the handler's own process is signalled on stop/restart; its launchers run on
    assert setting(units["virtbus-handler.service"], "KillMode") == ["process"]
    for unit in units.values():
        assert setting(unit, "Restart") == ["always"] and setting(unit, "WantedBy") == ["multi-user.target"]
        assert setting(unit, "EnvironmentFile") == ["/etc/virtbus/virtbus.env"]


def test_the_generated_config_runs_nats_with_only_our_keys(tmp_path: Path) -> None:
    port = free_port()
    conf = hostinstall.write_config(tmp_path, ["node1"], listen=f"127.0.0.1:{port}", store_dir=str(tmp_path / "js"),
                                    tls_ips=[])
    with running_nats_server(conf, port):
        url = f"nats://127.0.0.1:{port}"
        assert try_connect(url, str(tmp_path / "creds" / "node-node1.nk")).strip() == "connected"
        assert try_connect(url).startswith("refused")
