"""``virtbus create vm``: a VirtualMachine manifest from flags, printed as ``virtctl create vm`` prints
it (pure; nothing is sent), for ``virtbus create vm ... | virtbus apply -f -``.

Its volumes as virtctl's: ``--volume-containerdisk src:IMAGE[,name:N][,bootorder:N]`` (an image of the
image store), ``--volume-pvc src:VOLUME[,name:N][,bootorder:N]``, ``--volume-blank size:1Gi[,name:N]``
(a DataVolume template); with no boot order given, in that order. What the manifest leaves out is
KubeVirt's defaults: each volume a virtio disk, the pod network.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import secrets
import string
from typing import Any

import yaml

from ctl import clonecmd, createtypes
from proto.errors import ApiError, Code
from proto.instancetypes import KINDS as INSTANCETYPE_KINDS
from proto.preferences import KINDS as PREFERENCE_KINDS
from proto.spec import RunStrategy
from proto.subjects import is_dns1123_label

PARAMS = {"volume-containerdisk": ("src", "name", "bootorder"), "volume-pvc": ("src", "name", "bootorder"),
          "volume-blank": ("size", "name")}


def add_parser(sub: Any) -> None:
    c = sub.add_parser("create", help="a manifest to apply (virtctl create vm, instancetype, preference)")
    csub = c.add_subparsers(dest="create_command", required=True)
    v = csub.add_parser("vm", help="a VirtualMachine manifest, printed: pipe it to `virtbus apply -f -`")
    v.add_argument("--name", default=None, help="default: vm-<5 random letters>")
    v.add_argument("--run-strategy", default="Always", help=f"one of {', '.join(s.value for s in RunStrategy)}")
    v.add_argument("--termination-grace-period", type=int, default=180)
    v.add_argument("--instancetype", default=None, help="[virtualmachine(cluster)instancetype/]NAME")
    v.add_argument("--preference", default=None, help="[virtualmachine(cluster)preference/]NAME")
    v.add_argument("--memory", default=None, help="the guest's memory (without an instancetype), e.g. 512Mi")
    for flag in PARAMS:
        v.add_argument(f"--{flag}", action="append", default=[], dest=flag.replace("-", "_"),
                       help=",".join(f"{p}:..." for p in PARAMS[flag]) + " (repeat for more)")
    v.add_argument("--cloud-init-user-data", default=None, help="base64 of the cloud-init user data")
    v.add_argument("--cloud-init-network-data", default=None, help="base64 of the cloud-init network data")
    createtypes.add_parsers(csub)
    clonecmd.add_create_parser(csub)


def _params(flag: str, text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        if not sep or key not in PARAMS[flag] or not value:
            raise ApiError(Code.INVALID, f"--{flag} {text!r}: takes {', '.join(f'{p}:VALUE' for p in PARAMS[flag])}",
                           flag)
        if key in out:
            raise ApiError(Code.INVALID, f"--{flag} {text!r}: {key} given twice", flag)
        out[key] = value
    return out


def _matcher(flag: str, text: str, kinds: tuple[str, ...]) -> dict[str, str]:
    kind, sep, name = text.rpartition("/")
    if sep and kind.lower() not in {k.lower() for k in kinds}:
        raise ApiError(Code.INVALID, f"--{flag} {text!r}: the kind is one of {', '.join(kinds)}", flag)
    return {"name": name, **({"kind": next(k for k in kinds if k.lower() == kind.lower())} if sep else {})}


def _base64(flag: str, text: str) -> str:
    try:
        base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ApiError(Code.INVALID, f"--{flag} is not base64", flag) from None
    return text


def manifest(args: argparse.Namespace, random_name: str = "") -> dict[str, Any]:
    """Pure: the VirtualMachine the flags describe, or a typed error naming the flag."""
    name = args.name or "vm-" + (random_name or "".join(secrets.choice(string.ascii_lowercase) for _ in range(5)))
    if not is_dns1123_label(name):
        raise ApiError(Code.INVALID, f"--name {name!r} is not a DNS-1123 label", "name")
    if args.run_strategy not in {s.value for s in RunStrategy}:
        raise ApiError(Code.INVALID, f"--run-strategy {args.run_strategy!r}: one of "
                                     f"{', '.join(s.value for s in RunStrategy)}", "run-strategy")
    spec: dict[str, Any] = {"runStrategy": args.run_strategy}
    domain: dict[str, Any] = {"devices": {}}
    if args.instancetype:
        spec["instancetype"] = _matcher("instancetype", args.instancetype, INSTANCETYPE_KINDS)
    elif not args.memory:
        domain["memory"] = {"guest": "512Mi"}  # virtctl's default when no instancetype sizes it
    if args.memory:
        if args.instancetype:
            raise ApiError(Code.INVALID, "--memory and --instancetype: the instancetype says the memory", "memory")
        domain["memory"] = {"guest": args.memory}
    if args.preference:
        spec["preference"] = _matcher("preference", args.preference, PREFERENCE_KINDS)
    volumes: list[dict[str, Any]] = []
    disks: list[dict[str, Any]] = []
    templates: list[dict[str, Any]] = []
    orders: set[int] = set()
    for flag, key in (("volume-containerdisk", "volume_containerdisk"), ("volume-pvc", "volume_pvc"),
                      ("volume-blank", "volume_blank")):
        for i, text in enumerate(getattr(args, key)):
            p = _params(flag, text)
            source = p.get("src") or p.get("size")
            if source is None:
                raise ApiError(Code.INVALID, f"--{flag} {text!r}: {'size' if flag == 'volume-blank' else 'src'} "
                                             "is needed", flag)
            vol_name = p.get("name") or f"{name}-{flag.removeprefix('volume-')}-{i}"
            if any(v["name"] == vol_name for v in volumes):
                raise ApiError(Code.INVALID, f"--{flag} {text!r}: a volume named {vol_name!r} already", flag)
            if flag == "volume-containerdisk":
                volumes.append({"name": vol_name, "containerDisk": {"image": source}})
            elif flag == "volume-pvc":
                volumes.append({"name": vol_name, "persistentVolumeClaim": {"claimName": source}})
            else:
                templates.append({"metadata": {"name": vol_name}, "spec": {
                    "source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": source}}}}})
                volumes.append({"name": vol_name, "dataVolume": {"name": vol_name}})
            if "bootorder" in p:
                order = int(p["bootorder"]) if p["bootorder"].isdigit() else 0
                if order < 1 or order in orders:
                    raise ApiError(Code.INVALID, f"--{flag} {text!r}: bootorder is a number from 1, each once", flag)
                orders.add(order)
                disks.append({"name": vol_name, "bootOrder": order})
    cloud_init = {k: _base64(flag, v) for k, flag, v in (
        ("userDataBase64", "cloud-init-user-data", args.cloud_init_user_data),
        ("networkDataBase64", "cloud-init-network-data", args.cloud_init_network_data)) if v}
    if cloud_init:
        volumes.append({"name": "cloudinitdisk", "cloudInitNoCloud": cloud_init})
    if disks:
        domain["devices"] = {"disks": disks}
    if templates:
        spec["dataVolumeTemplates"] = templates
    spec["template"] = {"spec": {"domain": domain, "terminationGracePeriodSeconds": args.termination_grace_period,
                                 **({"volumes": volumes} if volumes else {})}}
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name}, "spec": spec}


def run(args: argparse.Namespace) -> int:
    if args.create_command == "clone":
        return clonecmd.run_create(args)
    if args.create_command != "vm":
        return createtypes.run(args)
    print(yaml.safe_dump(manifest(args), sort_keys=False), end="")
    return 0
