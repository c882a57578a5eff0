"""TLS for a migration's connections between its two launchers, as KubeVirt migrates over TLS unless
its CR says ``disableTLS`` (proto.state.MigrationOptions): the guest's memory and disks cross the
node network encrypted, and the source knows it talks to the target it was told of.

No certificate authority: the target's launcher makes a key and a self-signed certificate for this
one migration (openssl, before it reaps orphans), and gives the certificate with the token to the
source node only (proto.migrationtoken). The source trusts that certificate and nothing else. The
key never leaves the target launcher's private mounts, and is gone with them.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from proto.errors import ApiError, Code

OPENSSL_S = 20.0
SUBJECT = "/CN=virtbus-migration"


@dataclass(frozen=True)
class Identity:
    certificate: str  # PEM: what the source is given
    context: ssl.SSLContext  # the target's server side, the key loaded


def make_identity(directory: Path) -> Identity:
    """A P-256 key and a self-signed certificate valid for two days (a migration takes minutes).
    Blocking: run it in a thread. Raises ApiError when openssl is missing or fails."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ApiError(Code.UNAVAILABLE, "TLS for the migration needs openssl on the target node "
                                         "(or the KubeVirt CR's migrations.disableTLS: true)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, cert = directory / "tls.key", directory / "tls.crt"
    old = os.umask(0o077)
    try:
        done = subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                               "-nodes", "-keyout", str(key), "-out", str(cert), "-subj", SUBJECT, "-days", "2",
                               "-batch"], capture_output=True, text=True, timeout=OPENSSL_S, check=False)
    finally:
        os.umask(old)
    try:
        if done.returncode != 0 or not cert.exists() or not key.exists():
            raise ApiError(Code.INTERNAL, f"openssl could not make the migration's certificate: "
                                          f"{done.stderr.strip()[:300]}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(cert, key)
        return Identity(certificate=cert.read_text(), context=context)
    finally:
        key.unlink(missing_ok=True)  # in the context now: no copy left on disk
        cert.unlink(missing_ok=True)


def client_context(certificate: str) -> ssl.SSLContext:
    """The source's side: only the target's own certificate is trusted; no name to check (it names
    no host, and pinning it is stronger than any name). Raises ApiError for a certificate that is not one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cadata=certificate)
    except (ssl.SSLError, ValueError) as exc:
        raise ApiError(Code.INVALID, f"the target's certificate is not one: {exc}", "certificate") from None
    return context
