"""The netlink adapter's errors: what failed, and whether trying again can help."""

from __future__ import annotations

import errno
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from proto.errors import Code
from servicekit.fake_netlink import FakeNetlink
from servicekit.netlink import KernelNetlink, Netlink, NetlinkError

# both adapters are what the handler asks for (mypy checks these two lines)
_REAL: type[Netlink] = KernelNetlink
_FAKE: type[Netlink] = FakeNetlink


@pytest.mark.parametrize(("err", "code", "retryable"), [
    (errno.EEXIST, Code.ALREADY_EXISTS, False),
    (errno.ENODEV, Code.NOT_FOUND, False),
    (errno.ESRCH, Code.NOT_FOUND, False),
    (errno.EADDRNOTAVAIL, Code.NOT_FOUND, False),
    (errno.ENETUNREACH, Code.INVALID, False),
    (errno.EPERM, Code.FORBIDDEN, False),
    (errno.EBUSY, Code.UNAVAILABLE, True),
    (errno.ENOBUFS, Code.UNAVAILABLE, True),
    (errno.EIO, Code.INTERNAL, False),
])
def test_the_errno_says_whether_a_retry_helps(err: int, code: Code, retryable: bool) -> None:
    exc = NetlinkError("route replace 10.244.1.0/24 via 10.99.0.12", err)
    assert (exc.code, exc.retryable, exc.errno) == (code, retryable, err)
    assert exc.message.startswith("route replace 10.244.1.0/24 via 10.99.0.12: ")


@pytest.mark.parametrize("name", ["", ".", "..", "../../etc", "a/b", "x" * 256])
def test_a_namespace_name_is_never_a_path(name: str) -> None:
    for adapter in (KernelNetlink(), FakeNetlink()):
        with pytest.raises(NetlinkError) as caught:
            adapter.delete_netns(name)
        assert caught.value.code is Code.INVALID
    with pytest.raises(NetlinkError) as caught:
        KernelNetlink(name).addresses()  # refused before any socket is opened
    assert caught.value.code is Code.INVALID


def test_the_fake_refuses_what_the_kernel_refuses() -> None:
    fake = FakeNetlink()
    fake.add_link("eth0", "10.99.0.11/24")
    cases: list[tuple[Callable[[], object], Code]] = [
        (lambda: fake.add_address("nope", IPv4Interface("10.0.0.1/32")), Code.NOT_FOUND),
        (lambda: fake.add_address("eth0", IPv4Interface("10.99.0.11/24")), Code.ALREADY_EXISTS),
        (lambda: fake.delete_address("eth0", IPv4Interface("10.99.0.99/24")), Code.NOT_FOUND),
        (lambda: fake.replace_route(IPv4Network("10.244.1.0/24"), via=IPv4Address("192.0.2.1")), Code.INVALID),
        (lambda: fake.replace_route(IPv4Network("10.244.1.0/24"), link="nope"), Code.NOT_FOUND),
        (lambda: fake.delete_route(IPv4Network("10.244.1.0/24")), Code.NOT_FOUND),
        (lambda: fake.flush_neighbours(IPv4Address("10.0.0.1"), "nope"), Code.NOT_FOUND),
        (lambda: fake.netns_pids("vbtest-missing"), Code.NOT_FOUND),
        (lambda: fake.create_link("eth0", "bridge"), Code.ALREADY_EXISTS),
        (lambda: fake.create_tap("eth0"), Code.ALREADY_EXISTS),
        (lambda: fake.create_veth("veth0", "eth0", None), Code.ALREADY_EXISTS),  # the peer's name is taken here
        (lambda: fake.create_veth("veth0", "vp0", "vbtest-missing"), Code.NOT_FOUND),
        (lambda: fake.delete_link("nope"), Code.NOT_FOUND),
        (lambda: fake.set_up("nope"), Code.NOT_FOUND),
        (lambda: fake.set_mac("eth0", "01:00:5e:00:00:01"), Code.NOT_FOUND),  # multicast: EADDRNOTAVAIL
        (lambda: fake.set_master("eth0", "lo"), Code.INVALID),  # no bridge
        (lambda: fake.set_master("eth0", "nope"), Code.NOT_FOUND),
        (lambda: fake.set_port("eth0", hairpin=True), Code.INVALID),  # no bridge's port
        (lambda: fake.link_mac("nope"), Code.NOT_FOUND),
        (lambda: fake.flush_addresses("nope"), Code.NOT_FOUND),
        (lambda: fake.at("vbtest-missing").addresses(), Code.NOT_FOUND),
        (lambda: fake.create_netns("a/b"), Code.INVALID),
    ]
    for call, code in cases:
        with pytest.raises(NetlinkError) as caught:
            call()
        assert caught.value.code is code, caught.value.message
    assert fake.history == []  # and a refusal changes nothing
    assert set(fake.links) == {"lo", "eth0"}


def test_a_fake_kernel_without_dummy_links_refuses_them() -> None:
    fake = FakeNetlink(kinds=frozenset({"bridge"}))
    fake.create_netns("vbtest-pod")
    with pytest.raises(NetlinkError) as caught:
        fake.at("vbtest-pod").create_link("eth0-nic", "dummy")  # the kernel's EOPNOTSUPP, in every namespace
    assert caught.value.code is Code.INVALID


def test_a_veth_end_deleted_takes_the_other_with_it() -> None:
    fake = FakeNetlink()
    fake.create_netns("vbtest-pod")
    fake.at("vbtest-pod").create_veth("eth0", "vp0", None)
    assert fake.links["vp0"].peer == ("vbtest-pod", "eth0")
    fake.delete_link("vp0")
    assert "eth0" not in fake.at("vbtest-pod").links


async def test_the_real_adapter_is_never_called_on_the_event_loop() -> None:
    with pytest.raises(RuntimeError, match="thread"):
        KernelNetlink("vbtest-anything").addresses()  # refused before any socket is opened
