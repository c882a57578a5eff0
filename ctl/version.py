"""``virtbus version``: the CLI's version, the api service's (its NATS micro service info) and the NATS
server's, as ``virtctl version`` prints the client's and the server's."""

from __future__ import annotations

import argparse
import json
from typing import Any

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from ctl.client import ApiClient
from proto.api import VERSION

SERVICE = "virtbus-api"


def add_parser(sub: Any) -> None:
    sub.add_parser("version", help="the CLI's, the api service's and the NATS server's versions")


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    print(f"Client Version: virtbus {VERSION}")
    try:
        info = json.loads((await api.nc.request(f"$SRV.INFO.{SERVICE}", b"", timeout=3)).data)
        server = f"virtbus {info.get('version', '?')} ({SERVICE}, id {info.get('id', '?')})"
    except (NatsTimeout, NoRespondersError, json.JSONDecodeError):
        server = f"none: no {SERVICE} answered (is the scheduler up?)"
    print(f"Server Version: {server}")
    url, v = api.nc.connected_url, api.nc.connected_server_version
    print(f"NATS Server Version: {v.major}.{v.minor}.{v.patch} ({url.netloc if url else '?'})")
    return 0 if not server.startswith("none") else 1
