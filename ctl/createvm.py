"""``virtbus create vm``: a VirtualMachine manifest from flags, printed as ``virtctl create vm`` prints
it (pure; nothing is sent), for ``virtbus create vm ... | virtbus apply -f -``.

Its volumes as virtctl's: ``--volume-containerdisk src:IMAGE[,name:N][,bootorder:N]`` (an image of the
image store), ``--volume-pvc src:VOLUME[,name:N][,bootorder:N]``, ``--volume-blank size:1Gi[,name:N]``
(a DataVolume template), ``--volume-import type:blank|registry,size:S[,url:docker://IMAGE][,name:N]
[,bootorder:N]`` (the same, blank or of an image of the image store); with no boot order given, in
that order. ``--user``, ``--password-file`` and ``--ssh-key`` make virtctl's cloud-config user data (its
values quoted, so none can add a key of its own), on the ``--cloud-init`` source asked for. What the
manifest leaves out is KubeVirt's defaults: each volume a virtio disk, the pod network.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import secrets
import string
import sys
from pathlib import Path
from typing import Any

import yaml

from ctl import clonecmd, createtypes
from proto.errors import ApiError, Code
from proto.instancetypes import KINDS as INSTANCETYPE_KINDS
from proto.preferences import KINDS as PREFERENCE_KINDS
from proto.spec import RunStrategy
from proto.subjects import is_dns1123_label

PARAMS = {"volume-containerdisk": ("src", "name", "bootorder"), "volume-pvc": ("src", "name", "bootorder"),
          "volume-blank": ("size", "name"),
          "volume-import": ("type", "size", "name", "bootorder", "url", "pullmethod")}
# virtctl's --volume-import types: a DataVolume template of each; virtbus's DataVolumes are blank or an
# image of its image store (CDI's registry source), the others are said so
IMPORT_TYPES = ("blank", "registry")
OTHER_IMPORT_TYPES = ("gcs", "http", "imageio", "pvc", "s3", "vddk", "snapshot", "ds")
CLOUD_INIT_TYPES = ("nocloud", "configdrive", "none")


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
    v.add_argument("--cloud-init", default="nocloud", help=f"the cloud-init data source: {', '.join(CLOUD_INIT_TYPES)}")
    v.add_argument("--cloud-init-user-data", default=None, help="base64 of the cloud-init user data")
    v.add_argument("--cloud-init-network-data", default=None, help="base64 of the cloud-init network data")
    v.add_argument("--user", default=None, help="the user cloud-init's generated user data adds")
    v.add_argument("--password-file", default=None, help="a file with that user's password (stored in clear)")
    v.add_argument("--ssh-key", action="append", default=[], help="an SSH authorized key for it (repeat for more)")
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


def _import_source(text: str, p: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """--volume-import's DataVolume source and size, as virtctl's type:blank|registry take them."""
    kind = p.get("type")
    if kind in OTHER_IMPORT_TYPES:
        raise ApiError(Code.INVALID, f"--volume-import {text!r}: type {kind}: virtbus's DataVolumes are blank or "
                       "an image of its image store (type:registry,url:docker://IMAGE)", "volume-import")
    if kind not in IMPORT_TYPES:
        raise ApiError(Code.INVALID, f"--volume-import {text!r}: type is one of {', '.join(IMPORT_TYPES)}",
                       "volume-import")
    if kind == "blank":
        if "url" in p or "pullmethod" in p:
            raise ApiError(Code.INVALID, f"--volume-import {text!r}: a blank volume has no url", "volume-import")
        return {"blank": {}}, p.get("size")
    if "url" not in p:
        raise ApiError(Code.INVALID, f"--volume-import {text!r}: url is needed (docker://IMAGE)", "volume-import")
    return {"registry": {"url": p["url"], **({"pullMethod": p["pullmethod"]} if "pullmethod" in p else {})}}, \
        p.get("size")


def _user_data(args: argparse.Namespace) -> str:
    """virtctl's generated cloud-config for --user, --password-file and --ssh-key ("" without them)."""
    if not (args.user or args.password_file or args.ssh_key):
        return ""
    if args.cloud_init_user_data:
        raise ApiError(Code.INVALID, "--cloud-init-user-data is the whole user data: --user, --password-file and "
                       "--ssh-key add to the one virtbus writes", "cloud-init-user-data")
    config = "#cloud-config"
    if args.user:
        if not all(c.isalnum() or c in "._-" for c in args.user):
            raise ApiError(Code.INVALID, f"--user {args.user!r}: letters, digits and ._- only", "user")
        config += f"\nuser: {args.user}"
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().strip()
        except OSError as exc:
            raise ApiError(Code.INVALID, f"--password-file: {exc.strerror or exc}", "password-file") from None
        if "\n" in password:
            raise ApiError(Code.INVALID, "--password-file: the password is one line", "password-file")
        if password:
            print("WARNING: --password-file: The password is stored in cleartext in the VM definition!",
                  file=sys.stderr)
            config += f"\npassword: {json.dumps(password)}\nchpasswd: {{ expire: False }}"
    keys = [k.strip() for arg in args.ssh_key for k in arg.split(",") if k.strip()]
    if keys:
        if any("\n" in k for k in keys):
            raise ApiError(Code.INVALID, "--ssh-key: a key is one line", "ssh-key")
        config += "\nssh_authorized_keys:" + "".join(f"\n  - {json.dumps(k)}" for k in keys)
    return config


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
                      ("volume-blank", "volume_blank"), ("volume-import", "volume_import")):
        for i, text in enumerate(getattr(args, key)):
            p = _params(flag, text)
            if flag == "volume-import":
                dv_source, source = _import_source(text, p)
            else:
                dv_source, source = {"blank": {}}, p.get("src") or p.get("size")
            if source is None:
                raise ApiError(Code.INVALID, f"--{flag} {text!r}: {'size' if flag == 'volume-blank' else 'src'} "
                                             "is needed", flag)
            kind = p.get("type", "") if flag == "volume-import" else flag.removeprefix("volume-")
            vol_name = p.get("name") or f"{name}-{kind}-{i}"
            if any(v["name"] == vol_name for v in volumes):
                raise ApiError(Code.INVALID, f"--{flag} {text!r}: a volume named {vol_name!r} already", flag)
            if flag == "volume-containerdisk":
                volumes.append({"name": vol_name, "containerDisk": {"image": source}})
            elif flag == "volume-pvc":
                volumes.append({"name": vol_name, "persistentVolumeClaim": {"claimName": source}})
            else:
                templates.append({"metadata": {"name": vol_name}, "spec": {
                    "source": dv_source, "storage": {"resources": {"requests": {"storage": source}}}}})
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
    if user_data := _user_data(args):
        cloud_init["userData"] = user_data
    if args.cloud_init.lower() not in CLOUD_INIT_TYPES:
        raise ApiError(Code.INVALID, f"--cloud-init {args.cloud_init!r}: one of {', '.join(CLOUD_INIT_TYPES)}",
                       "cloud-init")
    if cloud_init and args.cloud_init.lower() != "none":
        kind = "cloudInitConfigDrive" if args.cloud_init.lower() == "configdrive" else "cloudInitNoCloud"
        volumes.append({"name": "cloudinitdisk", kind: cloud_init})
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
