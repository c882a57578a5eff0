"""Which deleted keys the leader's sweep takes out or trims, and on which nats-server it takes them out
whole (servicekit.kvmarkers' pure parts)."""

from __future__ import annotations

from nats.aio.client import ServerVersion

from servicekit import kvmarkers


class Connected:
    def __init__(self, version: str) -> None:
        self.connected_server_version = ServerVersion(version)


def test_only_keys_whose_marker_the_stream_had_at_the_mark_go() -> None:
    deleted = [("a", 5), ("b", 12), ("c", 13)]
    assert kvmarkers.gone_before(deleted, 12) == [("a", 5), ("b", 12)]
    assert kvmarkers.gone_before(deleted, 0) == []  # the first sweep of a term only marks


def test_a_trim_passes_over_the_markers_it_trimmed_before() -> None:
    deleted = [("a", 5), ("b", 12), ("c", 13), ("d", 20)]
    assert kvmarkers.gone_before(deleted, 20, after=12) == [("c", 13), ("d", 20)]
    assert kvmarkers.gone_before(deleted, 12, after=12) == []


def test_servers_whose_purges_move_other_watches_are_only_trimmed() -> None:
    assert not kvmarkers.server_purges_safely(Connected("2.9.10"))  # Debian 12's
    assert not kvmarkers.server_purges_safely(Connected("2.10.10"))
    assert kvmarkers.server_purges_safely(Connected("2.10.11"))
    assert kvmarkers.server_purges_safely(Connected("2.15.1"))
    assert not kvmarkers.server_purges_safely(Connected("0.0.0-unknown"))
