"""Which streams are given virtbus's consumer limit: those that leave it to the server's default."""

from __future__ import annotations

import pytest

from servicekit.streamlimits import MAX_CONSUMERS, names_no_limit


@pytest.mark.parametrize("max_consumers", [None, 0, -1])
def test_a_stream_naming_no_limit_is_given_one(max_consumers: int | None) -> None:
    assert names_no_limit(max_consumers)


@pytest.mark.parametrize("max_consumers", [1, 1_000, 5_000, MAX_CONSUMERS, 10 * MAX_CONSUMERS])
def test_a_limit_a_stream_names_itself_is_kept(max_consumers: int) -> None:
    assert not names_no_limit(max_consumers)
