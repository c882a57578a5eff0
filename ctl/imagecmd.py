"""``virtbus image``: the image store (virtctl image-upload's job).

``upload`` inspects the file before it sends a byte (proto.imagefacts: raw, qcow2 or ISO, or
refused with the reason), then streams it into the object store with a progress bar on stderr,
hashing it as it goes, and records format and virtual size in the object's headers; the store's
digest is the SHA-256 of what it received, checked against ours. ``import`` is the old name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from nats.js.api import ObjectMeta, ObjectMetaOptions

from ctl import render
from ctl.client import ApiClient
from ctl.stdout import say
from proto import imagefacts
from proto.api import Ack, ImageInfo, ImageList, NameRequest
from proto.errors import ApiError, Code
from proto.imagefacts import Format, ImageFacts
from proto.validation import validate_image_reference
from servicekit.imagefile import inspect

CHUNK = 512 * 1024  # per object-store message: well under NATS's default 1 MiB payload


def add_parser(sub: Any) -> None:
    i = sub.add_parser("image", help="the image store")
    isub = i.add_subparsers(dest="image_command", required=True)
    for verb in ("upload", "import"):
        up = isub.add_parser(verb, help="check a raw, qcow2 or ISO file and put it in the store"
                             + (" (the old name of upload)" if verb == "import" else ""))
        up.add_argument("name")
        up.add_argument("--file", required=True)
        up.add_argument("--format", choices=[f.value for f in Format], default=None,
                        help="what the file must be (default: what it is, if it says so)")
    ls = isub.add_parser("list")
    ls.add_argument("-o", "--output", choices=["json", "yaml"], default=None)
    isub.add_parser("delete").add_argument("name")


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    if args.image_command in ("upload", "import"):
        await upload(api, args.name, Path(args.file), Format(args.format) if args.format else None)
    elif args.image_command == "list":
        items = (await api.call("image", "list", {}, ImageList)).items
        say(render.structured(items, args.output) if args.output else listing(items))
    else:
        say((await api.call("image", "delete", NameRequest(name=args.name), Ack)).message)
    return 0


def listing(items: list[ImageInfo]) -> str:
    return render.table(["NAME", "FORMAT", "SIZE", "VIRTUAL SIZE", "SHA256"], [
        [i.name, i.format or "<unknown>", human(i.size),
         human(i.virtual_size) if i.virtual_size is not None else "<unknown>", i.sha256 or "<none>"]
        for i in items])


async def examine(path: Path, wanted: Format | None, field: str = "file") -> ImageFacts:
    """What the file is (raw, qcow2 or ISO, its sizes), or a typed error naming the flag that gave it."""
    if not path.is_file():
        raise ApiError(Code.INVALID, f"{path} is not a file", field)
    try:
        return await asyncio.to_thread(inspect, path, wanted)
    except ApiError as exc:
        raise ApiError(exc.code, f"{path} refused: {exc.message}", exc.field) from None


async def upload(api: ApiClient, name: str, path: Path, wanted: Format | None,
                 facts: ImageFacts | None = None) -> ImageFacts:
    """facts: the file as examine() found it, when the caller has looked already."""
    validate_image_reference(name, field="name")
    facts = facts or await examine(path, wanted)
    say(f"{path}: {imagefacts.describe(facts.format)}, {human(facts.size)} "
        f"(virtual size {human(facts.virtual_size)}); uploading as image {name}")
    meta = ObjectMeta(name=name, description=f"{facts.format} image, virtual size {facts.virtual_size} bytes",
                      headers=imagefacts.metadata_headers(facts), options=ObjectMetaOptions(max_chunk_size=CHUNK))
    with open(path, "rb") as f:
        reader = HashingReader(f)
        bar = Progress(facts.size)
        ticking = asyncio.create_task(bar.tick(reader))
        try:
            info = await api.put_image(name, reader, meta)
        finally:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
        bar.finish(reader.done)
    sha = reader.sha256.hexdigest()
    if reader.done != facts.size or info.size != facts.size:
        await api.call("image", "delete", NameRequest(name=name), Ack)
        raise ApiError(Code.CONFLICT, f"{path} changed while it was uploaded ({facts.size} bytes inspected, "
                       f"{reader.done} sent): image {name} deleted; upload it again")
    if imagefacts.sha256_hex(info.digest) != sha:
        raise ApiError(Code.INTERNAL, f"the store's digest {info.digest} is not the SHA-256 of what was sent ({sha})")
    say(f"image {name} uploaded: {facts.format}, size {human(facts.size)} ({facts.size} bytes), virtual size "
        f"{human(facts.virtual_size)}, sha256 {sha}, in {bar.elapsed():.1f}s ({rate(facts.size, bar.elapsed())})")
    return ImageFacts(format=facts.format, size=facts.size, virtual_size=facts.virtual_size, sha256=sha)


class HashingReader:
    """The file as nats-py reads it (readinto, in a worker thread), hashed and counted on the way."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.sha256 = hashlib.sha256()
        self.done = 0
        self._lock = threading.Lock()

    def readinto(self, buffer: Any) -> int:
        n = self.f.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            with self._lock:
                self.sha256.update(memoryview(buffer)[:n])
                self.done += n
        return int(n or 0)


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line every few seconds elsewhere."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    async def tick(self, reader: HashingReader) -> None:
        while True:
            await asyncio.sleep(0.2 if self.tty else 5.0)
            self._show(reader.done, end="\r" if self.tty else "\n")

    def finish(self, done: int) -> None:
        self._show(done, end="\n")

    def _show(self, done: int, end: str) -> None:
        print(progress_line(done, self.total, self.elapsed()), end=end, file=sys.stderr, flush=True)


def progress_line(done: int, total: int, seconds: float, width: int = 30) -> str:
    """Pure: ``[#######.......]  45%  120.3 MiB / 256.0 MiB  85.2 MiB/s``."""
    part = done / total if total else 1.0
    filled = int(part * width)
    return (f"[{'#' * filled}{'.' * (width - filled)}] {part * 100:3.0f}%  {human(done)} / {human(total)}  "
            f"{rate(done, seconds)}")


def human(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B" if value != 1 else "1 byte"


def rate(done: int, seconds: float) -> str:
    return f"{human(int(done / seconds)) if seconds > 0 else '-'}/s"

