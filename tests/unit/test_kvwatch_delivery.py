"""A watched delivery's revision and pending count, read off its ack subject as nats-py reads them."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from servicekit.kvwatch import delivery

SUBJECTS = [
    "$JS.ACK.KV_vmis.watch-a1.1.4711.12.1733300000000000000.3",  # 2.2-style, no domain
    "$JS.ACK._.ABCHASH.KV_vmis.watch-a1.2.99.7.1733300000000000000.0.RaNd0m",  # with domain and account
    "$JS.ACK.hub.ABCHASH.KV_nodevmis-01.w.1.123456789.5.1733300000000000000.250",  # no trailing token
    "$JS.ACK._.H.KV_x.c.1.8.2.1733300000000000000.1.tok.more",  # tokens a later server may add
]


def msg(reply: str) -> Msg:
    return Msg(_client=None, subject="$KV.vmis.a", reply=reply, data=b"{}")  # type: ignore[arg-type]


@pytest.mark.parametrize("reply", SUBJECTS)
def test_the_revision_and_pending_are_nats_pys_own(reply: str) -> None:
    meta = msg(reply).metadata
    assert delivery(msg(reply)) == (meta.sequence.stream, meta.num_pending)


def test_the_figures_are_the_stream_sequence_and_the_count_pending() -> None:
    assert delivery(msg(SUBJECTS[0])) == (4711, 3)
    assert delivery(msg(SUBJECTS[1])) == (99, 0)
    assert delivery(msg(SUBJECTS[2])) == (123456789, 250)


@pytest.mark.parametrize("reply", ["", "_INBOX.abc", "$JS.ACK.too.short", "$JS.NAK.a.b.1.2.3.4.5"])
def test_what_is_no_jetstream_delivery_is_nats_pys_error(reply: str) -> None:
    with pytest.raises(NotJSMessageError):
        delivery(msg(reply))
