"""The roles' NATS permissions (proto.permissions) and the server config that carries them."""

from __future__ import annotations

import json
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest

from proto import subjects
from proto.permissions import Responses, Role, permissions
from servicekit import credentials, natsserver


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: * one token, > the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def may_publish(role: Role, subject: str, node: str | None = None) -> bool:
    rules = permissions(role, node).publish
    return any(matches(a, subject) for a in rules.allow) and not any(matches(d, subject) for d in rules.deny)


@pytest.mark.parametrize("subject", [
    "$KV.vms.testvm", "$KV.vmis.testvm", "$KV.nodes.node2", "$KV.ipam.nodecidr.3", "$KV.ipam.net.multus-br",
    "$O.images.C.abc", "virtbus.api.vm.create", "virtbus.nodeapi.node2.status", "virtbus.events.vm.testvm",
    "virtbus.console.node2.testvm.out", "$JS.API.STREAM.PURGE.VIRTBUS_CONSOLE", "$JS.API.STREAM.CREATE.KV_x",
])
def test_a_node_may_not(subject: str) -> None:
    assert not may_publish(Role.NODE, subject, "node1")


def test_a_node_may_its_own() -> None:
    for subject in ("$KV.nodes.node1", "$KV.ipam.podips.node1", subjects.nodeapi("node1", "status"),
                    subjects.stats("node1", "testvm"), subjects.stats_wanted("node1"),
                    subjects.console_out("node1", "testvm")):
        assert may_publish(Role.NODE, subject, "node1"), subject
    assert not may_publish(Role.NODE, subjects.stats_wanted("node2"), "node1")  # no asking another node's


def test_viewer_reads_only() -> None:
    assert may_publish(Role.VIEWER, subjects.api("vm", "list"))
    assert may_publish(Role.VIEWER, subjects.api("vmi", "get"))
    for verb in ("create", "apply", "delete", "start", "stop", "restart", "expose"):
        assert not may_publish(Role.VIEWER, subjects.api("vm", verb))
    assert not may_publish(Role.VIEWER, "$KV.vms.testvm")


def test_only_admin_writes_image_content() -> None:
    assert may_publish(Role.ADMIN, "$O.images.C.x")
    for role, node in ((Role.CONTROL, None), (Role.NODE, "node1"), (Role.VIEWER, None)):
        assert not may_publish(role, "$O.images.C.x", node)


def test_the_server_accepts_the_config(tmp_path: Path) -> None:
    users = credentials.users_for(["node1", "node2"])
    keys = credentials.ensure_seeds(tmp_path / "creds", users)
    conf = tmp_path / "nats.conf"
    credentials.write_server_config(conf, credentials.server_config(
        users, keys, host="127.0.0.1", port=4222, store_dir=str(tmp_path / "js"), server_name="t"))
    assert conf.stat().st_mode & 0o777 == 0o600
    assert all((tmp_path / "creds" / f"{u.name}.nk").stat().st_mode & 0o777 == 0o600 for u in users)
    assert (tmp_path / "creds").stat().st_mode & 0o777 == 0o700
    text = conf.read_text()
    seeds = [(tmp_path / "creds" / f"{u.name}.nk").read_text().strip() for u in users]
    assert not any(seed in text for seed in seeds)  # public keys only, never a seed
    assert all(keys[u.name] in text for u in users)
    assert len(json.loads(text)["authorization"]["users"]) == 5
    done = subprocess.run([natsserver.executable(), "-c", str(conf), "-t"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = credentials.ensure_seeds(tmp_path / "creds", users)  # a second `lab up` keeps the keys
    assert again == keys


def test_a_node_watches_only_its_own_vmi_copies() -> None:
    mine = subjects.node_vmis_bucket("node1")
    other_shard = next(b for b in subjects.NODE_VMI_BUCKETS if b != mine)
    assert may_publish(Role.NODE, f"$JS.API.CONSUMER.CREATE.KV_{mine}.vbw1.$KV.{mine}.node1.*", "node1")
    for bucket in (mine, other_shard, subjects.BUCKET_NODE_VMIS_UNSHARDED):
        create = f"$JS.API.CONSUMER.CREATE.KV_{bucket}"
        for subject in (f"{create}.vbw1.$KV.{bucket}.node2.*", f"{create}.vbw1.$KV.{bucket}.*.*",
                        f"{create}.vbw1.$KV.{bucket}.>", f"{create}.vbw1", create,
                        f"$JS.API.STREAM.MSG.GET.KV_{bucket}", f"$JS.API.DIRECT.GET.KV_{bucket}",
                        f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.node2.testvm"):
            assert not may_publish(Role.NODE, subject, "node1"), subject
    # its own keys, filed in another shard or the old bucket: not its to read either
    for bucket in (other_shard, subjects.BUCKET_NODE_VMIS_UNSHARDED):
        assert not may_publish(Role.NODE, f"$JS.API.CONSUMER.CREATE.KV_{bucket}.vbw1.$KV.{bucket}.node1.*", "node1")
    # the other buckets' watches, filtered or not, as before
    for subject in ("$JS.API.CONSUMER.CREATE.KV_vmis.vbw1.$KV.vmis.testvm", "$JS.API.CONSUMER.CREATE.KV_vmis",
                    "$JS.API.CONSUMER.CREATE.KV_nodes.vbw1.$KV.nodes.>", "$JS.API.CONSUMER.CREATE.OBJ_images",
                    "$JS.API.STREAM.MSG.GET.KV_vmis"):
        assert may_publish(Role.NODE, subject, "node1"), subject


def test_nodes_spread_over_the_vmi_copy_shards_the_same_way_in_every_process() -> None:
    # CRC-32, not Python's salted hash: the leader writes where each handler watches
    shards = subjects.NODE_VMI_SHARDS
    assert subjects.node_vmis_bucket("node1") == subjects.NODE_VMI_BUCKETS[zlib.crc32(b"node1") % shards]
    per_shard = Counter(subjects.node_vmis_bucket(f"hollow-{i}") for i in range(1000))
    assert set(per_shard) == set(subjects.NODE_VMI_BUCKETS)
    assert max(per_shard.values()) < 1.5 * 1000 / shards


def test_a_node_renews_only_its_own_lease() -> None:
    assert may_publish(Role.NODE, f"$KV.{subjects.BUCKET_NODE_LEASES}.node1", "node1")
    assert not may_publish(Role.NODE, f"$KV.{subjects.BUCKET_NODE_LEASES}.node2", "node1")


def test_the_control_plane_replies_to_inboxes_without_response_permissions() -> None:
    """Response permissions make nats-server note every reply subject delivered to the control plane,
    each KV watch delivery's ack subject among them, and scan them all per delivery past 4,096: the
    control plane publishes to its requesters' inboxes instead (people's tools, nodes, itself)."""
    control = permissions(Role.CONTROL)
    assert not control.allow_responses and not permissions(Role.ADMIN).allow_responses
    for inbox in ("_INBOX.abc.1", f"{subjects.inbox_prefix('node', 'node7')}.abc.1",
                  f"{subjects.inbox_prefix('control')}.abc.1"):
        assert may_publish(Role.CONTROL, inbox), inbox
    # a node's inbox is its own: no other node may read it
    assert matches(f"{subjects.inbox_prefix('node', 'node1')}.>", f"{subjects.inbox_prefix('node', 'node1')}.x.1")
    assert not matches(f"{subjects.inbox_prefix('node', 'node1')}.>", f"{subjects.inbox_prefix('node', 'node2')}.x.1")
    assert not may_publish(Role.CONTROL, "_INBOX_viewer.x.1") and not may_publish(Role.CONTROL, "virtbus.x")
    # a node keeps response permissions: it answers only what it was asked, never another node's inbox
    assert not may_publish(Role.NODE, f"{subjects.inbox_prefix('node', 'node2')}.x.1", "node1")
    responses = permissions(Role.NODE, "node1").allow_responses
    assert isinstance(responses, Responses) and responses.max == 1


def test_a_nodes_reply_notes_expire_in_seconds_not_minutes() -> None:
    """Each KV watch delivery to a node leaves a note of its (never answered) reply subject until it
    expires; past 4,096 notes nats-server scans them all at each delivery. A node answers at once."""
    responses = permissions(Role.NODE, "node1").allow_responses
    assert isinstance(responses, Responses)
    value, unit = int(responses.expires[:-1]), responses.expires[-1]
    assert unit == "s" and 5 <= value <= 60
