"""A migration's token between its launchers (launcher.migrationtoken), against a real nats-server with
virtbus's generated permissions and three nodes: the source node gets it; another node, a viewer or the
control plane gets neither the token nor a way to overhear it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from launcher.migrationproxy import new_token
from launcher.migrationtls import make_identity
from launcher.migrationtoken import TokenDesk, ask
from proto import subjects
from proto.api import encode
from proto.errors import ApiError, Code
from proto.migrationtoken import TokenRequest
from tests.conftest import free_port, running_nats_server, write_auth

pytestmark = pytest.mark.integration
NODES = ["node1", "node2", "node3"]
MIGRATION = "0b9c3f0e-3c1a-4b7e-9a51-6d2f2d7c8e11"

Connect = Callable[[str], Awaitable[tuple[Client, list[str]]]]


@pytest.fixture
async def connect(tmp_path: Path) -> AsyncIterator[Connect]:
    port = free_port()
    clients: list[Client] = []
    with running_nats_server(write_auth(tmp_path, port, NODES), port):
        async def as_user(user: str) -> tuple[Client, list[str]]:
            errors: list[str] = []

            async def on_error(exc: Exception) -> None:
                errors.append(str(exc).lower())

            node = user.removeprefix("node-") if user.startswith("node-") else None
            extra = {"inbox_prefix": subjects.inbox_prefix("node", node)} if node else \
                {"inbox_prefix": subjects.inbox_prefix("control")} if user == "control" else {}
            nc = await nats.connect(f"nats://127.0.0.1:{port}", nkeys_seed=str(tmp_path / "creds" / f"{user}.nk"),
                                    error_cb=on_error, allow_reconnect=False, **extra)
            clients.append(nc)
            return nc, errors

        yield as_user
        for nc in clients:
            await nc.close()


async def test_only_the_source_node_gets_the_token_and_nobody_else_hears_it(connect: Connect, tmp_path: Path) -> None:
    target, _ = await connect("node-node2")
    token = new_token()
    identity = make_identity(tmp_path / "tls")  # the target's TLS certificate goes with the token
    desk = TokenDesk(target, node="node2", vmi="vm1", migration_uid=MIGRATION, token=token,
                     source_node=lambda: "node1", certificate=identity.certificate)
    await desk.open()
    source, _ = await connect("node-node1")
    other, other_errors = await connect("node-node3")
    viewer, viewer_errors = await connect("viewer")
    control, control_errors = await connect("control")

    # anyone who could see the answer would see the token: nobody but node1 may subscribe where it goes
    overheard: list[bytes] = []

    async def heard(msg: Msg) -> None:
        overheard.append(msg.data)

    inbox = f"{subjects.inbox_prefix('node', 'node1')}.>"
    for nc in (other, viewer, control):
        await nc.subscribe(inbox, cb=heard)
        await nc.subscribe(subjects.migration_tokens_of_node("node2"), cb=heard)
        await nc.flush()

    grant = await ask(source, target_node="node2", vmi="vm1", migration_uid=MIGRATION)
    assert (grant.token, grant.certificate) == (token, identity.certificate)
    assert list((tmp_path / "tls").iterdir()) == []  # the key is in the target's context only

    # another node asks from its own inbox: told no
    with pytest.raises(ApiError) as refused:
        await ask(other, target_node="node2", vmi="vm1", migration_uid=MIGRATION, asks=1)
    assert refused.value.code is Code.FORBIDDEN
    # or names the source's inbox as its reply: the answer goes there, where it cannot listen
    await other.publish(subjects.migration_token("node2", MIGRATION),
                        encode(TokenRequest(vmi="vm1", migration_uid=MIGRATION)),
                        reply=f"{subjects.inbox_prefix('node', 'node1')}.stolen")
    await other.flush()
    # a viewer may not even ask; the wrong migration gets nothing
    await viewer.publish(subjects.migration_token("node2", MIGRATION), b"{}")
    await viewer.flush()
    with pytest.raises(ApiError) as unknown:
        await ask(source, target_node="node2", vmi="vm1", migration_uid="another", asks=1)
    assert unknown.value.code is Code.UNAVAILABLE  # nobody receives that one here
    await asyncio.sleep(0.3)
    assert overheard == []
    for errors in (other_errors, viewer_errors, control_errors):
        assert any("permissions violation" in e for e in errors), errors
    assert any("permissions violation" in e and "publish" in e for e in viewer_errors)
    assert desk.refused == 1  # node3's own ask; the one sent to node1's inbox was answered there, unread

    await desk.close()  # the migration over: no answer at all
    with pytest.raises(ApiError) as gone:
        await ask(source, target_node="node2", vmi="vm1", migration_uid=MIGRATION, asks=1)
    assert gone.value.code is Code.UNAVAILABLE
