"""A VMI's dnsPolicy and dnsConfig: read from KubeVirt manifests and written back, refused by path where
Kubernetes or DHCPv4 cannot take them, and turned into the name servers and search list of its lease."""

from __future__ import annotations

import copy
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import msgspec
import pytest

from launcher.podnic import guest_resolver
from proto.dnsconfig import CLUSTER, DNS_SEARCH, Resolver, read_resolv_conf, resolver, search_bytes
from proto.errors import ApiError, Code
from proto.manifest import parse_manifest_obj
from proto.resources import vm_manifest
from proto.spec import DNSConfig, DNSOption, VMSpec
from proto.state import VM
from proto.stored import check_vm

BASE: dict[str, Any] = {
    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "named"},
    "spec": {"running": True, "template": {"spec": {
        "domain": {"memory": {"guest": "64Mi"}, "devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
        "networks": [{"name": "default", "pod": {}}]}}},
}
WHERE = "spec.template.spec"


def manifest(**spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out["spec"]["template"]["spec"].update(spec)
    return out


def parsed(**spec: Any) -> VMSpec:
    vm = parse_manifest_obj(manifest(**spec))
    assert isinstance(vm, VMSpec)
    return vm


def test_read_and_written_back_as_kubernetes_has_them() -> None:
    dns = {"nameservers": ["192.0.2.53"], "searches": ["corp.example."],
           "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}
    vm = parsed(dnsPolicy="None", dnsConfig=dns)
    assert vm.dns_policy == "None"
    assert vm.dns_config == DNSConfig(nameservers=["192.0.2.53"], searches=["corp.example."],
                                      options=[DNSOption(name="ndots", value="2"), DNSOption(name="edns0")])
    back = vm_manifest(vm)["spec"]["template"]["spec"]
    assert back["dnsPolicy"] == "None" and back["dnsConfig"] == dns
    assert parse_manifest_obj(vm_manifest(vm)) == vm
    # the default policy is not written, as KubeVirt leaves it out
    plain = parsed()
    assert plain.dns_policy == "ClusterFirst" and plain.dns_config is None
    assert "dnsPolicy" not in vm_manifest(plain)["spec"]["template"]["spec"]
    # and a native JSON spec says the same in the same words
    native = msgspec.json.decode(msgspec.json.encode(vm), type=VMSpec)
    assert native == vm and b'"dnsPolicy":"None"' in msgspec.json.encode(vm)


@pytest.mark.parametrize(("spec", "field", "words"), [
    ({"dnsPolicy": "None"}, f"{WHERE}.dnsConfig.nameservers", "at least one"),
    ({"dnsPolicy": "None", "dnsConfig": {"searches": ["corp.example"]}}, f"{WHERE}.dnsConfig.nameservers",
     "at least one"),
    ({"dnsPolicy": "Sometimes"}, f"{WHERE}.dnsPolicy", "ClusterFirst"),
    ({"dnsConfig": {"nameservers": ["192.0.2.1", "fd00::53"]}}, f"{WHERE}.dnsConfig.nameservers[1]", "IPv4"),
    ({"dnsConfig": {"nameservers": ["8.8.8.8; rm -rf /"]}}, f"{WHERE}.dnsConfig.nameservers[0]", "IPv4"),
    ({"dnsConfig": {"nameservers": [f"192.0.2.{i}" for i in range(4)]}}, f"{WHERE}.dnsConfig.nameservers",
     "at most 3"),
    ({"dnsConfig": {"searches": ["ok.example", "Bad_Domain"]}}, f"{WHERE}.dnsConfig.searches[1]", "DNS-1123"),
    ({"dnsConfig": {"searches": ["a" * 64 + ".example"]}}, f"{WHERE}.dnsConfig.searches[0]", "DNS-1123"),
    ({"dnsConfig": {"searches": [f"d{i}.example" for i in range(33)]}}, f"{WHERE}.dnsConfig.searches",
     "at most 32"),
    # what fits Kubernetes' limits but not the one DHCP option the guest learns its search list from
    ({"dnsConfig": {"searches": ["a" * 60 + "." + "b" * 60 + ".example", "c" * 60 + "." + "d" * 60 + ".example"]}},
     f"{WHERE}.dnsConfig.searches", "323 bytes of DHCP option 119"),
    ({"dnsConfig": {"options": [{"name": "nd ots"}]}}, f"{WHERE}.dnsConfig.options[0].name", "option name"),
    ({"dnsConfig": {"options": [{"value": "2"}]}}, f"{WHERE}.dnsConfig.options[0].name", "option name"),
    ({"dnsConfig": {"options": [{"name": "ndots", "value": "2\noptions rotate"}]}},
     f"{WHERE}.dnsConfig.options[0].value", "one word"),
    ({"dnsConfig": {"options": [{"name": "ndots", "value": 2}]}}, f"{WHERE}.dnsConfig.options[0].value", "string"),
    ({"dnsConfig": {"nameserver": ["192.0.2.1"]}}, f"{WHERE}.dnsConfig.nameserver", "not supported"),
])
def test_refused_with_the_fields_path(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_manifest_obj(manifest(**spec))
    assert err.value.field == field and words in err.value.message
    assert err.value.code in (Code.INVALID, Code.BAD_REQUEST)


def test_a_bad_config_written_on_the_bus_by_hand_is_refused() -> None:
    def record(**spec: Any) -> VM:
        return msgspec.json.decode(msgspec.json.encode({"spec": {"name": "named", **spec}, "createdAt": 1.0}),
                                   type=VM)

    check_vm("named", record(dnsPolicy="None", dnsConfig={"nameservers": ["192.0.2.1"]}))
    with pytest.raises(ApiError) as err:
        check_vm("named", record(dnsPolicy="None", dnsConfig={"nameservers": ["fd00::1"]}))
    assert err.value.field == "spec.dnsConfig.nameservers[0]"
    with pytest.raises(ApiError) as err:
        check_vm("named", record(dnsPolicy="None"))
    assert err.value.field == "spec.dnsConfig.nameservers"


def test_cluster_first_adds_the_configs_after_the_clusters() -> None:
    config = DNSConfig(nameservers=["192.0.2.53", "10.96.0.10"], searches=["corp.example.", "cluster.local"])
    got = resolver("ClusterFirst", config, Resolver((IPv4Address("198.51.100.1"),), ("host.example",)))
    # the node's resolv.conf plays no part, and what is there already is named once
    assert got == Resolver((IPv4Address("10.96.0.10"), IPv4Address("192.0.2.53")), (*DNS_SEARCH, "corp.example"))
    assert resolver("ClusterFirstWithHostNet", None, Resolver()) == CLUSTER
    assert resolver("ClusterFirst", None, Resolver()) == CLUSTER


def test_default_is_the_nodes_own_and_none_only_the_configs() -> None:
    host = Resolver((IPv4Address("198.51.100.1"), IPv4Address("198.51.100.2")), ("lab.example",))
    assert resolver("Default", None, host) == host
    config = DNSConfig(nameservers=["192.0.2.1", "192.0.2.2"], searches=["corp.example"])
    both = resolver("Default", config, host)
    assert [str(s) for s in both.nameservers] == ["198.51.100.1", "198.51.100.2", "192.0.2.1"]  # three, at most
    assert both.searches == ("lab.example", "corp.example")
    assert resolver("None", config, host) == Resolver((IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")),
                                                      ("corp.example",))


def test_a_nodes_search_list_too_long_for_dhcp_keeps_what_fits_in_order() -> None:
    long = tuple(f"{'x' * 45}.n{i}.example" for i in range(8))  # 58 bytes each
    got = resolver("Default", DNSConfig(searches=["corp.example"]), Resolver((), long))
    assert got.searches == (*long[:4], "corp.example") and search_bytes(got.searches) <= 255
    assert search_bytes((*long[:5], "corp.example")) > 255


def test_a_nodes_resolv_conf_as_a_guest_may_use_it() -> None:
    text = """# written by hand
nameserver 127.0.0.53
nameserver 198.51.100.1 ; the site's
nameserver fd00::53
nameserver 0.0.0.0
domain old.example
search lab.example. Other.Example bad_name
nameserver 198.51.100.1
nameserver 198.51.100.2
options ndots:2
"""
    assert read_resolv_conf(text) == Resolver((IPv4Address("198.51.100.1"), IPv4Address("198.51.100.2")),
                                              ("lab.example", "other.example"))
    assert read_resolv_conf("") == Resolver()
    assert read_resolv_conf("search a.example\ndomain b.example\n").searches == ("b.example",)  # the last wins


def test_the_launcher_reads_the_nodes_file_only_for_default(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 198.51.100.7\nsearch lab.example\n")
    default = parsed(dnsPolicy="Default")
    assert guest_resolver(default, conf) == Resolver((IPv4Address("198.51.100.7"),), ("lab.example",))
    assert guest_resolver(parsed(), conf) == CLUSTER
    # a node without one: the guest gets what its dnsConfig says, and no error
    assert guest_resolver(default, tmp_path / "missing") == Resolver()
    with_config = parsed(dnsPolicy="Default", dnsConfig={"nameservers": ["192.0.2.9"]})
    assert guest_resolver(with_config, tmp_path / "missing").nameservers == (IPv4Address("192.0.2.9"),)
