"""The tunnel's window, acks, ordering and timeouts (servicekit.tunnel), on a virtual clock."""

import pytest

from proto.errors import ApiError
from proto.vnc import CHUNK, Frame, decode_frame, encode_frame
from servicekit.tunnel import Flow, TunnelBroken


def test_a_sender_stops_at_the_window_until_the_peer_acknowledges() -> None:
    a, b = Flow(window=100), Flow(window=100)
    a.start(0.0)
    b.start(0.0)
    frames = [a.data_frame(b"x" * 40, 0.0), a.data_frame(b"y" * 40, 0.0)]
    assert a.room() == 20
    with pytest.raises(TunnelBroken):
        a.data_frame(b"z" * 21, 0.0)
    for f in frames:
        assert b.on_frame(f, 0.1) == f.data
    assert b.ack_due() is False  # received, not yet written out: nothing to acknowledge
    b.wrote(80)
    assert b.ack_due()
    a.on_frame(b.ack_frame(0.2), 0.2)
    assert a.room() == 100 and a.acked == 80


def test_a_lost_frame_breaks_the_session_rather_than_the_stream() -> None:
    a, b = Flow(), Flow()
    first = a.data_frame(b"hello", 0.0)
    second = a.data_frame(b"world", 0.0)
    del first
    with pytest.raises(TunnelBroken, match="lost"):
        b.on_frame(second, 0.0)


def test_an_ack_beyond_what_was_sent_is_refused() -> None:
    a = Flow()
    a.data_frame(b"abc", 0.0)
    with pytest.raises(TunnelBroken):
        a.on_frame(Frame(ack=4), 0.0)
    with pytest.raises(TunnelBroken):
        Flow().wrote(1)


def test_keepalives_and_a_silent_peer() -> None:
    f = Flow(keepalive_s=5, idle_timeout_s=15)
    f.start(100.0)
    assert not f.keepalive_due(104.0) and f.keepalive_due(105.0)
    f.ack_frame(105.0)
    assert not f.keepalive_due(106.0)
    assert not f.peer_gone(114.0) and f.peer_gone(115.0)
    f.on_frame(Frame(), 114.0)  # a keepalive from the peer
    assert not f.peer_gone(128.0)
    f.on_frame(Frame(offset=0, data=b"a"), 128.0)
    f.wrote(1)
    assert f.keepalive_due(128.1)  # a trickle is acknowledged soon, not after 5 s


def test_frames_round_trip_and_junk_is_a_typed_error() -> None:
    frame = Frame(offset=7, data=b"\x00\xff", ack=3)
    assert decode_frame(encode_frame(frame)) == frame
    assert decode_frame(encode_frame(Frame(close="bye"))).close == "bye"
    for junk in (b"", b"{}x", encode_frame(Frame(offset=0, data=b"x" * (CHUNK + 1)))):
        with pytest.raises(ApiError):
            decode_frame(junk)


def test_a_half_close_ends_one_direction_and_the_other_goes_on() -> None:
    client, guest = Flow(), Flow()
    assert guest.on_frame(client.data_frame(b"GET / HTTP/1.0\r\n\r\n", 0.0), 0.0) == b"GET / HTTP/1.0\r\n\r\n"
    guest.wrote(18)
    eof = client.eof_frame(0.1)
    assert eof.eof and eof.offset == 18
    assert guest.on_frame(eof, 0.1) == b"" and guest.peer_eof and not guest.both_ended
    with pytest.raises(TunnelBroken, match="end of our stream"):
        client.data_frame(b"more", 0.2)
    # the answer still flows the other way, acknowledged, and then its own end
    assert client.on_frame(guest.data_frame(b"HTTP/1.0 200 OK", 0.2), 0.2) == b"HTTP/1.0 200 OK"
    client.wrote(15)
    assert guest.on_frame(client.ack_frame(0.3), 0.3) == b"" and guest.acked == 15
    client.on_frame(guest.eof_frame(0.4), 0.4)
    assert client.both_ended and guest.both_ended


def test_an_end_of_stream_that_skips_data_or_data_after_it_breaks_the_session() -> None:
    a, b = Flow(), Flow()
    a.data_frame(b"lost", 0.0)
    with pytest.raises(TunnelBroken, match="ended at 4, 0 received"):
        b.on_frame(a.eof_frame(0.0), 0.0)
    c = Flow()
    c.on_frame(Frame(offset=0, eof=True), 0.0)
    with pytest.raises(TunnelBroken, match="after the end"):
        c.on_frame(Frame(offset=0, data=b"x"), 0.0)


def test_an_eof_frame_round_trips_and_a_plain_frame_does_not_grow() -> None:
    assert decode_frame(encode_frame(Frame(offset=9, ack=2, eof=True))).eof
    assert encode_frame(Frame(offset=9, ack=2)) == encode_frame(Frame(offset=9, ack=2, eof=False))
    assert b"eof" not in encode_frame(Frame(offset=9, ack=2))
