"""bench/virtbus_cli.py: the benches' one way to call the CLI; a refused call ends the bench in one line
with what the CLI said."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import virtbus_cli  # noqa: E402 - bench/, as the benches
from entry import BenchError, why_not  # noqa: E402


def test_a_refusal_says_the_command_and_its_error_before_its_output() -> None:
    done = subprocess.CompletedProcess(["python"], 1, stdout="waiting...\n", stderr="error: NotFound: vmi x\n")
    assert virtbus_cli.refusal(["get", "vmis", "x"], done) == "virtbus get vmis x: error: NotFound: vmi x\nwaiting..."


def test_a_silent_refusal_says_its_exit_status() -> None:
    done = subprocess.CompletedProcess(["python"], 3, stdout="", stderr="  \n")
    assert virtbus_cli.refusal(["stop", "x"], done) == "virtbus stop x: exit status 3"


def test_the_real_cli_refusing_ends_the_bench_with_its_line() -> None:
    with pytest.raises(BenchError) as caught:
        virtbus_cli.run([], "no-such-command", timeout=60)
    line = why_not(caught.value)
    assert line is not None and line.startswith("virtbus no-such-command: ")
    assert "invalid choice: 'no-such-command'" in line


def test_unchecked_the_refusal_is_the_callers_to_look_at() -> None:
    done = virtbus_cli.run([], "no-such-command", check=False, timeout=60)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_an_answer_is_what_the_cli_printed() -> None:
    done = virtbus_cli.run([], "--help", timeout=60)
    assert done.returncode == 0 and "usage:" in done.stdout


def test_a_bare_url_for_the_options_is_a_bug_said_at_once() -> None:
    with pytest.raises(TypeError, match="as a list"):
        virtbus_cli.run("nats://127.0.0.1:4222", "get", "vmis")  # type: ignore[arg-type]
