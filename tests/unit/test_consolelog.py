"""RunLog: which console chunks `virtbus console NAME --log --until TEXT` prints and waits on."""

from __future__ import annotations

from ctl.consolelog import RunLog


def test_an_earlier_runs_text_is_passed_over_once_known() -> None:
    log = RunLog("run2", b"READY")
    assert log.accept("run1", b"READY\n") is None  # not known yet: the caller asks which run is current
    assert log.learn("run2", "run1", b"READY\n") == b""
    assert log.accept("run1", b"more of it") == b""  # known now: no second question
    assert not log.done
    assert log.accept("run2", b"booting\n") == b"booting\n"
    assert log.accept("run2", b"VIRTBUS-READY\n") == b"VIRTBUS-READY\n"
    assert log.done


def test_text_split_across_chunks_counts() -> None:
    log = RunLog("r", b"READY")
    log.accept("r", b"...REA")
    assert not log.done
    log.accept("r", b"DY\n")
    assert log.done


def test_a_restart_is_followed_and_the_text_awaited_in_the_new_run() -> None:
    log = RunLog("r1", b"READY")
    log.accept("r1", b"half a boot, REA")
    assert log.accept("r2", b"DY") is None
    assert log.learn("r2", "r2", b"DY") == b"DY"  # the new run's own output, not glued to the old one's
    assert log.run == "r2"
    assert not log.done
    log.accept("r2", b" READY")
    assert log.done


def test_with_no_instance_the_latest_run_in_the_stream_is_shown() -> None:
    log = RunLog(None, b"READY")
    assert log.accept("r1", b"READY old") == b"READY old"
    assert log.done  # as `--log` alone shows the last run's output: the text is there
    log = RunLog(None, b"READY")
    log.accept("r1", b"READY old")
    assert log.accept("r2", b"new run") == b"new run"
    assert not log.done  # only the last run counts
