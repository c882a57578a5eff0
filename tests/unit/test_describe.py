"""``virtbus describe``'s layout (ctl.describe, pure): kubectl describe's header, a custom resource's
fields as indented Title Case lines, and the object's events as its table."""

from __future__ import annotations

from ctl.describe import describe, fields, title
from proto import resources
from proto.events import Event
from proto.state import VMI, Phase, VMIInterface
from tests.unit.test_render import vmi as running_vmi


def test_keys_as_kubectl_titles_them() -> None:
    assert [title(k) for k in ("printableStatus", "ipAddress", "nodeName", "uid", "apiVersion", "kubevirt.io/size",
                               "k8s")] == [
        "Printable Status", "Ip Address", "Node Name", "UID", "API Version", "kubevirt.io/size", "k8s"]


def test_nested_fields_and_lists() -> None:
    got = fields({"status": {"phase": "Running", "ready": True, "interfaces": [
        {"name": "default", "ipAddress": "10.244.1.2"}, {"name": "ext"}], "reasons": ["a", "b"], "empty": []}})
    assert got == ["Status:", "  Phase: Running", "  Ready: true", "  Interfaces:",
                   "    Name: default", "    Ip Address: 10.244.1.2", "    Name: ext",
                   "  Reasons:", "    a", "    b", "  Empty:"]


def test_a_vmi_and_its_events() -> None:
    vmi: VMI = running_vmi("testvm", "10.244.1.2")
    events = [Event(kind="VirtualMachineInstance", name="testvm", reason="Scheduled", message="bound to node1",
                    timestamp=100.0),
              Event(kind="VirtualMachineInstance", name="testvm", reason="Started", message="domain running",
                    timestamp=190.0, node="node1", type="Normal")]
    text = describe(resources.vmi_object(vmi), events, now=400.0)
    lines = text.splitlines()
    assert lines[:2] == ["Name:         testvm", "Namespace:    default"]
    assert "API Version:  kubevirt.io/v1" in lines and "Kind:         VirtualMachineInstance" in lines
    assert "  Phase: Running" in lines and "  Node Name: node1" in lines
    table = lines[lines.index("Events:") + 1:]
    assert table[0].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert table[2].split() == ["Normal", "Scheduled", "5m", "virtbus", "bound", "to", "node1"]
    assert table[3].split()[:4] == ["Normal", "Started", "3m", "node1"]


def test_no_events_and_no_labels_say_none() -> None:
    vmi = VMI(name="x", uid="u", spec=running_vmi("x", "10.0.0.1").spec, created_at=1.0, phase=Phase.PENDING,
              interfaces=[VMIInterface(name="default")])
    text = describe(resources.vmi_object(vmi), [], now=10.0)
    assert "Labels:       <none>" in text and text.splitlines()[-1] == "Events:       <none>"
