"""``virtbus expand --vm NAME | --file FILE [-o yaml|json]``: virtctl expand, a VirtualMachine with its
instancetype's size and its preference's defaults written into its template, as KubeVirt's
expand-spec gives it: the machine it runs as, said in full.

A VM that exists was expanded when it was applied (its record keeps the size and the instancetype's
name): it is printed without the reference. A file is expanded here, as the API expands what is
applied (proto.instancetypes, then proto.preferences), with the cluster's instancetypes and
preferences as the API lists them, and checked as apply checks it; nothing is applied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import yaml

from ctl.client import ApiClient
from ctl.stdout import say
from proto import instancetypes, preferences
from proto.api import InstancetypeList, NameRequest, VMReply
from proto.errors import ApiError, Code
from proto.manifest import load_manifest, parse_manifest_obj
from proto.preferences import PreferenceList
from proto.resources import vm_manifest
from proto.spec import VMSpec


def add_parser(sub: Any) -> None:
    p = sub.add_parser("expand", help="a VM with its instancetype and preference written in (virtctl expand)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--vm", default=None, help="a VM of the cluster")
    source.add_argument("-f", "--file", default=None, help="a VirtualMachine manifest (- for stdin)")
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    if args.vm is not None:
        spec = (await api.call("vm", "get", NameRequest(name=args.vm), VMReply)).item.vm.spec
    else:
        spec = await expanded_file(api, args.file)
    obj = vm_manifest(msgspec.structs.replace(spec, instancetype=None))  # its size in full, no reference
    say(json.dumps(obj, indent=2) if args.output == "json" else yaml.safe_dump(obj, sort_keys=False).rstrip())
    return 0


async def expanded_file(api: ApiClient, path: str) -> VMSpec:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise ApiError(Code.BAD_REQUEST, f"cannot read {path}: {exc.strerror or exc}", "file") from None
    manifest = load_manifest(data)
    if not (isinstance(manifest, dict) and manifest.get("kind") == "VirtualMachine"):
        raise ApiError(Code.BAD_REQUEST, "expand takes one VirtualMachine manifest", "file")
    kinds = (await api.call("instancetype", "list", {}, InstancetypeList)).items
    prefs = (await api.call("preference", "list", {}, PreferenceList)).items
    sized = instancetypes.expand(manifest, {t.name: t for t in kinds}.get)  # each as it is without a reference
    spec = parse_manifest_obj(preferences.expand(sized, {p.name: p for p in prefs}.get))
    assert isinstance(spec, VMSpec)  # its kind was checked above
    return spec
