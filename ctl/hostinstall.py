"""``python -m ctl.hostinstall``: virtbus on a real host (not the lab), run by systemd.

    python -m ctl.hostinstall units --out /etc/systemd/system [--python /opt/virtbus/.venv/bin/python]
    python -m ctl.hostinstall config --dir /etc/virtbus --nodes node1,node2 [--listen 127.0.0.1:4222]
                                     [--tls-ip 192.0.2.10 ...] [--store-dir /var/lib/virtbus/nats]

``units`` renders deploy/systemd/*.service.in (the venv's interpreter and nats-server filled in).
``config`` (run by virtbus-nats.service before each start) keeps an nkey seed per role and node in
DIR/creds and writes nats.conf for them; a server that listens beyond loopback gets TLS (a CA and a
certificate for its --tls-ip addresses in DIR/tls), as traffic that leaves the host must.
"""

from __future__ import annotations

import argparse
import socket
import sys
from ipaddress import ip_address
from pathlib import Path

from ctl import clusterauth
from proto import subjects
from servicekit import credentials, natsserver

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
UNIT_NAMES = ("virtbus-nats.service", "virtbus-scheduler.service", "virtbus-handler.service")


def render_unit(template: str, *, python: str, nats_server: str) -> str:
    """Pure: a unit from its template; refuses to leave a placeholder unfilled."""
    text = template.replace("@PYTHON@", python).replace("@NATS_SERVER@", nats_server)
    if "@" in "".join(line for line in text.splitlines() if not line.startswith("#")):
        raise ValueError("a placeholder is left in the unit")
    return text


def render_units(out: Path, *, python: str, nats_server: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in UNIT_NAMES:
        path = out / name
        path.write_text(render_unit((UNITS / f"{name}.in").read_text(), python=python, nats_server=nats_server))
        written.append(path)
    return written


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    ip_address(host)  # an address, not a name: the server binds it
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def needs_tls(host: str) -> bool:
    """Traffic that can leave the host is encrypted; loopback only may go without."""
    return not ip_address(host).is_loopback


def write_config(directory: Path, nodes: list[str], *, listen: str, store_dir: str, tls_ips: list[str]) -> Path:
    host, port = parse_listen(listen)
    users = credentials.users_for(nodes)
    keys = credentials.ensure_seeds(directory / "creds", users)
    tls = None
    if needs_tls(host):
        if not tls_ips:
            raise ValueError(f"NATS listens on {host}, beyond loopback: give the addresses clients reach it "
                             "by with --tls-ip, for its certificate")
        tls_dir = directory / "tls"
        clusterauth.ensure_ca(tls_dir)
        name = subjects.token(socket.gethostname().split(".")[0] or "nats")
        clusterauth.ensure_server_cert(tls_dir, name, tls_ips)
        tls = credentials.Tls(cert=str(tls_dir / f"{name}.pem"), key=str(tls_dir / f"{name}-key.pem"),
                              ca=str(tls_dir / "ca.pem"))
    path = directory / "nats.conf"
    credentials.write_server_config(path, credentials.server_config(
        users, keys, host=host, port=port, store_dir=store_dir, server_name="virtbus", tls=tls))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctl.hostinstall")
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("units", help="render the systemd units")
    u.add_argument("--out", required=True)
    u.add_argument("--python", default=sys.executable, help="the virtbus venv's interpreter")
    u.add_argument("--nats-server", default=None, help="default: the venv's (servicekit.natsserver)")
    c = sub.add_parser("config", help="nkeys and nats.conf (TLS beyond loopback)")
    c.add_argument("--dir", default="/etc/virtbus")
    c.add_argument("--nodes", required=True, help="comma-separated node names")
    c.add_argument("--listen", default="127.0.0.1:4222")
    c.add_argument("--store-dir", default="/var/lib/virtbus/nats")
    c.add_argument("--tls-ip", action="append", default=[], help="an address clients reach NATS by")
    args = p.parse_args(argv)
    try:
        if args.command == "units":
            nats_server = args.nats_server or natsserver.executable()
            for path in render_units(Path(args.out), python=args.python, nats_server=nats_server):
                print(path)
            return 0
        nodes = [subjects.token(n) for n in args.nodes.split(",") if n]
        print(write_config(Path(args.dir), nodes, listen=args.listen, store_dir=args.store_dir, tls_ips=args.tls_ip))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
