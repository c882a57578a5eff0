"""Kubernetes' durations as manifests spell them (Go's time.ParseDuration), and written back as Go does."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto import durations
from proto.errors import ApiError, Code


@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300.0), ("1h30m", 5400.0), ("90s", 90.0), ("1.5h", 5400.0), ("300ms", 0.3), ("0", 0.0), ("0s", 0.0),
    ("2h45m10s", 9910.0), (".5s", 0.5), ("1500us", 0.0015), ("+1m", 60.0), ("1m1m", 120.0)])
def test_go_durations_read_as_go_reads_them(text: str, seconds: float) -> None:
    assert math.isclose(durations.parse(text, "f"), seconds)


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "1d", "5m ", "1h-5m", "--1s", "1.2.3s", "five minutes",
                                  "1" * 65 + "s", "5M"])
def test_anything_else_is_refused_with_its_field(text: str) -> None:
    with pytest.raises(ApiError) as err:
        durations.parse(text, "spec.failureDeadline")
    assert (err.value.code, err.value.field) == (Code.INVALID, "spec.failureDeadline")


def test_bounds_and_types() -> None:
    for bad in (60, None, ["1m"]):
        with pytest.raises(ApiError):
            durations.parse(bad, "f")
    with pytest.raises(ApiError) as below:
        durations.parse("-1m", "f")
    assert "out of range: from 0s to no limit" in below.value.message
    with pytest.raises(ApiError) as above:
        durations.parse("2h", "f", at_most=3600.0)
    assert "from 0s to 1h0m0s" in above.value.message
    assert durations.parse("-1m", "f", at_least=-math.inf) == -60.0


def test_written_as_go_writes_them() -> None:
    assert [durations.spelled(s) for s in (300.0, 5400.0, 90.0, 0.3, 0.0, 59.5, 3600.0, -60.0)] == [
        "5m0s", "1h30m0s", "1m30s", "300ms", "0s", "59.5s", "1h0m0s", "-1m0s"]


@given(st.integers(min_value=0, max_value=10**10))
def test_what_is_written_reads_back(millis: int) -> None:
    seconds = millis / 1000
    assert math.isclose(durations.parse(durations.spelled(seconds), "f"), seconds, abs_tol=1e-9)
