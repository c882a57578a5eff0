"""``virtbus create instancetype`` and ``virtbus create preference``: the manifests ``virtctl create
instancetype`` and ``virtctl create preference`` print (pure; nothing is sent), for ``... | virtbus apply
-f -``.

As virtctl: a cluster-wide kind unless ``--namespaced`` (or ``-n``, as virtctl takes a namespace given
to it), a random name unless ``--name``. Each manifest is read back by the API's own reader before it is
printed, so what is printed applies; a flag for what virtbus has not (GPUs, host devices, IO threads, a
machine type, a storage class) is refused with the flag, not printed to be refused later.
"""

from __future__ import annotations

import argparse
import secrets
import string
from typing import Any

import yaml

from proto import instancetypes, preferences
from proto.errors import ApiError, Code
from proto.schema import NAMESPACE

API_VERSION = "instancetype.kubevirt.io/v1beta1"
# virtctl's flags that name a feature virtbus has not, and why
NOT_HERE = {
    "gpu": "GPU passthrough is not supported by virtbus",
    "hostdevice": "host device passthrough is not supported by virtbus",
    "iothreadspolicy": "IO threads policies are not supported by virtbus (each disk has QEMU's own)",
    "machine_type": "virtbus gives every VM the q35 machine; a preferred machine type is not supported",
    "volume_storage_class": "virtbus has no storage classes (a volume is a file on its node)",
}


def add_parsers(csub: Any) -> None:
    i = csub.add_parser("instancetype", help="a VirtualMachine(Cluster)Instancetype manifest, printed "
                                             "(virtctl create instancetype)")
    i.add_argument("--name", default=None, help="default: (cluster)instancetype-<5 random letters>")
    i.add_argument("--cpu", type=int, required=True, help="the guest's vCPUs")
    i.add_argument("--memory", required=True, help="the guest's memory, e.g. 256Mi")
    i.add_argument("--namespaced", action="store_true", help="a VirtualMachineInstancetype (default: Cluster)")
    for flag in ("gpu", "hostdevice"):
        i.add_argument(f"--{flag}", action="append", default=[], help="refused: " + NOT_HERE[flag])
    i.add_argument("--iothreadspolicy", default=None, help="refused: " + NOT_HERE["iothreadspolicy"])
    p = csub.add_parser("preference", help="a VirtualMachine(Cluster)Preference manifest, printed "
                                           "(virtctl create preference)")
    p.add_argument("--name", default=None, help="default: (cluster)preference-<5 random letters>")
    p.add_argument("--namespaced", action="store_true", help="a VirtualMachinePreference (default: Cluster)")
    p.add_argument("--cpu-topology", default=None, help="sockets, cores or threads")
    p.add_argument("--machine-type", default=None, help="refused: " + NOT_HERE["machine_type"])
    p.add_argument("--volume-storage-class", default=None, help="refused: " + NOT_HERE["volume_storage_class"])


def _refuse_what_is_not_here(args: argparse.Namespace) -> None:
    for flag, why in NOT_HERE.items():
        if getattr(args, flag, None):
            raise ApiError(Code.INVALID, why, flag.replace("_", "-"))


def _meta(args: argparse.Namespace, kind: str, random_name: str) -> tuple[str, dict[str, Any]]:
    """The kind (namespaced or cluster-wide, as virtctl picks it) and the metadata."""
    namespaced = args.namespaced or getattr(args, "namespace", None) is not None
    prefix = kind.lower() if namespaced else f"cluster{kind.lower()}"
    name = args.name or f"{prefix}-" + (random_name or "".join(secrets.choice(string.ascii_lowercase)
                                                               for _ in range(5)))
    full = f"VirtualMachine{'' if namespaced else 'Cluster'}{kind}"
    return full, {"name": name, **({"namespace": NAMESPACE} if namespaced else {})}


def instancetype(args: argparse.Namespace, random_name: str = "") -> dict[str, Any]:
    _refuse_what_is_not_here(args)
    kind, meta = _meta(args, "Instancetype", random_name)
    doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": meta,
           "spec": {"cpu": {"guest": args.cpu}, "memory": {"guest": args.memory}}}
    _as_flag(lambda: instancetypes.parse(doc), {"spec.cpu.guest": "cpu", "spec.memory.guest": "memory",
                                                "metadata.name": "name"})
    return doc


def preference(args: argparse.Namespace, random_name: str = "") -> dict[str, Any]:
    _refuse_what_is_not_here(args)
    kind, meta = _meta(args, "Preference", random_name)
    spec = {"cpu": {"preferredCPUTopology": args.cpu_topology}} if args.cpu_topology else {}
    doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}
    _as_flag(lambda: preferences.parse(doc), {"spec.cpu.preferredCPUTopology": "cpu-topology",
                                              "metadata.name": "name"})
    return doc


def _as_flag(read: Any, flags: dict[str, str]) -> None:
    """The API's reader on the manifest; its refusal told by the flag that caused it."""
    try:
        read()
    except ApiError as exc:
        if exc.field in flags:
            raise ApiError(exc.code, f"--{flags[exc.field]}: {exc.message}", flags[exc.field]) from None
        raise


def run(args: argparse.Namespace) -> int:
    made = instancetype(args) if args.create_command == "instancetype" else preference(args)
    print(yaml.safe_dump(made, sort_keys=False), end="")
    return 0
