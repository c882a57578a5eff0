"""bench/entry.py: a bench that cannot run says why in one line; a bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proto.errors import ApiError, Code
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from entry import BenchError, run, why_not  # noqa: E402 - bench/, as the benches


def test_no_lab_answering_says_so_and_how_to_make_one() -> None:
    line = why_not(ApiError(Code.UNAVAILABLE, "cannot reach NATS at nats://127.0.0.1:4222"))
    assert line == ("Unavailable: cannot reach NATS at nats://127.0.0.1:4222 "
                    "(no lab up? `bash scripts/lab.sh` makes one)")
    assert why_not(ApiError(Code.INVALID, "memory 1Ti is impossible here", "memory")) == (
        "Invalid (memory): memory 1Ti is impossible here")  # the lab answered: no hint


def test_a_missing_lab_state_is_said_but_another_missing_file_is_a_bug() -> None:
    missing = FileNotFoundError(2, "No such file or directory", "/var/lib/virtbus/lab/lab.json")
    assert why_not(missing) == "no lab at /var/lib/virtbus/lab (no lab up? `bash scripts/lab.sh` makes one)"
    assert why_not(FileNotFoundError(2, "No such file or directory", "/work/guest/disk.img")) is None
    assert why_not(ValueError("a bug")) is None


def test_a_refused_command_and_a_bench_s_own_reason() -> None:
    failed = subprocess.CalledProcessError(1, ["python", "-m", "ctl", "apply", "-f", "x.json"])
    assert why_not(failed) == "`python -m ctl apply -f x.json` failed (exit status 1; what it said is above)"
    captured = subprocess.CalledProcessError(2, "bash guest/build.sh", output="", stderr=b"guest/build: no lz4\n")
    assert why_not(captured) == "`bash guest/build.sh` failed (exit status 2): guest/build: no lz4"
    assert why_not(BenchError("testvm has no address")) == "testvm has no address"


def test_run_ends_with_the_line_or_lets_a_bug_through() -> None:
    def unreachable() -> None:
        raise ApiError(Code.UNAVAILABLE, "cannot reach NATS")

    with pytest.raises(SystemExit) as ended:
        run(unreachable, "lane.py")
    assert ended.value.code == "lane.py: Unavailable: cannot reach NATS (no lab up? `bash scripts/lab.sh` makes one)"

    def buggy() -> None:
        raise KeyError("figures")

    with pytest.raises(KeyError):
        run(buggy, "lane.py")
