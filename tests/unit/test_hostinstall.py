"""Rendering the systemd units and the NATS config of a real host (ctl.hostinstall): pure parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctl import hostinstall


def test_a_unit_gets_the_venv_and_nats_server() -> None:
    text = hostinstall.render_unit("ExecStart=@PYTHON@ -m handler\nExecStart=@NATS_SERVER@ -c x\n",
                                   python="/opt/virtbus/.venv/bin/python", nats_server="/usr/sbin/nats-server")
    assert text == "ExecStart=/opt/virtbus/.venv/bin/python -m handler\nExecStart=/usr/sbin/nats-server -c x\n"


def test_a_placeholder_left_is_refused() -> None:
    with pytest.raises(ValueError):
        hostinstall.render_unit("ExecStart=@PYTHON@ @OTHER@\n", python="/p", nats_server="/n")


@pytest.mark.parametrize(("text", "parsed"), [("127.0.0.1:4222", ("127.0.0.1", 4222)),
                                              ("0.0.0.0:4333", ("0.0.0.0", 4333))])
def test_listen(text: str, parsed: tuple[str, int]) -> None:
    assert hostinstall.parse_listen(text) == parsed


@pytest.mark.parametrize("text", ["nats.example:4222", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", ":4222"])
def test_a_bad_listen_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        hostinstall.parse_listen(text)


def test_only_loopback_goes_without_tls() -> None:
    assert not hostinstall.needs_tls("127.0.0.1") and not hostinstall.needs_tls("::1")
    assert hostinstall.needs_tls("0.0.0.0") and hostinstall.needs_tls("192.0.2.10")


def test_beyond_loopback_without_a_certificate_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--tls-ip"):
        hostinstall.write_config(tmp_path, ["node1"], listen="0.0.0.0:4222", store_dir="/x", tls_ips=[])
    assert not (tmp_path / "nats.conf").exists()


def test_the_config_admits_each_role_and_node(tmp_path: Path) -> None:
    conf = hostinstall.write_config(tmp_path, ["node1", "node2"], listen="127.0.0.1:4222",
                                     store_dir="/var/lib/virtbus/nats", tls_ips=[])
    doc = json.loads(conf.read_text())
    assert (doc["host"], doc["port"], doc["jetstream"]["store_dir"]) == ("127.0.0.1", 4222, "/var/lib/virtbus/nats")
    assert "tls" not in doc and len(doc["authorization"]["users"]) == 5  # admin, viewer, control, 2 nodes
    seeds = sorted(p.name for p in (tmp_path / "creds").iterdir())
    assert seeds == ["admin.nk", "control.nk", "node-node1.nk", "node-node2.nk", "viewer.nk"]
    first = (tmp_path / "creds" / "node-node1.nk").read_bytes()
    hostinstall.write_config(tmp_path, ["node1", "node2", "node3"], listen="127.0.0.1:4222", store_dir="/x",
                             tls_ips=[])
    assert (tmp_path / "creds" / "node-node1.nk").read_bytes() == first  # a node added keeps the others' keys
