"""``virtbus expand`` against a real nats-server and the api service on the bus, as virtctl expand: a
manifest naming an instancetype and a preference comes out with their size and defaults written in
and neither named; a VM applied from it expands to the same; what cannot be expanded is refused,
typed, and nothing is applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctl import cli, expandcmd
from ctl.client import ApiClient
from proto.errors import ApiError, Code
from servicekit.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.integration
EXAMPLES = REPO / "examples"  # the repository's own: the instancetype and preference examples are virtbus's


async def expand(client: ApiClient, said: list[str], *argv: str) -> Any:
    said.clear()
    assert await expandcmd.run(client, cli.parser().parse_args(["expand", *argv, "-o", "json"])) == 0
    [printed] = said
    return json.loads(printed)


async def test_a_vm_with_its_instancetype_and_preference_written_in(api: Store, nats_url: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    monkeypatch.setattr(expandcmd, "say", said.append)  # what it prints, without the service's own logs
    client = await ApiClient.connect(nats_url)
    try:
        preference = yaml.safe_load((EXAMPLES / "preference-virtio.yaml").read_text())
        await client.nc.request("virtbus.api.preference.apply", json.dumps(preference).encode(), timeout=5)
        from_file = await expand(client, said, "--file", str(EXAMPLES / "testvm-preference.yaml"))
        spec = from_file["spec"]
        assert "instancetype" not in spec and "preference" not in spec
        domain = spec["template"]["spec"]["domain"]
        assert domain["cpu"] == {"cores": 2, "sockets": 1, "threads": 1}  # u1.2xmedium, laid out as cores
        assert domain["resources"]["requests"]["memory"] == "4Gi"
        assert domain["devices"]["disks"] == [{"name": "containerdisk", "disk": {"bus": "virtio"}}]
        assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 0  # the preference's
        assert await api.vms.get("testvm-preferred") is None  # expanded, not applied

        manifest = yaml.safe_load((EXAMPLES / "testvm-preference.yaml").read_text())
        await client.nc.request("virtbus.api.vm.apply", json.dumps(manifest).encode(), timeout=5)
        assert await expand(client, said, "--vm", "testvm-preferred") == from_file

        for doc, code in (({**manifest, "spec": {**manifest["spec"], "instancetype": {"name": "x1.huge"}}},
                           Code.NOT_FOUND),
                          (yaml.safe_load((EXAMPLES / "testvmi.yaml").read_text()), Code.BAD_REQUEST)):
            path = tmp_path / "doc.json"
            path.write_text(json.dumps({**doc, "metadata": {"name": "other"}}))
            with pytest.raises(ApiError) as refused:
                await expand(client, said, "--file", str(path))
            assert refused.value.code in (code, Code.INVALID), refused.value
        with pytest.raises(ApiError) as refused:
            await expand(client, said, "--vm", "nosuchvm")
        assert refused.value.code is Code.NOT_FOUND
        assert sorted(e.key for e in await api.vms.items()) == ["testvm-preferred"]
    finally:
        await client.close()
