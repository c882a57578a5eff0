"""The CLI's `get vmis -w`: table rows, or with -o json|yaml each change as a whole VirtualMachineInstance;
with -l, only the VMIs the selector picks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import pytest
import yaml

from ctl import vmiwatch
from ctl.client import ApiClient
from proto.selector import LabelSelector, parse_text
from proto.spec import VMSpec
from proto.state import VMI, Phase


class FakeWatch:
    """Plays the KV watch of the VMIs bucket: each update, then returns (the real one never does)."""

    def __init__(self, updates: list[tuple[str, VMI | None]]) -> None:
        self.updates = updates

    async def watch_vmis(self, handle: Callable[[str, VMI | None], None]) -> None:
        for key, value in self.updates:
            handle(key, value)


def vmi(name: str, phase: Phase, node: str | None = None, labels: dict[str, str] | None = None) -> VMI:
    return VMI(name=name, uid=f"{name}-uid", spec=VMSpec(name=name, labels=labels or {}), created_at=1.0,
               phase=phase, node_name=node)


UPDATES: list[tuple[str, VMI | None]] = [("a", vmi("a", Phase.PENDING)), ("b", vmi("b", Phase.PENDING)),
                                         ("a", vmi("a", Phase.RUNNING)), ("a", None)]


async def watched(capsys: pytest.CaptureFixture[str], name: str | None, fmt: str | None) -> str:
    await vmiwatch.watch(cast(ApiClient, FakeWatch(UPDATES)), name, LabelSelector(), fmt, wide=False)
    return capsys.readouterr().out


async def test_watch_prints_rows(capsys: pytest.CaptureFixture[str]) -> None:
    lines = (await watched(capsys, "a", None)).splitlines()
    assert lines[0].split()[:3] == ["NAME", "AGE", "PHASE"]
    assert [line.split()[0] for line in lines[1:]] == ["a", "a", "a"] and lines[-1].endswith("<deleted>")


async def test_watch_json_prints_each_object_and_a_deleted_one_as_last_seen(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = await watched(capsys, "a", "json")
    decoder, objects, at = json.JSONDecoder(), [], 0
    while at < len(out.rstrip()):
        obj: Any
        obj, at = decoder.raw_decode(out, at)
        objects.append(obj)
        while at < len(out) and out[at].isspace():
            at += 1
    assert [(o["kind"], o["metadata"]["name"], o["status"]["phase"]) for o in objects] == [
        ("VirtualMachineInstance", "a", "Pending"), ("VirtualMachineInstance", "a", "Running"),
        ("VirtualMachineInstance", "a", "Running")]


async def test_watch_yaml_is_a_stream_of_documents(capsys: pytest.CaptureFixture[str]) -> None:
    docs = list(yaml.safe_load_all(await watched(capsys, None, "yaml")))
    assert [(d["metadata"]["name"], d["status"]["phase"]) for d in docs] == [
        ("a", "Pending"), ("b", "Pending"), ("a", "Running"), ("a", "Running")]


async def test_watch_with_a_selector_prints_the_vmis_it_picks_while_it_picks_them(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`get vmis -w -l kubevirt.io/nodeName=node1,app=web`: a VMI shows once bound to node1, shows as
    deleted when it goes; one of another app or on another node never shows."""
    web = {"app": "web"}
    updates: list[tuple[str, VMI | None]] = [
        ("a", vmi("a", Phase.PENDING, labels=web)),  # not bound yet: no nodeName label
        ("b", vmi("b", Phase.PENDING, "node1", {"app": "db"})),
        ("c", vmi("c", Phase.SCHEDULED, "node2", web)),
        ("a", vmi("a", Phase.SCHEDULED, "node1", web)),
        ("a", vmi("a", Phase.RUNNING, "node1", web)),
        ("c", None), ("b", None), ("a", None)]
    chosen = parse_text("kubevirt.io/nodeName=node1,app=web", "selector")
    await vmiwatch.watch(cast(ApiClient, FakeWatch(updates)), None, chosen, None, wide=False)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(row[0], row[-1] if row[-1] == "<deleted>" else row[2]) for row in rows] == [
        ("a", "Scheduled"), ("a", "Running"), ("a", "<deleted>")]
