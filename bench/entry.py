"""BENCHMARK TOOLING: how a bench that needs a lab ends when it cannot run: one line saying why (no lab
answering, no lab's state where it looked, a command it ran refused) and exit status 1, instead of a
traceback. Anything else is a bug and keeps its traceback. Usage, at the end of a bench:
    entry.run(main, "idle.py")                     # or entry.run(lambda: asyncio.run(main()), ...)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto.errors import ApiError, Code  # noqa: E402 - the repository, for the benches run as scripts

NO_LAB = "no lab up? `bash scripts/lab.sh` makes one"


class BenchError(Exception):
    """The bench cannot go on, for the reason its message gives."""


def why_not(exc: BaseException) -> str | None:
    """Pure: the line a bench ends with for ``exc``, or None where it is a bug (its traceback shows)."""
    if isinstance(exc, BenchError):
        return str(exc)
    if isinstance(exc, ApiError):
        return f"{exc} ({NO_LAB})" if exc.code is Code.UNAVAILABLE else str(exc)
    if isinstance(exc, FileNotFoundError) and exc.filename is not None and Path(str(exc.filename)).name == "lab.json":
        return f"no lab at {Path(str(exc.filename)).parent} ({NO_LAB})"
    if isinstance(exc, subprocess.CalledProcessError):
        cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(str(part) for part in exc.cmd)
        said = _text(exc.stderr).strip() or _text(exc.output).strip()  # what it said, where the bench kept it
        return (f"`{cmd}` failed (exit status {exc.returncode}): {said[-2000:]}" if said
                else f"`{cmd}` failed (exit status {exc.returncode}; what it said is above)")
    return None


def _text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def run(main: Callable[[], object], name: str) -> None:
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        why = why_not(exc)
        if why is None:
            raise
        sys.exit(f"{name}: {why}")
