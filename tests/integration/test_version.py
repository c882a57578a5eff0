"""`virtbus version` against a real nats-server and api service: the CLI's version, the api service's
from its micro service info, the NATS server's; and a typed answer (exit 1) when no api service is up."""

from __future__ import annotations

import argparse
import tomllib

import pytest

from ctl import version
from ctl.client import ApiClient
from proto.api import VERSION
from servicekit.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_one_version_for_the_package_and_the_services() -> None:
    assert VERSION == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


async def test_versions_of_client_api_and_nats(api: Store, nats_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    client = await ApiClient.connect(nats_url)
    try:
        assert await version.run(client, argparse.Namespace()) == 0
    finally:
        await client.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Client Version: virtbus {VERSION}"
    assert lines[1].startswith(f"Server Version: virtbus {VERSION} (virtbus-api, id ")
    assert lines[2].startswith("NATS Server Version: 2.") and nats_url.split("//")[1] in lines[2]


async def test_no_api_service(store: Store, nats_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    client = await ApiClient.connect(nats_url)
    try:
        assert await version.run(client, argparse.Namespace()) == 1
    finally:
        await client.close()
    assert "no virtbus-api answered" in capsys.readouterr().out
