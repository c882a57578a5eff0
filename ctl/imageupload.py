"""``virtbus image-upload dv|pvc NAME --size 10Gi --image-path disk.qcow2``: virtctl image-upload's
habit, a local disk image made into a new volume (KubeVirt's DataVolume or PVC; virtbus's volumes are
both).

virtbus has no upload proxy: the file is checked and streamed into the image store as image
``upload/NAME`` (ctl.imagecmd: raw, qcow2 or ISO, progress shown, digest checked), then volume NAME is
made from it. Like a WaitForFirstConsumer PVC, its file is written on the node of the first VM that
uses it; ``--node N`` (or virtctl's ``--force-bind`` with it) writes it there now and waits, with
progress. The image stays in the store (``image list``; ``image delete`` once the volume is made).
Everything is checked before a byte is sent: the size holds the image, the volume does not exist yet.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ctl import snapshotcmd
from ctl.client import ApiClient
from ctl.imagecmd import examine, upload
from ctl.stdout import say
from proto.api import NameRequest, VolumeCreate, VolumeReply
from proto.errors import ApiError, Code
from proto.quantity import InvalidQuantity, format_bytes, parse_bytes
from proto.validation import validate_volume_fields

IMAGE_PREFIX = "upload/"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("image-upload", help="a local disk image into a new volume (virtctl image-upload dv|pvc)")
    p.add_argument("kind", help="dv or pvc (both make a virtbus volume)")
    p.add_argument("name", help="the volume's name")
    p.add_argument("--image-path", default=None, help="the local raw, qcow2 or ISO file")
    p.add_argument("--size", default=None, help="the volume's size (e.g. 10Gi): at least the image's virtual size")
    p.add_argument("--pvc-size", default=None, help=argparse.SUPPRESS)  # virtctl's deprecated spelling
    p.add_argument("--node", default=None, help="write its file on this node now, and wait (virtbus's own)")
    p.add_argument("--force-bind", action="store_true", help="with --node: as virtctl's, bound now")
    p.add_argument("--wait-secs", type=int, default=300, help="seconds to wait for the volume to be Ready (--node)")
    for refused in ("--archive-path", "--default-instancetype", "--default-instancetype-kind", "--default-preference",
                    "--default-preference-kind"):
        p.add_argument(refused, default=None, help=argparse.SUPPRESS)
    for refused_flag in ("--no-create", "--datasource"):
        p.add_argument(refused_flag, action="store_true", help=argparse.SUPPRESS)
    # virtctl's upload-proxy and storage options: virtbus has neither, so they change nothing
    for ignored in ("--uploadproxy-url", "--storage-class", "--access-mode", "--volume-mode", "--retry"):
        p.add_argument(ignored, default=None, help=argparse.SUPPRESS)
    for ignored_flag in ("--insecure", "--block-volume"):
        p.add_argument(ignored_flag, action="store_true", help=argparse.SUPPRESS)


def check(args: argparse.Namespace) -> tuple[str, int]:
    """Pure: what the command line asks refused as virtctl would, or not taken here; (size, bytes)."""
    if args.kind.lower() not in ("dv", "pvc"):
        raise ApiError(Code.BAD_REQUEST, f"invalid resource type {args.kind}: dv or pvc", "kind")
    if args.archive_path is not None:
        raise ApiError(Code.INVALID, "--archive-path: a virtbus volume is a disk; upload a disk image "
                       "with --image-path", "archive-path")
    if args.no_create:
        raise ApiError(Code.INVALID, "--no-create: a virtbus volume gets its content once, when it is made; "
                       "let image-upload make it (delete the existing one first)", "no-create")
    if args.datasource or args.default_instancetype or args.default_preference or args.default_instancetype_kind \
            or args.default_preference_kind:
        raise ApiError(Code.INVALID, "DataSources and a volume's default instancetype or preference are not "
                       "kept by virtbus; set spec.instancetype and spec.preference on the VM", "datasource")
    if not args.image_path:
        raise ApiError(Code.BAD_REQUEST, "either image-path or archive-path must be provided", "image-path")
    if args.size and args.pvc_size and args.size != args.pvc_size:
        raise ApiError(Code.BAD_REQUEST, "--pvc-size and --size can not be specified at the same time", "size")
    size = args.size or args.pvc_size
    if not size:
        raise ApiError(Code.BAD_REQUEST, "--size is needed: the new volume's size (e.g. 10Gi)", "size")
    if args.force_bind and args.node is None:
        raise ApiError(Code.BAD_REQUEST, "--force-bind: name the node to bind it to with --node", "node")
    validate_volume_fields(args.name, size, IMAGE_PREFIX + args.name, args.node)
    try:
        return size, parse_bytes(size)
    except InvalidQuantity as exc:
        raise ApiError(Code.INVALID, f"--size {size}: {exc}", "size") from None


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    size, size_bytes = check(args)
    path = Path(args.image_path).expanduser()
    facts = await examine(path, None, "image-path")
    if facts.virtual_size > size_bytes:
        raise ApiError(Code.INVALID, f"--size {size} cannot hold {path}: its virtual size is "
                       f"{format_bytes(facts.virtual_size)} ({facts.virtual_size} bytes)", "size")
    try:
        await api.call("volume", "get", NameRequest(name=args.name), VolumeReply)
    except ApiError as exc:
        if exc.code is not Code.NOT_FOUND:
            raise
    else:
        raise ApiError(Code.CONFLICT, f"volume {args.name} exists already; image-upload makes a new one", "name")
    image = IMAGE_PREFIX + args.name
    await upload(api, image, path, None, facts)  # looked at once: upload checks the bytes it sends against it
    made = (await api.call("volume", "create", VolumeCreate(name=args.name, size=size, image=image, node=args.node),
                           VolumeReply)).item
    where = f"node {made.node} writes its file now" if made.node else \
        "its file is written on the node of the first VM that uses it"
    say(f"volume/{made.name} created ({made.size}, from image {image}); {where}")
    if made.node:
        await snapshotcmd.wait_volume(api, made.name, float(args.wait_secs))
    say(f"Uploading {path} completed successfully")
    return 0
