"""Reading the facts of an image file (its size, first bytes, and what qemu-img says of it) for
proto.imagefacts to judge. Blocking: callers run it in a thread.

Used by the CLI before an upload (thorough: qemu-img check and map too) and by a node on its
cached copy before QEMU gets it (info only: the copy's digest was verified as it was fetched).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from proto.imagefacts import HEAD_BYTES, Format, ImageFacts, Probe, QemuInfo, node_format, screen, verdict

QEMU_IMG_TIMEOUT_S = 300.0


def probe(path: Path, *, thorough: bool) -> Probe:
    """Raises ImageRefused before qemu-img ever opens a file that names another one."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        size = f.seek(0, 2)
    screen(size, head)
    done = _qemu_img("info", "--output=json", str(path))
    if done.returncode != 0:
        return Probe(size=size, head=head, info_error=_reason(done.stderr))
    info = qemu_info(json.loads(done.stdout))
    check_error, data_end = None, None
    if thorough and info.format == "qcow2" and not info.backing_file and not info.data_file:
        check_error = _check(path)
        data_end = _data_end(path)
    return Probe(size=size, head=head, info=info, check_error=check_error, data_end=data_end)


def inspect(path: Path, wanted: Format | None) -> ImageFacts:
    """What the file is (thoroughly: before it goes to the store), or ImageRefused."""
    return verdict(probe(path, thorough=True), wanted)


def usable_format(path: Path, recorded: Format | None) -> str:
    """The format a node hands QEMU for its cached copy (``raw`` or ``qcow2``), or ImageRefused."""
    return node_format(probe(path, thorough=False), recorded)


def qemu_info(doc: dict[str, Any]) -> QemuInfo:
    specific = (doc.get("format-specific") or {}).get("data") or {}
    return QemuInfo(format=str(doc.get("format")), virtual_size=int(doc.get("virtual-size") or 0),
                    backing_file=doc.get("backing-filename") or doc.get("full-backing-filename"),
                    data_file=specific.get("data-file"), encrypted=bool(doc.get("encrypted")),
                    corrupt=bool(specific.get("corrupt")))


def _check(path: Path) -> str | None:
    """qemu-img check's reason when it found corruption or could not finish; leaks alone (exit 3)
    waste space but lose nothing, so they pass."""
    done = _qemu_img("check", "--output=json", str(path))
    if done.returncode in (0, 3):
        return None
    errors = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    try:
        count = json.loads(done.stdout).get("corruptions")
    except ValueError:
        count = None
    shown = "; ".join(dict.fromkeys(errors[:3])) or "no reason given"
    return f"{count} corruptions: {shown}" if count else shown


def _data_end(path: Path) -> int | None:
    """Where the last data cluster ends in the file: a file cut inside its last cluster passes
    qemu-img check (qemu reads what is missing as zeros), but not this."""
    done = _qemu_img("map", "--output=json", str(path))
    if done.returncode != 0:
        return None
    ends = [int(e["offset"]) + int(e["length"]) for e in json.loads(done.stdout)
            if e.get("data") and "offset" in e]  # compressed clusters have no offset of their own
    return max(ends, default=None)


def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT_S,
                          check=False)


def _reason(stderr: str) -> str:
    return " ".join(stderr.replace("qemu-img: ", "").split())[:500] or "no reason given"
