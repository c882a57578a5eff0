"""KubeVirt's readinessProbe: read from a manifest as KubeVirt writes it, refused by path where virtbus
cannot run it, printed back, its run's bookkeeping, and what Ready it makes of a VMI: not Ready while
its probe has not passed (so in no Service's endpoints), Ready only as its node's probe says."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import yaml

from ctl import render
from handler.probes import LOOK_S, Prober
from proto.errors import ApiError, Code
from proto.manifest import parse_instance, parse_manifest
from proto.nodeapi import WAITING_FOR_PROBE, NodeCondition, StatusReply, StatusReport, apply_report
from proto.probes import ProbeRun, http_request, http_verdict
from proto.resources import vmi_spec
from proto.services import ready_address
from proto.spec import Network, Probe, VMSpec
from proto.state import VMI, Condition, Phase, VMIInterface
from scheduler.nodelife import mark_unknown, restore
from servicekit.tunnelpump import HalfClosingEnd
from tests.conftest import REPO


def vmi_doc(probe: object, **spec: object) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "testvmi.yaml").read_text())
    doc["spec"]["readinessProbe"] = probe
    doc["spec"].update(spec)
    return dict(doc)


def read(doc: dict[str, Any]) -> VMSpec:
    return parse_instance(json.dumps(doc).encode())


def test_kubevirts_probes_as_written() -> None:
    http = read(vmi_doc({"httpGet": {"port": 80, "path": "/healthz"}, "initialDelaySeconds": 5,
                         "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 4, "successThreshold": 2}))
    assert http.readiness_probe == Probe(kind="http", port=80, path="/healthz", initial_delay_seconds=5,
                                         period_seconds=2, timeout_seconds=2, failure_threshold=4, success_threshold=2)
    tcp = read(vmi_doc({"tcpSocket": {"port": 22}}))
    assert tcp.readiness_probe == Probe(kind="tcp", port=22)  # kubelet's defaults: every 10 s, 1 s, 1 and 3
    # printed back as KubeVirt writes it, and read again the same
    for spec in (http, tcp):
        again = vmi_doc(vmi_spec(spec)["readinessProbe"])
        assert read(again).readiness_probe == spec.readiness_probe
    vm = yaml.safe_load((REPO / "examples" / "testvm-masquerade.yaml").read_text())
    vm["spec"]["template"]["spec"]["readinessProbe"] = {"tcpSocket": {"port": 80}}
    made = parse_manifest(json.dumps(vm).encode())
    assert isinstance(made, VMSpec) and made.readiness_probe == Probe(kind="tcp", port=80)


@pytest.mark.parametrize(("probe", "field", "code"), [
    ({"exec": {"command": ["cat", "/tmp/ready"]}}, "spec.readinessProbe.exec", Code.INVALID),
    ({"guestAgentPing": {}}, "spec.readinessProbe.guestAgentPing", Code.INVALID),
    ({"httpGet": {"port": 80, "host": "192.0.2.1"}}, "spec.readinessProbe.httpGet.host", Code.INVALID),
    ({"tcpSocket": {"port": 22, "host": "db"}}, "spec.readinessProbe.tcpSocket.host", Code.INVALID),
    ({"httpGet": {"port": 443, "scheme": "HTTPS"}}, "spec.readinessProbe.httpGet.scheme", Code.INVALID),
    ({"httpGet": {"port": 80, "httpHeaders": [{"name": "X", "value": "y"}]}},
     "spec.readinessProbe.httpGet.httpHeaders", Code.INVALID),
    ({"tcpSocket": {"port": "ssh"}}, "spec.readinessProbe.tcpSocket.port", Code.BAD_REQUEST),
    ({"httpGet": {"path": "/"}}, "spec.readinessProbe.httpGet.port", Code.INVALID),
    ({"httpGet": {"port": 80}, "tcpSocket": {"port": 80}}, "spec.readinessProbe", Code.INVALID),
    ({"periodSeconds": 5}, "spec.readinessProbe", Code.INVALID),
    ({"tcpSocket": {"port": 0}}, "spec.readinessProbe.tcpSocket.port", Code.INVALID),
    ({"httpGet": {"port": 80, "path": "/a b"}}, "spec.readinessProbe.httpGet.path", Code.INVALID),
    ({"httpGet": {"port": 80, "path": "healthz"}}, "spec.readinessProbe.httpGet.path", Code.INVALID),
    ({"httpGet": {"port": 80, "path": "/\r\nX: y"}}, "spec.readinessProbe.httpGet.path", Code.INVALID),
    ({"tcpSocket": {"port": 22}, "periodSeconds": 0}, "spec.readinessProbe.periodSeconds", Code.INVALID),
    ({"tcpSocket": {"port": 22}, "failureThreshold": 0}, "spec.readinessProbe.failureThreshold", Code.INVALID),
    ({"tcpSocket": {"port": 22}, "initialDelaySeconds": -1}, "spec.readinessProbe.initialDelaySeconds", Code.INVALID),
    ({"tcpSocket": {"port": 22}, "timeoutSeconds": 11}, "spec.readinessProbe.timeoutSeconds", Code.INVALID),
    ({"tcpSocket": {"port": 22}, "bogus": 1}, "spec.readinessProbe.bogus", Code.INVALID),
])
def test_what_virtbus_cannot_run_is_refused_by_path(probe: object, field: str, code: Code) -> None:
    with pytest.raises(ApiError) as refused:
        read(vmi_doc(probe))
    assert (refused.value.field, refused.value.code) == (field, code), refused.value


def test_a_liveness_probe_as_written_and_its_own_rule() -> None:
    spec = read(vmi_doc({"tcpSocket": {"port": 22}}, livenessProbe={"httpGet": {"port": 80, "path": "/alive"},
                                                                    "initialDelaySeconds": 30}))
    assert spec.liveness_probe == Probe(kind="http", port=80, path="/alive", initial_delay_seconds=30)
    assert read(vmi_doc(vmi_spec(spec)["readinessProbe"], livenessProbe=vmi_spec(spec)["livenessProbe"])) == spec
    for probe, field in (({"exec": {"command": ["true"]}}, "spec.livenessProbe.exec"),
                         ({"tcpSocket": {"port": 22}, "successThreshold": 2}, "spec.livenessProbe.successThreshold"),
                         ({"tcpSocket": {"port": 99999}}, "spec.livenessProbe.tcpSocket.port")):
        with pytest.raises(ApiError) as refused:
            read(vmi_doc({"tcpSocket": {"port": 22}}, livenessProbe=probe))
        assert refused.value.field == field, refused.value


def test_a_liveness_run_is_alive_until_its_failures() -> None:
    run = ProbeRun.start(Probe(kind="tcp", port=22, failure_threshold=2), running_since=0.0, ready=True)
    run.observe("refused", 0.0)
    assert run.ready
    run.observe("refused", 10.0)
    assert not run.ready and run.failures == 2


def test_a_run_is_ready_after_its_passes_and_not_after_its_failures() -> None:
    run = ProbeRun.start(Probe(kind="tcp", port=22, initial_delay_seconds=5, period_seconds=2, success_threshold=2,
                               failure_threshold=3), running_since=100.0)
    assert not run.due(104.9) and run.due(105.0)
    run.observe(None, 105.0)
    assert not run.ready and not run.due(106.9) and run.due(107.0)  # one pass of the two it needs
    run.observe(None, 107.0)
    assert run.ready
    run.observe("refused", 109.0)
    run.observe("refused", 111.0)
    assert run.ready  # two failures of three
    run.observe(None, 113.0)
    run.observe("refused", 115.0)
    run.observe("refused", 117.0)
    assert run.ready  # a pass between: the count starts again
    run.observe("timed out", 119.0)
    assert not run.ready and run.last_error == "timed out"


def test_the_request_and_the_answers() -> None:
    request = http_request(Probe(kind="http", port=8080, path="/healthz?full=1"), "10.244.0.7")
    assert request.startswith(b"GET /healthz?full=1 HTTP/1.1\r\nHost: 10.244.0.7:8080\r\n")
    assert request.endswith(b"\r\n\r\n")
    assert http_verdict(b"HTTP/1.1 200 OK") is None and http_verdict(b"HTTP/1.0 302 Found") is None
    assert http_verdict(b"HTTP/1.1 503 Service Unavailable") == "HTTP status 503"
    assert http_verdict(b"HTTP/1.1 404") == "HTTP status 404"
    assert "not an HTTP answer" in (http_verdict(b"SSH-2.0-OpenSSH_9.2") or "")
    assert "not an HTTP answer" in (http_verdict(b"") or "")


def running(probe: Probe | None, ready: str = "False") -> VMI:
    spec = VMSpec(name="web", readiness_probe=probe)
    return VMI(name="web", uid="u1", spec=spec, created_at=time.time(), phase=Phase.RUNNING, node_name="node1",
               interfaces=[VMIInterface(name="default", ip_address="10.244.0.7")],
               conditions=[Condition(type="Ready", status=ready, reason="" if ready == "True" else WAITING_FOR_PROBE)])


def test_running_with_a_probe_is_not_ready_until_the_node_says() -> None:
    probe = Probe(kind="tcp", port=80)
    scheduled = VMI(name="web", uid="u1", spec=VMSpec(name="web", readiness_probe=probe), created_at=0.0,
                    phase=Phase.SCHEDULED, node_name="node1")
    now = apply_report(scheduled, StatusReport(vmi="web", uid="u1", phase=Phase.RUNNING), "node1", 10.0)
    assert now is not None
    assert [(c.type, c.status, c.reason) for c in now.conditions] == [("Ready", "False", WAITING_FOR_PROBE)]
    said = apply_report(running(probe), StatusReport(vmi="web", uid="u1", conditions=[
        NodeCondition(type="Ready", status="True")]), "node1", 11.0)
    assert said is not None and [(c.type, c.status) for c in said.conditions] == [("Ready", "True")]
    # said as it ends: the end's Ready stands
    ended = apply_report(running(probe, "True"), StatusReport(vmi="web", uid="u1", phase=Phase.SUCCEEDED, conditions=[
        NodeCondition(type="Ready", status="True")]), "node1", 12.0)
    assert ended is not None and [(c.status, c.reason) for c in ended.conditions if c.type == "Ready"] == [
        ("False", "Succeeded")]


def test_a_node_says_ready_only_of_an_instance_with_a_probe() -> None:
    with pytest.raises(ApiError) as refused:
        apply_report(running(None, "True"), StatusReport(vmi="web", uid="u1", conditions=[
            NodeCondition(type="Ready", status="False")]), "node1", 1.0)
    assert refused.value.code is Code.INVALID and refused.value.field == "conditions[0].type"
    with pytest.raises(ApiError):
        apply_report(running(Probe(kind="tcp", port=80)), StatusReport(vmi="web", uid="u1", conditions=[
            NodeCondition(type="Ready", status="Maybe")]), "node1", 1.0)


def test_only_a_ready_instance_is_in_its_services_and_ready_in_get() -> None:
    probe = Probe(kind="tcp", port=80)
    assert ready_address(running(probe, "False")) is None
    assert ready_address(running(probe, "True")) is not None
    assert ready_address(running(None, "True")) is not None
    # and READY in `get vmis` says the same
    rows = render.vmis([running(probe, "False"), running(None, "True")], wide=False).splitlines()[1:]
    assert [row.split()[-1] for row in rows] == ["False", "True"]


def test_back_from_unknown_it_waits_for_its_probe_again() -> None:
    lost = mark_unknown(running(Probe(kind="tcp", port=80), "True"), "u1", 40.0, 50.0)
    assert lost is not None
    back = restore(lost, "u1", 60.0)
    assert back is not None and back.phase is Phase.RUNNING
    assert [(c.status, c.reason) for c in back.conditions if c.type == "Ready"] == [("False", WAITING_FOR_PROBE)]
    plain = restore(mark_unknown(running(None, "True"), "u1", 40.0, 50.0) or running(None), "u1", 60.0)
    assert plain is not None and [c.status for c in plain.conditions if c.type == "Ready"] == ["True"]


def test_the_prober_sleeps_until_the_next_probe_is_due() -> None:
    clock = [100.0]
    prober = Prober(_no_vmis, _no_dial, _no_reports, "node1", clock=lambda: clock[0])
    assert prober.pause() == LOOK_S  # nothing to probe: a look at the node's VMIs a second
    prober.runs[("u1", "readiness_probe")] = ProbeRun.start(Probe(kind="tcp", port=80), running_since=100.3)
    prober.runs[("u2", "liveness_probe")] = ProbeRun.start(Probe(kind="tcp", port=80, initial_delay_seconds=5),
                                                           running_since=100.0, ready=True)
    assert prober.pause() == pytest.approx(0.3)
    clock[0] = 101.0
    assert prober.pause() == 0.0  # overdue: at once


async def test_a_probe_the_prober_cannot_run_is_said_and_tried_again_a_period_on(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A fault of the prober's own (the one a changed dialer once caused: a TypeError) is logged with
    the VM and neither passes nor fails the guest's probe: it is tried again when next due."""
    clock = [100.0]
    spec = VMSpec(name="vm1", networks=[Network(name="default", kind="pod")],
                  liveness_probe=Probe(kind="tcp", port=80, period_seconds=5, failure_threshold=1))
    vmi = VMI(name="vm1", uid="u1", spec=spec, created_at=90.0, phase=Phase.RUNNING, node_name="node1",
              started_at=90.0, interfaces=[VMIInterface(name="default", ip_address="10.244.1.2")])

    async def vmis() -> list[VMI]:
        return [vmi]

    async def broken(address: str, port: int) -> HalfClosingEnd:
        raise TypeError("dial() takes 2 positional arguments but 3 were given")

    prober = Prober(vmis, broken, _no_reports, "node1", clock=lambda: clock[0])
    await prober.tick()
    await asyncio.wait(list(prober.checks.values()))
    run = prober.runs[("u1", "liveness_probe")]
    assert run.ready and run.failures == 0 and run.next_at == 105.0  # alive as before, a period on
    assert "probe not run" in capsys.readouterr().out and not prober.checks


async def _no_vmis() -> list[VMI]:
    return []


async def _no_dial(address: str, port: int) -> HalfClosingEnd:
    raise OSError(111, "refused")


class _NoReports:
    async def report(self, report: StatusReport, patience: float = -1) -> StatusReply:
        raise AssertionError("nothing to say")


_no_reports = _NoReports()
