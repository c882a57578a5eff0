"""processes.end_children on real processes: a subreaper's last act ends what was orphaned to it,
also what ending one of them orphans in turn (a killed libvirtd's QEMU, a launcher's guest)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from servicekit import processes

# A subreaper that gets two orphans: a shell waiting on its own sleep (as a libvirtd with a QEMU
# child), whose sleep is orphaned to us once the shell ends. Then it ends its children and says which.
SUBREAPER = textwrap.dedent("""
    import ctypes, subprocess, sys, time
    from pathlib import Path
    from servicekit import processes
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
    out = Path(sys.argv[1])
    subprocess.run(["sh", "-c", f"sh -c 'sleep 300 & echo $! > {out}/inner; wait' & echo $! > {out}/outer"],
                   check=True)
    while not (out / "inner").exists() or not (out / "inner").read_text().strip():
        time.sleep(0.02)
    print(" ".join(map(str, processes.children())), flush=True)
    print(" ".join(map(str, processes.end_children(5.0))), flush=True)
    print(" ".join(map(str, processes.children())), flush=True)
""")


def _pid(path: Path) -> int:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text.isdigit() else 0


def test_a_subreaper_ends_its_orphans_and_theirs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", SUBREAPER, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    outer, inner = _pid(tmp_path / "outer"), _pid(tmp_path / "inner")
    try:
        assert done.returncode == 0, done.stderr
        before, ended, after = (line.split() for line in done.stdout.splitlines())
        assert before == [str(outer)]  # only the shell is its child at first; its sleep is the shell's
        assert ended == [str(outer), str(inner)]  # the sleep, orphaned by the shell's end, went next
        assert after == []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (processes.alive(outer) or processes.alive(inner)):
            time.sleep(0.05)
        assert not processes.alive(outer) and not processes.alive(inner)
    finally:
        for pid in (outer, inner):  # never left behind, also when it failed
            if pid and processes.alive(pid) and processes.command(pid).startswith(("sleep", "sh")):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_children_of_a_process_without_any() -> None:
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            assert child.pid in processes.children()
            assert processes.children(child.pid) == []
            deadline = time.monotonic() + 5  # until the forked child has exec'd sleep
            while processes.command(child.pid) != "sleep 30" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert processes.command(child.pid) == "sleep 30"
        finally:
            child.kill()
    assert processes.command(child.pid) == ""
