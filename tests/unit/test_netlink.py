"""The netlink adapter's errors: what failed, and whether trying again can help."""

from __future__ import annotations

import errno
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from proto.errors import Code
from servicekit.fake_netlink import FakeNetlink
from servicekit.netlink import Netlink, NetlinkError, PyrouteNetlink

# both adapters are what the handler asks for (mypy checks these two lines)
_REAL: type[Netlink] = PyrouteNetlink
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
    for adapter in (PyrouteNetlink(), FakeNetlink()):
        with pytest.raises(NetlinkError) as caught:
            adapter.delete_netns(name)
        assert caught.value.code is Code.INVALID
    with pytest.raises(NetlinkError) as caught:
        PyrouteNetlink(name).addresses()  # refused before any socket is opened
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
    ]
    for call, code in cases:
        with pytest.raises(NetlinkError) as caught:
            call()
        assert caught.value.code is code, caught.value.message
    assert fake.history == []  # and a refusal changes nothing


async def test_the_real_adapter_is_never_called_on_the_event_loop() -> None:
    with pytest.raises(RuntimeError, match="thread"):
        PyrouteNetlink("vbtest-anything").addresses()  # refused before any socket is opened
