"""bench/warmlog.py: a handler's warm memory read back from its JSON log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from warmlog import Warm, line, settled_line, warm_of  # noqa: E402 - bench/, as the lane imports it

MIB = 2**20


def event(name: str, **fields: int) -> str:
    return json.dumps({"event": name, "node": "node1", "level": "info", **fields})


def test_a_handler_settles_once_its_first_refill_ends_and_counts_the_later_ones() -> None:
    text = "\n".join([
        "Traceback (most recent call last): not JSON",
        event("warm memory", size=256 * MIB),
    ])
    assert warm_of(text) == Warm(256 * MIB, 0, False, 0)
    text += "\n" + event("warm memory refilled", added=256 * MIB, held=256 * MIB)
    assert warm_of(text) == Warm(256 * MIB, 256 * MIB, True, 1)
    text += "\n" + event("warm memory refilled", added=160 * MIB, held=256 * MIB)
    assert warm_of(text) == Warm(256 * MIB, 256 * MIB, True, 2)
    text += "\n" + event("warm memory", size=128 * MIB)  # the handler started again: its own count
    assert warm_of(text) == Warm(128 * MIB, 0, False, 0)


def test_a_handler_that_keeps_none_is_settled_and_one_that_said_nothing_is_not() -> None:
    assert warm_of(event("warm memory", size=0)) == Warm(0, 0, True, 0)
    assert warm_of("") == Warm(None, 0, False, 0)
    assert warm_of(event("warm memory not refilled")).settled


def test_the_lab_line_names_each_node(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "handler-node1.log").write_text(event("warm memory", size=0) + "\n")
    (logs / "handler-node2.log").write_text(event("warm memory", size=64 * MIB) + "\n"
                                            + event("warm memory refilled", added=64 * MIB, held=64 * MIB) + "\n")
    expected = "warm memory (handler.warmmemory): node1 0 of 0 MiB, node2 64 of 64 MiB"
    assert settled_line(tmp_path, timeout=5) == expected
    assert line([], []) == "warm memory (handler.warmmemory): "
