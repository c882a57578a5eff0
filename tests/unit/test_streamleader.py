"""A store opening a stream of a cluster waits until the stream has a leader, so its first write does
not meet a stream just born (servicekit.store.with_leader)."""

from __future__ import annotations

import time

from nats.js.api import ClusterInfo, StreamConfig, StreamInfo, StreamState

from servicekit.store import with_leader


def info(leader: str | None, *, clustered: bool = True) -> StreamInfo:
    return StreamInfo(config=StreamConfig(name="KV_vms"), state=StreamState(0, 0, 0, 0, 0),
                      cluster=ClusterInfo(leader=leader, name="c") if clustered else None)


class Electing:
    """A stream whose replicas elect a leader after ``asked`` more questions."""

    def __init__(self, asked: int) -> None:
        self.left = asked
        self.asked: list[str] = []

    async def stream_info(self, name: str) -> StreamInfo:
        self.asked.append(name)
        self.left -= 1
        return info("n2" if self.left <= 0 else None)


async def test_a_stream_with_a_leader_is_taken_as_it_is() -> None:
    js = Electing(0)
    assert (await with_leader(js, info("n1"))).cluster == ClusterInfo(leader="n1", name="c")
    assert (await with_leader(js, info(None, clustered=False))).cluster is None  # told nothing of a cluster
    assert js.asked == []


async def test_a_stream_without_a_leader_is_asked_again_until_it_has_one() -> None:
    js = Electing(3)
    found = await with_leader(js, info(None))
    assert found.cluster is not None and found.cluster.leader == "n2"
    assert js.asked == ["KV_vms"] * 3


async def test_a_stream_that_elects_none_is_given_up_after_the_wait() -> None:
    js = Electing(10_000)
    started = time.monotonic()
    found = await with_leader(js, info(None), wait=0.35)
    assert found.cluster is not None and found.cluster.leader is None
    assert 0.3 <= time.monotonic() - started < 2
    assert 2 <= len(js.asked) <= 5
