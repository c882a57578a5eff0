"""BENCHMARK TOOLING: the virtbus CLI as a bench calls it, `python -m ctl` of this checkout with the lab's
connection options. A refused call ends the bench in one line with what the CLI said (bench/entry.py).
Usage, beside entry:
    import virtbus_cli
    out = virtbus_cli.run(["--server", url], "get", "vmis", name, "-o", "json").stdout
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import entry  # bench/entry.py, beside this module

REPO = Path(__file__).resolve().parents[1]


def refusal(args: Sequence[str], done: subprocess.CompletedProcess[str]) -> str:
    """Pure: the line a refused call ends the bench with, its error first (the CLI's errors go to
    stderr; a command's own output, a watch's last lines say, to stdout)."""
    said = "\n".join(part.strip() for part in (done.stderr, done.stdout) if part.strip())
    return f"virtbus {' '.join(args)}: {said or f'exit status {done.returncode}'}"


def run(server: list[str], *args: str, check: bool = True, timeout: float = 600,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """server: the CLI's connection options (`--server URL [--creds FILE]`), [] for its default.
    check: a refusal raises entry.BenchError; otherwise it is returned for the caller to look at."""
    if not isinstance(server, list):  # a bare URL would be spread into one option per character
        raise TypeError(f"server: the CLI's options as a list, e.g. ['--server', URL], not {server!r}")
    done = subprocess.run([sys.executable, "-m", "ctl", *server, *args], capture_output=True, text=True,
                          cwd=REPO, check=False, timeout=timeout, input=stdin)
    if check and done.returncode != 0:
        raise entry.BenchError(refusal(args, done))
    return done
