"""``virtbus describe``'s events against a real nats-server: those of the object (and, for a VM, its
instance's), oldest first, none of another object's or of another kind of the same name; nothing
recorded is an empty list at once; what is no event is skipped."""

from __future__ import annotations

import argparse
import time

import pytest

from ctl import cli, describe
from ctl.client import ApiClient
from proto import subjects
from proto.events import Event
from servicekit.store import Store

pytestmark = pytest.mark.integration


def event(kind: str, name: str, reason: str, at: float) -> Event:
    return Event(kind=kind, name=name, reason=reason, message=f"{reason} of {name}", timestamp=at)


async def test_the_events_of_one_object(api: Store, nats_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert api.records_events
    now = time.time()
    for e in (event("VirtualMachine", "web", "SuccessfulCreate", now - 30),
              event("VirtualMachineInstance", "web", "Scheduled", now - 20),
              event("VirtualMachineInstance", "other", "Scheduled", now - 15),
              event("Service", "web", "Created", now - 10)):
        await api.emit(e)
    await api.nc.publish(subjects.event("VirtualMachine", "web"), b"not an event")
    await api.emit(event("VirtualMachineInstance", "web", "Started", now - 5))
    await api.nc.flush()
    client = await ApiClient.connect(nats_url)
    try:
        got = await describe.events_about(client, "web", describe.EVENT_KINDS["vm"])
        assert [e.reason for e in got] == ["SuccessfulCreate", "Scheduled", "Started"]
        assert [e.reason for e in await describe.events_about(client, "web", describe.EVENT_KINDS["vmi"])] == [
            "Scheduled", "Started"]
        start = time.monotonic()
        assert await describe.events_about(client, "quiet", describe.EVENT_KINDS["vm"]) == []
        assert time.monotonic() - start < 2  # no waiting for what will not come

        # the whole verb, from the API: a VMI of its own, with its events
        doc = b'{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "web"},' \
              b' "spec": {"domain": {"resources": {"requests": {"memory": "64M"}}, "devices": {}}}}'
        await api.nc.request(subjects.api("vmi", "apply"), doc, timeout=5)
        args = cli.kubectl_forms(cli.parser().parse_args(["describe", "vmi/web"]))
        assert await describe.run(client, argparse.Namespace(**vars(args))) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[:2] == ["Name:         web", "Namespace:    default"]
        assert [line.split()[1] for line in out[out.index("Events:") + 3:]] == ["Scheduled", "Started"]
    finally:
        await client.close()
