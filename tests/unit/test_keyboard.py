"""The console keyboard lease: one session types, the others (and headerless keystrokes) wait."""

from __future__ import annotations

import pytest

from launcher.keyboard import Keyboard
from proto.console import check_session
from proto.errors import ApiError, Code


def test_anyone_types_while_nobody_holds_the_keyboard() -> None:
    kb = Keyboard("vm")
    assert kb.accepts(None, 0.0) and kb.accepts("a", 0.0)


def test_the_holder_types_and_the_others_are_refused() -> None:
    kb = Keyboard("vm", lease_seconds=6)
    assert kb.claim("a", 10.0).lease_seconds == 6
    assert kb.accepts("a", 11.0)
    assert not kb.accepts("b", 11.0) and not kb.accepts(None, 11.0)
    with pytest.raises(ApiError) as refused:
        kb.claim("b", 11.0)
    assert refused.value.code is Code.CONFLICT and refused.value.retryable


def test_renewing_keeps_the_lease_and_a_silent_holder_loses_it() -> None:
    kb = Keyboard("vm", lease_seconds=6)
    kb.claim("a", 0.0)
    kb.claim("a", 5.0)  # renewed: good until 11
    assert not kb.accepts("b", 10.9)
    assert kb.accepts("b", 11.0)  # expired: free for all
    kb.claim("b", 11.0)
    assert not kb.accepts("a", 11.5)


def test_release_frees_the_keyboard_only_for_its_holder() -> None:
    kb = Keyboard("vm")
    kb.claim("a", 0.0)
    assert kb.release("b").lease_seconds == 0
    assert not kb.accepts(None, 1.0)  # b could not release a's lease
    kb.release("a")
    assert kb.accepts(None, 1.0)
    kb.claim("b", 1.0)


@pytest.mark.parametrize("session", ["", "a b", "x" * 65, "../etc", "a.b", "*", ">"])
def test_session_ids_that_could_break_a_header_or_subject_are_refused(session: str) -> None:
    with pytest.raises(ApiError) as bad:
        check_session(session)
    assert bad.value.code is Code.INVALID and bad.value.field == "session"
