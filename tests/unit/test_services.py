"""Services and Endpoints, pure: v1 manifests as people write them (accepted, or refused by field path),
which VMIs a selector picks, the Endpoints that follow, and what the endpoints controller writes."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from proto import stored
from proto.errors import ApiError
from proto.services import VM_NAME_LABEL, endpoints_for, free_cluster_ip, parse_endpoints, parse_service, selects
from proto.spec import VMSpec
from proto.state import HEADLESS, VMI, EndpointAddress, Endpoints, EndpointSubset, Phase, ServiceType, VMIInterface
from scheduler.endpointsync import plan_endpoints

# The article's web Service (virtctl expose writes the same shape) and its headless database Service.
WEB = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "win10-http", "namespace": "default"},
       "spec": {"type": "NodePort", "selector": {"kubevirt.io/domain": "win10"},
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}]}}
MONGO = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mongo"},
         "spec": {"clusterIP": "None", "ports": [{"port": 27017, "targetPort": 27017}]}}
MONGO_ENDPOINTS = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "mongo"},
                   "subsets": [{"addresses": [{"ip": "192.168.200.21"}], "ports": [{"port": 27017}]}]}


def svc(doc: dict[str, Any]) -> Any:
    return parse_service(doc, uid="u1", now=1.0)


def with_spec(**spec: Any) -> dict[str, Any]:
    return {**WEB, "spec": {**WEB["spec"], **spec}}  # type: ignore[dict-item]


def vmi(name: str, *, labels: dict[str, str] | None = None, phase: Phase = Phase.RUNNING, ip: str | None = "10.244.1.5",
        **extra: Any) -> VMI:
    return VMI(name=name, uid=f"uid-{name}", spec=VMSpec(name=name, labels=labels or {}), created_at=0.0, phase=phase,
               node_name="node1", interfaces=[VMIInterface(name="default", ip_address=ip)] if ip else [], **extra)


def test_the_articles_services_are_accepted_as_written() -> None:
    web = svc(WEB)
    assert web.type is ServiceType.NODE_PORT and web.selector == {"kubevirt.io/domain": "win10"}
    assert (web.ports[0].port, web.ports[0].target_port, web.ports[0].node_port) == (80, 8080, 30080)
    assert web.cluster_ip == ""  # any free address, given by the api
    mongo = svc(MONGO)
    assert mongo.headless and mongo.selector == {} and mongo.type is ServiceType.CLUSTER_IP
    ends = parse_endpoints(MONGO_ENDPOINTS)
    assert ends.manual and ends.subsets[0].addresses[0].ip == "192.168.200.21"
    assert ends.subsets[0].ports[0].port == 27017


@pytest.mark.parametrize(("doc", "field"), [
    (with_spec(type="ExternalName"), "spec.type"),
    (with_spec(sessionAffinity="ClientIP"), "spec.sessionAffinity"),
    (with_spec(externalIPs=["127.0.0.1"]), "spec.externalIPs[0]"),
    (with_spec(loadBalancerIP="192.168.200.30"), "spec.loadBalancerIP"),  # a NodePort has none
    (with_spec(ipFamilies=["IPv6"]), "spec.ipFamilies"),
    (with_spec(clusterIP="10.0.0.1"), "spec.clusterIP"),  # outside the service range
    (with_spec(clusterIP="None"), "spec.clusterIP"),  # a NodePort Service is never headless
    (with_spec(ports=[{"port": 80, "targetPort": "http"}]), "spec.ports[0].targetPort"),
    (with_spec(ports=[{"port": 0}]), "spec.ports[0].port"),
    (with_spec(ports=[{"port": 80, "nodePort": 80}]), "spec.ports[0].nodePort"),
    (with_spec(ports=[{"port": 80, "protocol": "SCTP"}]), "spec.ports[0].protocol"),
    (with_spec(ports=[{"port": 80, "name": "a"}, {"port": 81}]), "spec.ports[1].name"),
    (with_spec(ports=[{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]), "spec.ports[1]"),
    (with_spec(selector={"bad key!": "x"}), "spec.selector"),
    ({**WEB, "metadata": {"name": "web", "namespace": "prod"}}, "metadata.namespace"),
    ({**WEB, "metadata": {"name": "Web_1"}}, "metadata.name"),
    ({**WEB, "metadata": {"name": "../etc"}}, "metadata.name"),
    ({**MONGO, "spec": {"type": "ClusterIP", "ports": [{"port": 1, "nodePort": 30001}]}}, "spec.ports[0].nodePort"),
])
def test_what_virtbus_cannot_honour_is_refused_by_its_path(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError) as refused:
        svc(doc)
    assert refused.value.field == field, refused.value


@pytest.mark.parametrize(("subsets", "field"), [
    ([{"addresses": [{"ip": "127.0.0.1"}]}], "subsets[0].addresses[0].ip"),
    ([{"addresses": [{"ip": "10.0.0.1; flush ruleset"}]}], "subsets[0].addresses[0].ip"),
    ([{"notReadyAddresses": [{"ip": "10.0.0.1"}]}], "subsets[0].notReadyAddresses"),
    ([{"addresses": [], "ports": [{"port": 70000}]}], "subsets[0].ports[0].port"),
])
def test_bad_endpoints_are_refused_by_their_path(subsets: list[Any], field: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_endpoints({**MONGO_ENDPOINTS, "subsets": subsets})
    assert refused.value.field == field


def test_a_selector_picks_vmis_carrying_all_its_labels_and_an_empty_one_picks_none() -> None:
    assert selects({"app": "web"}, {"app": "web", "tier": "front"})
    assert not selects({"app": "web", "tier": "back"}, {"app": "web", "tier": "front"})
    assert not selects({}, {"app": "web"})


def test_endpoints_list_ready_selected_vmis_on_the_target_port() -> None:
    service = msgspec.structs.replace(svc(WEB), cluster_ip="10.96.0.10")
    win = {"kubevirt.io/domain": "win10"}
    vmis = [vmi("a", labels=win, ip="10.244.1.9"), vmi("b", labels=win, ip="10.244.2.3"),
            vmi("other", labels={"kubevirt.io/domain": "linux"}),
            vmi("booting", labels=win, phase=Phase.SCHEDULED, ip=None),
            vmi("paused", labels=win, pause_requested=True),
            vmi("stopping", labels=win, stop_requested=True),
            vmi("gone", labels=win, phase=Phase.FAILED)]
    ends = endpoints_for(service, vmis)
    assert [(a.ip, a.vmi) for a in ends.subsets[0].addresses] == [("10.244.1.9", "a"), ("10.244.2.3", "b")]
    assert [(p.port, p.protocol) for p in ends.subsets[0].ports] == [(8080, "TCP")]
    assert endpoints_for(service, vmis[2:]) == Endpoints(name="win10-http")  # none ready: no subsets


def test_a_vm_without_labels_is_selected_by_the_label_its_instances_carry() -> None:
    service = msgspec.structs.replace(svc(WEB), selector={VM_NAME_LABEL: "plain"})
    ends = endpoints_for(service, [vmi("plain"), vmi("other")])
    assert [a.vmi for a in ends.subsets[0].addresses] == ["plain"]
    alone = vmi("plain", standalone=True)  # a VMI of its own is no VM's
    assert endpoints_for(service, [alone]).subsets == []


def test_cluster_ips_are_the_one_asked_for_if_free_else_the_lowest_free() -> None:
    assert str(free_cluster_ip(set())) == "10.96.0.2"
    assert str(free_cluster_ip({"10.96.0.2", "10.96.0.3"})) == "10.96.0.4"
    assert str(free_cluster_ip({"10.96.0.2"}, "10.96.7.7")) == "10.96.7.7"
    assert free_cluster_ip({"10.96.7.7"}, "10.96.7.7") is None


def test_the_controller_writes_what_changed_and_removes_what_no_service_selects() -> None:
    web = msgspec.structs.replace(svc(WEB), cluster_ip="10.96.0.10")
    mongo = msgspec.structs.replace(svc(MONGO), cluster_ip=HEADLESS)
    win = {"kubevirt.io/domain": "win10"}
    vmis = [vmi("a", labels=win)]
    first = plan_endpoints({"win10-http": web, "mongo": mongo}, vmis, {})
    assert [e.name for e in first.write] == ["win10-http"] and first.delete == []
    steady = {"win10-http": first.write[0], "mongo": parse_endpoints(MONGO_ENDPOINTS)}
    again = plan_endpoints({"win10-http": web, "mongo": mongo}, vmis, steady)
    assert again.write == [] and again.delete == []  # nothing changed, nothing written
    moved = [vmi("a", labels=win, ip="10.244.2.7")]
    assert plan_endpoints({"win10-http": web, "mongo": mongo}, moved, steady).write[0].subsets[0].addresses == [
        EndpointAddress(ip="10.244.2.7", vmi="a", node="node1")]
    gone = plan_endpoints({"mongo": mongo}, vmis, steady)
    assert gone.delete == ["win10-http"]  # hand-written mongo Endpoints stay


def test_a_hand_written_stored_service_or_endpoints_is_held_to_the_same_rules() -> None:
    check_service = stored.validator(type(svc(WEB)))
    good = msgspec.structs.replace(svc(WEB), name="web", cluster_ip="10.96.0.10")
    check_service("web", good)
    with pytest.raises(ApiError):
        check_service("web", msgspec.structs.replace(good, cluster_ip="8.8.8.8"))
    with pytest.raises(ApiError):
        check_service("other", good)
    check_endpoints = stored.validator(Endpoints)
    bad = Endpoints(name="web", subsets=[EndpointSubset(addresses=[EndpointAddress(ip="0.0.0.0")])])
    with pytest.raises(ApiError):
        check_endpoints("web", bad)


def test_get_services_prints_what_kubectl_would() -> None:
    from ctl import servicecmd
    from proto.api import ServiceView

    web = msgspec.structs.replace(svc(WEB), cluster_ip="10.96.0.10")
    obj = servicecmd.service_object(ServiceView(service=web))
    assert obj["kind"] == "Service" and obj["metadata"]["namespace"] == "default"
    assert obj["spec"]["ports"] == [{"protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}]
    assert servicecmd._ports(web) == "80:30080/TCP"
    ends = Endpoints(name="web", subsets=[EndpointSubset(addresses=[EndpointAddress(ip="10.244.1.5", vmi="a")],
                                                         ports=[])])
    assert servicecmd.endpoints_object(ends)["subsets"][0]["addresses"][0]["targetRef"]["name"] == "a"
    assert servicecmd._endpoints(ends) == "10.244.1.5"


def test_a_vmi_is_known_by_its_hostname_in_the_headless_service_of_its_subdomain() -> None:
    from handler.clusterdns import dns_index
    from proto.manifest import parse_manifest_obj

    doc = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "mongo-vm"},
           "spec": {"running": True, "template": {"spec": {
               "hostname": "mongo0", "subdomain": "mongo",
               "domain": {"devices": {}, "resources": {"requests": {"memory": "64M"}}}, "volumes": []}}}}
    spec = parse_manifest_obj(doc)
    assert isinstance(spec, VMSpec) and (spec.hostname, spec.subdomain, spec.guest_hostname) == (
        "mongo0", "mongo", "mongo0")
    running = VMI(name="mongo-vm", uid="u1", spec=msgspec.structs.replace(spec, labels={"app": "mongo"}),
                  created_at=0.0, phase=Phase.RUNNING, node_name="node1",
                  interfaces=[VMIInterface(name="default", ip_address="10.244.1.9")])
    headless = msgspec.structs.replace(svc(MONGO), selector={"app": "mongo"}, cluster_ip=HEADLESS)
    ends = endpoints_for(headless, [running])
    assert ends.subsets[0].addresses[0].hostname == "mongo0"
    index = dns_index([headless], {"mongo": ends})
    assert index["mongo0.mongo.default.svc.cluster.local"] == ("10.244.1.9",)
    other = msgspec.structs.replace(headless, name="other")  # not its subdomain: no name of its own there
    assert endpoints_for(other, [running]).subsets[0].addresses[0].hostname is None
    bad = json.loads(json.dumps(doc))
    bad["spec"]["template"]["spec"]["hostname"] = "a;b"
    with pytest.raises(ApiError) as refused:
        parse_manifest_obj(bad)
    assert refused.value.field == "spec.template.spec.hostname"
