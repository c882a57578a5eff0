"""Credentials of a virtbus cluster: one nkey per role (and per node), and the nats-server config
that lets exactly those keys in, each with its role's permissions (proto.permissions).

A seed file (``<dir>/<user>.nk``, 0600, in a 0700 directory) is what a client presents: nats-py's
``nkeys_seed``, the NATS CLI's ``--nkey``. Seeds are generated here, never committed; the server
config holds only public keys. The config is written as JSON, which nats-server's parser accepts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nacl.signing
import nkeys

from proto import subjects
from proto.permissions import Permissions, Role, permissions

SEED_SUFFIX = ".nk"


@dataclass(frozen=True)
class User:
    name: str  # admin, viewer, control, node-<node>
    role: Role
    node: str | None = None

    @property
    def permissions(self) -> Permissions:
        return permissions(self.role, self.node)


def users_for(nodes: list[str]) -> list[User]:
    return [User("admin", Role.ADMIN), User("viewer", Role.VIEWER), User("control", Role.CONTROL),
            *(User(node_user(n), Role.NODE, n) for n in nodes)]


def node_user(node: str) -> str:
    return f"node-{subjects.token(node)}"


def new_seed() -> bytes:
    """A fresh nkey user seed (``SU...``)."""
    raw = bytes(nacl.signing.SigningKey.generate())
    return bytes(nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes) -> str:
    kp = nkeys.from_seed(bytearray(seed))
    try:
        return str(kp.public_key.decode())
    finally:
        kp.wipe()


def seed_path(directory: Path, user: str) -> Path:
    return directory / f"{user}{SEED_SUFFIX}"


def ensure_seeds(directory: Path, users: list[User]) -> dict[str, str]:
    """Every user's seed file (kept when it exists, so the same cluster keeps its keys); returns
    user name -> public key."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    keys: dict[str, str] = {}
    for user in users:
        path = seed_path(directory, user.name)
        if not path.exists():
            fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(new_seed() + b"\n")
            path.with_suffix(".tmp").rename(path)
        os.chmod(path, 0o600)
        keys[user.name] = public_key(path.read_bytes().strip())
    return keys


@dataclass(frozen=True)
class Tls:
    cert: str
    key: str
    ca: str


def server_config(users: list[User], keys: dict[str, str], *, host: str, port: int, store_dir: str,
                  server_name: str, tls: Tls | None = None, cluster: dict[str, Any] | None = None) -> str:
    """Pure: nats-server's config (JSON) with JetStream and exactly these users, no anonymous one."""
    config: dict[str, Any] = {
        "server_name": server_name, "host": host, "port": port,
        "jetstream": {"store_dir": store_dir},
        "authorization": {"users": [
            {"nkey": keys[u.name], "permissions": msgspec.to_builtins(u.permissions)} for u in users]},
    }
    if tls is not None:
        config["tls"] = {"cert_file": tls.cert, "key_file": tls.key, "ca_file": tls.ca, "verify": False}
    if cluster is not None:
        config["cluster"] = cluster
    return json.dumps(config, indent=2) + "\n"


def write_server_config(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
