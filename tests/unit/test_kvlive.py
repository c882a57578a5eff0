"""What a watch that hears republished writes makes of each message (servicekit.kvlive's pure part)."""

from __future__ import annotations

from nats.aio.msg import Msg

from servicekit.kvlive import Known, Verdict, republished_update


def test_a_message_that_follows_the_last_one_known_of_its_key_applies() -> None:
    known = Known()
    known.note("node1.a", 5)  # the current values' consumer gave seq 5
    assert known.judge("node1.a", 9, 5) is Verdict.APPLY
    assert known.judge("node1.b", 10, 0) is Verdict.APPLY  # a new key: nothing before it
    assert known.revisions == {"node1.a": 9, "node1.b": 10}


def test_what_the_current_values_gave_already_is_passed_over() -> None:
    known = Known()
    known.note("node1.a", 12)  # written after the subscription, before the consumer read it
    assert known.judge("node1.a", 9, 5) is Verdict.SKIP
    assert known.judge("node1.a", 12, 9) is Verdict.SKIP
    assert known.judge("node1.a", 14, 12) is Verdict.APPLY


def test_a_message_after_one_never_heard_is_a_gap() -> None:
    known = Known()
    known.note("node1.a", 5)
    assert known.judge("node1.a", 11, 8) is Verdict.GAP  # seq 8 of the key never came
    assert known.judge("node1.c", 11, 3) is Verdict.GAP  # a key with history the watch never had
    assert known.revisions == {"node1.a": 5}


def test_a_deletions_marker_counts_as_the_keys_last_message() -> None:
    known = Known()
    known.note("node1.a", 7)  # the marker of its deletion, as the consumer gave it
    assert known.judge("node1.a", 20, 7) is Verdict.APPLY  # the same name bound here again


def test_a_key_whose_deletions_marker_expired_starts_afresh() -> None:
    # the marker goes after its TTL (servicekit.kvmarkers): the key's next message follows nothing
    known = Known()
    known.note("node1.a", 7, deleted=True)  # the current values' consumer gave its marker
    assert known.judge("node1.a", 20, 0) is Verdict.APPLY
    assert known.judge("node1.b", 21, 0) is Verdict.APPLY
    assert known.judge("node1.b", 22, 21, deleted=True) is Verdict.APPLY  # heard it go
    assert known.judge("node1.b", 30, 0) is Verdict.APPLY


def test_a_key_with_a_value_that_comes_again_from_nothing_is_a_gap() -> None:
    known = Known()
    known.note("node1.a", 7)
    assert known.judge("node1.a", 20, 0) is Verdict.GAP  # its deletion, and maybe more, never came
    known.note("node1.b", 8, deleted=True)
    assert known.judge("node1.b", 9, 0) is Verdict.APPLY
    assert known.judge("node1.b", 30, 0) is Verdict.GAP  # b has a value since 9: 0 is no longer possible


def test_an_audit_forgets_deleted_keys_the_stream_no_longer_has() -> None:
    known = Known()
    known.note("node1.a", 7, deleted=True)
    known.note("node1.b", 8)
    known.note("node1.c", 9, deleted=True)
    assert not known.audit(["node1.b", "node1.c"])  # a's marker expired; c's is still there
    assert known.revisions == {"node1.b": 8, "node1.c": 9}
    assert known.judge("node1.a", 30, 0) is Verdict.APPLY


def test_an_audit_calls_a_key_lost_only_when_it_is_still_unheard_at_the_next() -> None:
    known = Known()
    known.note("node1.a", 1)
    assert not known.audit(["node1.a", "node1.b"])  # b may be on its way
    known.judge("node1.b", 3, 0)
    assert not known.audit(["node1.a", "node1.b", "node1.c"])
    assert known.audit(["node1.a", "node1.b", "node1.c"])  # c never came


def msg(headers: dict[str, str], data: bytes = b"{}") -> Msg:
    return Msg(_client=None, subject="virtbus.nodevmis.nodevmis-00.node1.a", data=data,  # type: ignore[arg-type]
               headers=headers)


def test_a_republished_message_reads_as_the_keys_update() -> None:
    put = republished_update(msg({"Nats-Subject": "$KV.nodevmis-00.node1.a", "Nats-Sequence": "42",
                                  "Nats-Last-Sequence": "40"}, b"x"), "$KV.nodevmis-00.")
    assert put is not None and (put.key, put.value, put.revision, put.deleted) == ("node1.a", b"x", 42, False)
    gone = republished_update(msg({"Nats-Subject": "$KV.nodevmis-00.node1.a", "Nats-Sequence": "43",
                                   "KV-Operation": "DEL"}, b""), "$KV.nodevmis-00.")
    assert gone is not None and gone.deleted and gone.revision == 43
    # without the stream's headers, or of another bucket: not an update of this watch
    assert republished_update(msg({}), "$KV.nodevmis-00.") is None
    assert republished_update(msg({"Nats-Subject": "$KV.nodevmis-01.node1.a", "Nats-Sequence": "1"}),
                              "$KV.nodevmis-00.") is None
    assert republished_update(msg({"Nats-Subject": "$KV.nodevmis-00.node1.a", "Nats-Sequence": "x"}),
                              "$KV.nodevmis-00.") is None


def test_a_whole_bucket_watch_hears_every_sequence_in_turn() -> None:
    known = Known(whole=True, highest=10)  # the stream's last when the watch began
    known.note("a", 9)  # a current value
    assert known.judge("a", 9, 0) is Verdict.SKIP  # republished as the watch began: had it
    assert known.judge("b", 11, 0) is Verdict.APPLY  # a new key: no chain of its own to check
    assert known.judge("c", 13, 0) is Verdict.GAP  # 12 never came


def test_a_whole_bucket_audit_finds_the_last_messages_lost() -> None:
    known = Known(whole=True, highest=10)
    assert not known.audit_sequence(12)  # 11 and 12 may still be on their way
    assert known.judge("a", 11, 0) is Verdict.APPLY
    assert known.judge("b", 12, 0) is Verdict.APPLY
    assert not known.audit_sequence(14)  # had all up to 12
    assert known.audit_sequence(14)  # 13 and 14 never came


def test_a_whole_bucket_audit_after_a_sweep_is_quiet() -> None:
    known = Known(whole=True, highest=20)  # the last message (a deleted key's marker) was swept: the values stop at 15
    known.note("a", 15)
    assert not known.audit_sequence(20)
    assert not known.audit_sequence(20)
