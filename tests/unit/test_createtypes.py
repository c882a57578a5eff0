"""virtbus create instancetype / preference: the manifests virtctl's create instancetype and create
preference print, each one the API's reader takes, and virtctl's flags for what virtbus has not refused
by the flag before anything is printed."""

from __future__ import annotations

import pytest

from ctl import cli
from ctl.createtypes import instancetype, preference
from proto import instancetypes, preferences
from proto.errors import ApiError, Code


def made(*words: str) -> dict[str, object]:
    args = cli.kubectl_forms(cli.parser().parse_args(["create", *words]))
    return instancetype(args, "abcde") if args.create_command == "instancetype" else preference(args, "abcde")


def test_an_instancetype_as_virtctl_prints_it() -> None:
    assert made("instancetype", "--cpu", "2", "--memory", "256Mi") == {
        "apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineClusterInstancetype",
        "metadata": {"name": "clusterinstancetype-abcde"},
        "spec": {"cpu": {"guest": 2}, "memory": {"guest": "256Mi"}}}
    namespaced = made("instancetype", "--name", "my-it", "--cpu", "1", "--memory", "1Gi", "--namespaced")
    assert namespaced["kind"] == "VirtualMachineInstancetype"
    assert namespaced["metadata"] == {"name": "my-it", "namespace": "default"}
    # virtctl makes the namespaced kind when it is given a namespace
    assert made("instancetype", "--cpu", "1", "--memory", "1Gi", "-n", "default")["metadata"] == {
        "name": "instancetype-abcde", "namespace": "default"}
    got = instancetypes.parse(namespaced)
    assert (got.name, got.cpus, got.memory) == ("my-it", 1, "1Gi")


def test_a_preference_as_virtctl_prints_it() -> None:
    assert made("preference") == {"apiVersion": "instancetype.kubevirt.io/v1beta1",
                                  "kind": "VirtualMachineClusterPreference",
                                  "metadata": {"name": "clusterpreference-abcde"}, "spec": {}}
    doc = made("preference", "--cpu-topology", "sockets", "--namespaced", "--name", "spread-out")
    assert doc["kind"] == "VirtualMachinePreference" and doc["spec"] == {"cpu": {"preferredCPUTopology": "sockets"}}
    assert preferences.parse(doc).preferred_cpu_topology == "sockets"


@pytest.mark.parametrize(("words", "flag", "code"), [
    (["instancetype", "--cpu", "0", "--memory", "1Gi"], "cpu", Code.INVALID),
    (["instancetype", "--cpu", "65", "--memory", "1Gi"], "cpu", Code.INVALID),
    (["instancetype", "--cpu", "1", "--memory", "lots"], "memory", Code.INVALID),
    (["instancetype", "--cpu", "1", "--memory", "1Gi", "--name", "a/b"], "name", Code.INVALID),
    (["instancetype", "--cpu", "1", "--memory", "1Gi", "--name", "u1.nano"], "name", Code.ALREADY_EXISTS),
    (["instancetype", "--cpu", "1", "--memory", "1Gi", "--gpu", "name:gpu1,devicename:nvidia"], "gpu", Code.INVALID),
    (["instancetype", "--cpu", "1", "--memory", "1Gi", "--hostdevice", "name:h,devicename:d"], "hostdevice",
     Code.INVALID),
    (["instancetype", "--cpu", "1", "--memory", "1Gi", "--iothreadspolicy", "auto"], "iothreadspolicy", Code.INVALID),
    (["preference", "--cpu-topology", "spread"], "cpu-topology", Code.INVALID),
    (["preference", "--machine-type", "q35"], "machine-type", Code.INVALID),
    (["preference", "--volume-storage-class", "local"], "volume-storage-class", Code.INVALID),
    (["preference", "--name", "Not_A_Name"], "name", Code.INVALID),
])
def test_what_it_refuses_by_the_flag(words: list[str], flag: str, code: Code) -> None:
    with pytest.raises(ApiError) as refused:
        made(*words)
    assert (refused.value.field, refused.value.code) == (flag, code)


def test_another_namespace_is_refused() -> None:
    with pytest.raises(ApiError) as refused:
        made("preference", "-n", "prod")
    assert refused.value.field == "namespace"
