"""``python -m ctl.clusterauth``: credentials for a NATS cluster whose traffic leaves one machine
(the compose lab, a multi-host install): an nkey per role and node, a generated CA with a
certificate per server (client connections and cluster routes both use TLS; routes verify each
other's certificate), and each server's config. Nothing here is committed: it is made per cluster.

    python -m ctl.clusterauth --dir STATE --nodes node1,node2 \\
        --server nats1=10.98.0.2 --server nats2=10.98.0.3 --server nats3=10.98.0.4 --also-ip 127.0.0.1

writes STATE/creds/*.nk (0600), STATE/tls/ca.pem + <server>.pem/-key.pem, STATE/nats/<server>.conf
(paths inside the config are where compose mounts them: /etc/nats/...).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from proto import subjects
from servicekit import credentials

MOUNT = "/etc/nats"  # where a NATS container finds tls/ and its config
CLIENT_PORT, ROUTE_PORT = 4222, 6222


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_ca(tls: Path) -> None:
    tls.mkdir(parents=True, exist_ok=True)
    os.chmod(tls, 0o700)
    if (tls / "ca.pem").exists():
        return
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(tls / "ca-key.pem"), "-out", str(tls / "ca.pem"), "-days", "3650",
             "-subj", "/CN=virtbus cluster CA")
    os.chmod(tls / "ca-key.pem", 0o600)


def ensure_server_cert(tls: Path, name: str, ips: list[str]) -> None:
    """A certificate for a server (and for its routes, as a client of the other servers)."""
    cert, key = tls / f"{name}.pem", tls / f"{name}-key.pem"
    if cert.exists() and key.exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text("subjectAltName=" + ",".join([f"DNS:{name}", *(f"IP:{ip}" for ip in ips)]) +
                       "\nextendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(tls / "ca.pem"), "-CAkey", str(tls / "ca-key.pem"),
                 "-CAcreateserial", "-out", str(cert), "-days", "825", "-extfile", str(ext))
    os.chmod(key, 0o600)


def write_cluster(directory: Path, nodes: list[str], servers: dict[str, str], also_ips: list[str]) -> None:
    users = credentials.users_for(nodes)
    keys = credentials.ensure_seeds(directory / "creds", users)
    tls = directory / "tls"
    ensure_ca(tls)
    routes = [f"nats-route://{ip}:{ROUTE_PORT}" for ip in servers.values()]
    (directory / "nats").mkdir(parents=True, exist_ok=True)
    for name, ip in servers.items():
        ensure_server_cert(tls, name, [ip, *also_ips])
        server_tls = credentials.Tls(cert=f"{MOUNT}/tls/{name}.pem", key=f"{MOUNT}/tls/{name}-key.pem",
                                     ca=f"{MOUNT}/tls/ca.pem")
        cluster = {"name": "virtbus", "host": "0.0.0.0", "port": ROUTE_PORT, "routes": routes,
                   "tls": {"cert_file": server_tls.cert, "key_file": server_tls.key, "ca_file": server_tls.ca,
                           "verify": True, "timeout": 5}}
        credentials.write_server_config(directory / "nats" / f"{name}.conf", credentials.server_config(
            users, keys, host="0.0.0.0", port=CLIENT_PORT, store_dir="/data", server_name=name,
            tls=server_tls, cluster=cluster))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m ctl.clusterauth")
    p.add_argument("--dir", required=True)
    p.add_argument("--nodes", required=True, help="comma-separated node names")
    p.add_argument("--server", action="append", required=True, help="NAME=IP of a NATS server")
    p.add_argument("--also-ip", action="append", default=[], help="another address clients reach servers by")
    args = p.parse_args()
    servers = dict(s.split("=", 1) for s in args.server)
    for name in servers:
        subjects.token(name)
    write_cluster(Path(args.dir), [subjects.token(n) for n in args.nodes.split(",") if n], servers, args.also_ip)


if __name__ == "__main__":
    main()
