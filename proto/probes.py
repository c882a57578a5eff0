"""KubeVirt's readinessProbe and livenessProbe. A readinessProbe says when a Running VMI is Ready, and so
in the endpoints of the Services that select it; a livenessProbe that fails ends the VMI, Failed (its VM
runs a new one as its run strategy says), as kubelet's restart of virt-launcher's container does. Read
from the manifest (``spec.template.spec.readinessProbe``, a VMI's ``spec.readinessProbe``; the same for
``livenessProbe``), checked, printed back, and run by the VMI's node (handler.probes) against its pod
address, as kubelet runs a pod's: ``httpGet`` passes on a status of 200-399, ``tcpSocket`` on a
connection made, each within ``timeoutSeconds``, every ``periodSeconds`` after ``initialDelaySeconds``;
``successThreshold`` passes in a row make it Ready, ``failureThreshold`` failures in a row not Ready (or,
for liveness, dead; a liveness probe counts as passing until then, and its successThreshold is 1).

``exec`` and ``guestAgentPing`` run inside the guest through its guest agent, which virtbus has not, and a
``host`` would probe another machine than the VMI: refused by path.

The pure parts are here: the schema, the check, the run's bookkeeping (``ProbeRun``) and the HTTP
request and answer; handler.probes does the I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proto.errors import ApiError, Code
from proto.schema import INT, STR, Choice, Object, Refused
from proto.spec import Probe, VMSpec

_GUEST_AGENT = "it runs in the guest through its guest agent, which virtbus has not; use httpGet or tcpSocket"
_HOST = "a probe reaches the VMI's own pod address, never another machine"
PROBE = Object({  # a readinessProbe's or a livenessProbe's
    "httpGet": Object({"port": INT, "path": STR, "scheme": Choice(("HTTP",)), "host": Refused(_HOST),
                       "httpHeaders": Refused("a probe sends no headers but Host")}),
    "tcpSocket": Object({"port": INT, "host": Refused(_HOST)}),
    "exec": Refused(_GUEST_AGENT), "guestAgentPing": Refused(_GUEST_AGENT),
    **dict.fromkeys(("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold",
                     "failureThreshold"), INT),
})
KINDS = {"readiness_probe": "readinessProbe", "liveness_probe": "livenessProbe"}  # VMSpec's field: KubeVirt's key
MAX_SECONDS = 3600
MAX_THRESHOLD = 100
MAX_PATH = 1024
_PATH = re.compile(r"^/[\x21-\x7e]*$")  # printable, no spaces: the request line's target as it is
_FIELDS = {"initial_delay_seconds": (0, "initialDelaySeconds"), "period_seconds": (1, "periodSeconds"),
           "timeout_seconds": (1, "timeoutSeconds"), "success_threshold": (1, "successThreshold"),
           "failure_threshold": (1, "failureThreshold")}


def read_probe(tree: Mapping[str, Any], path: str) -> Probe:
    """A cleaned probe (proto.schema walked it) at ``path``."""
    if ("httpGet" in tree) == ("tcpSocket" in tree):
        raise ApiError(Code.INVALID, f"{path} takes one of httpGet and tcpSocket", path)
    key = "httpGet" if "httpGet" in tree else "tcpSocket"
    action: Mapping[str, Any] = tree[key]
    if "port" not in action:
        raise ApiError(Code.INVALID, f"{path}.{key}.port is required (a number: named ports are not supported "
                                     "by virtbus)", f"{path}.{key}.port")
    timing = {field: tree[name] for field, (_, name) in _FIELDS.items() if name in tree}
    return Probe(kind="http" if key == "httpGet" else "tcp", port=action["port"], path=action.get("path", "/"),
                 **timing)


def probe_manifest(probe: Probe) -> dict[str, Any]:
    """A Probe as KubeVirt writes it."""
    action = {"httpGet": {"port": probe.port, "path": probe.path}} if probe.kind == "http" \
        else {"tcpSocket": {"port": probe.port}}
    return {**action, **{key: getattr(probe, field) for field, (_, key) in _FIELDS.items()}}


def check_probes(spec: VMSpec) -> None:
    """Raise Code.INVALID with the native field for a probe that could not run as written."""
    for attr, key in KINDS.items():
        probe = getattr(spec, attr)
        if probe is not None:
            _check(probe, key)


def _check(probe: Probe, kind: str) -> None:
    field = f"spec.{kind}"
    if not 1 <= probe.port <= 65535:
        raise ApiError(Code.INVALID, f"{kind} port {probe.port} is out of range (1-65535)", f"{field}.port")
    if len(probe.path) > MAX_PATH or not _PATH.match(probe.path):
        raise ApiError(Code.INVALID, f"{kind}'s path is an absolute path of at most {MAX_PATH} printable "
                                     "characters without spaces", f"{field}.path")
    for name, (low, key) in _FIELDS.items():
        value = getattr(probe, name)
        high = MAX_THRESHOLD if name.endswith("threshold") else MAX_SECONDS
        if not low <= value <= high:
            raise ApiError(Code.INVALID, f"{kind}.{key} is {low} to {high}", f"{field}.{key}")
    if probe.timeout_seconds > probe.period_seconds:
        raise ApiError(Code.INVALID, f"{kind}.timeoutSeconds is at most its periodSeconds", f"{field}.timeoutSeconds")
    if kind == "livenessProbe" and probe.success_threshold != 1:  # kubelet's rule: one pass is alive
        raise ApiError(Code.INVALID, "livenessProbe.successThreshold is 1", f"{field}.successThreshold")


@dataclass
class ProbeRun:
    """What one probe of a VMI says (pure; times are the caller's clock): ``ready`` once
    success_threshold passes in a row, not once failure_threshold failures in a row (a readiness
    probe starts not ready, a liveness probe ready: alive until it fails)."""

    probe: Probe
    next_at: float  # when the next probe is due
    ready: bool = False
    passes: int = 0  # in a row
    failures: int = 0  # in a row
    last_error: str = ""

    @classmethod
    def start(cls, probe: Probe, running_since: float, ready: bool = False) -> ProbeRun:
        """ready: where it starts (a liveness probe counts as passing until it fails)."""
        return cls(probe=probe, next_at=running_since + probe.initial_delay_seconds, ready=ready)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def postpone(self, now: float) -> None:
        """A probe that could not be run at all (the prober's own fault): neither a pass nor a
        failure of the guest's, and tried again a period on."""
        self.next_at = now + self.probe.period_seconds

    def observe(self, error: str | None, now: float) -> None:
        """A probe's outcome (None: it passed; else why it failed); the next is due a period on."""
        self.next_at = now + self.probe.period_seconds
        if error is None:
            self.passes, self.failures = self.passes + 1, 0
            if self.passes >= self.probe.success_threshold:
                self.ready = True
        else:
            self.passes, self.failures, self.last_error = 0, self.failures + 1, error
            if self.failures >= self.probe.failure_threshold:
                self.ready = False


def http_request(probe: Probe, address: str) -> bytes:
    """The GET kubelet sends (its User-Agent's product, so a guest's logs tell probes apart)."""
    return (f"GET {probe.path} HTTP/1.1\r\nHost: {address}:{probe.port}\r\nUser-Agent: virtbus-probe/1.0\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n").encode()


def http_verdict(status_line: bytes) -> str | None:
    """None if the answer's status line passes (200-399), else why not."""
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not (parts[1].isdigit() and len(parts[1]) == 3):
        return f"not an HTTP answer: {status_line[:40]!r}"
    status = int(parts[1])
    return None if 200 <= status < 400 else f"HTTP status {status}"
