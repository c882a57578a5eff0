"""Instancetypes through the API against a real nats-server: the common set is listed, a user's own
is applied, used by a VM (sized by it, stored with its name) and deleted; an unknown one is refused."""

from __future__ import annotations

import json

import msgspec
import pytest
import yaml

from proto.errors import ApiError, Code
from proto.instancetypes import COMMON
from scheduler.api import Api
from servicekit.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def body(name: str, **change: object) -> bytes:
    doc = yaml.safe_load((REPO / "examples" / name).read_text())
    doc["spec"].update(change)
    return json.dumps(doc).encode()


async def test_instancetypes_size_vms(store: Store) -> None:
    api = Api(store)
    listed = [t.name for t in (await api.instancetypes.list_all(b"{}")).items]
    assert listed == sorted(COMMON)
    made = (await api.instancetypes.apply(body("instancetype-tiny.yaml"))).item
    assert (made.name, made.cpus, made.memory) == ("tiny", 1, "64Mi")
    assert [t.name for t in (await api.instancetypes.list_all(b"{}")).items] == [*sorted(COMMON), "tiny"]

    vm = (await api.vm_create(body("testvm-instancetype.yaml", instancetype={"name": "tiny"}))).item.vm
    assert (vm.spec.instancetype, vm.spec.memory) == ("tiny", "64Mi")
    nano = (await api.vm_apply(body("testvm-instancetype.yaml"))).item.vm  # applied again with u1.nano
    assert (nano.spec.instancetype, nano.spec.memory) == ("u1.nano", "512Mi")
    with pytest.raises(ApiError) as unknown:
        await api.vm_apply(body("testvm-instancetype.yaml", instancetype={"name": "u9.huge"}))
    assert unknown.value.code is Code.INVALID and unknown.value.field == "spec.instancetype.name"

    with pytest.raises(ApiError) as common:
        await api.instancetypes.delete(b'{"name": "u1.small"}')
    assert common.value.code is Code.INVALID
    await api.instancetypes.delete(b'{"name": "tiny"}')
    with pytest.raises(ApiError) as gone:
        await api.instancetypes.get(b'{"name": "tiny"}')
    assert gone.value.code is Code.NOT_FOUND
    assert msgspec.to_builtins((await api.vm_get(b'{"name": "testvm-sized"}')).item.vm.spec)["memory"] == "512Mi"
