"""A NATS failure that may pass leaves the store as ApiError(UNAVAILABLE), retryable, naming what
was asked; every other failure leaves as nats-py raised it, for the store's own clauses."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest

from proto.errors import ApiError, Code
from servicekit.natsfaults import Answering


def test_a_503_leaves_as_unavailable_naming_the_key_without_nats_internals() -> None:
    with pytest.raises(ApiError) as caught:
        with Answering("vmis", "testvm"):
            raise nats.js.errors.ServiceUnavailableError(code=503, err_code=10008,
                                                         description="JetStream system temporarily unavailable")
    assert caught.value.code is Code.UNAVAILABLE and caught.value.retryable
    assert "vmis/testvm" in caught.value.message and "temporarily unavailable" in caught.value.message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_timeout_is_unavailable_too() -> None:
    with pytest.raises(ApiError) as caught:
        with Answering("nodes", "node1"):
            raise nats.errors.TimeoutError
    assert caught.value.code is Code.UNAVAILABLE and "nodes/node1" in caught.value.message


@pytest.mark.parametrize("raised", [nats.js.errors.KeyWrongLastSequenceError("wrong last sequence"),
                                    nats.js.errors.KeyNotFoundError(), ValueError("bad")])
def test_other_failures_pass_through_unchanged(raised: Exception) -> None:
    with pytest.raises(type(raised)) as caught:
        with Answering("vmis", "testvm"):
            raise raised
    assert caught.value is raised


def test_no_failure_is_nothing() -> None:
    with Answering("vmis", "testvm"):
        value = 1
    assert value == 1
