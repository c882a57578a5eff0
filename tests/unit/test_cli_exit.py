"""How `virtbus` ends when its reader goes or the user interrupts it: as a Unix tool would, without a
traceback or an empty "error:"."""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Iterator

import pytest

from ctl import cli


@pytest.fixture
def piped_stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, io.TextIOWrapper]]:
    """A real pipe: (its reading end's fd, the writing end). Each test makes it sys.stdout itself
    (``become_stdout``): pytest's capture sets sys.stdout afresh between a fixture and its test."""
    read_fd, write_fd = os.pipe()
    out = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    yield read_fd, out
    for close in (out.close, lambda: os.close(read_fd)):
        try:
            close()
        except OSError:  # closed by the test, or a flush into a pipe nobody reads
            pass


def become_stdout(monkeypatch: pytest.MonkeyPatch, out: io.TextIOWrapper) -> None:
    monkeypatch.setattr(sys, "stdout", out)


def ends(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as ended:
        cli.main(argv)
    assert isinstance(ended.value.code, int)
    return ended.value.code


def test_a_pipe_nobody_reads_is_told_from_one_somebody_does(
        piped_stdout: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, out = piped_stdout
    become_stdout(monkeypatch, out)
    assert not cli.stdout_reader_gone()
    os.close(read_fd)
    assert cli.stdout_reader_gone()


def test_output_into_a_pipe_whose_reader_went_ends_quietly(
        piped_stdout: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    read_fd, out = piped_stdout
    become_stdout(monkeypatch, out)
    os.close(read_fd)  # `| head` has read what it wanted

    async def lists(args: argparse.Namespace) -> int:
        out.write("NAME\n" * 1000)  # buffered: the pipe is written at the flush
        return 0

    monkeypatch.setattr(cli, "run", lists)
    assert ends(["get", "vmis"]) == 141  # 128 + SIGPIPE, as `cat` killed by it
    assert capfd.readouterr().err == ""


def test_a_broken_pipe_of_the_commands_own_is_an_error(
        piped_stdout: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    become_stdout(monkeypatch, piped_stdout[1])  # its reader still there

    async def loses_its_peer(args: argparse.Namespace) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "run", loses_its_peer)
    assert ends(["get", "vmis"]) == 1
    assert capfd.readouterr().err == "error: [Errno 32] Broken pipe\n"


def test_an_interrupt_says_so(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    async def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    assert ends(["get", "vmis"]) == 130
    assert capfd.readouterr().err == "interrupted\n"
