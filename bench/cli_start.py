"""How long a `virtbus` command makes its user wait, printed: the CLI's start-up (a fresh interpreter, its
imports and the parse of the command: `python -m ctl COMMAND --help`, which ends where the command would
connect, and runs on any version of the CLI), and with a lab whole calls (`python -m ctl ...`: start-up,
connecting, the request, the output). Medians and P90 of --runs calls.
Usage (the start-up needs no lab; --server adds the whole calls):
    .venv/bin/python bench/cli_start.py [--runs 11] [--server nats://127.0.0.1:4222] [--command 'get vms' ...]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time

import entry  # bench/entry.py, beside this script
import virtbus_cli  # bench/virtbus_cli.py

COMMANDS = ["get vms", "get vmi testvm -o yaml", "start testvm", "console testvm --log", "apply -f x.yaml"]


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=virtbus_cli.REPO, check=False, timeout=120)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise entry.BenchError(virtbus_cli.refusal(argv[3:], done))
    return took


def figures(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:.0f} ms, P90 {p90 * 1000:.0f} ms"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=11)
    p.add_argument("--server", default=None, help="a lab's NATS URL: whole calls too (NATS_CREDS as the CLI's)")
    p.add_argument("--command", action="append", default=None, help=f"a command line to time (default: {COMMANDS})")
    args = p.parse_args()
    bare = timed([sys.executable, "-c", "pass"])
    bare = min([bare, *(timed([sys.executable, "-c", "pass"]) for _ in range(args.runs - 1))])
    print(f"a bare interpreter: {bare * 1000:.0f} ms (the fastest of {args.runs})", flush=True)
    for line in args.command or COMMANDS:
        words = shlex.split(line)
        start = figures([timed([sys.executable, "-m", "ctl", *words, "--help"]) for _ in range(args.runs)])
        print(f"virtbus {line}: start-up {start}", flush=True)
    if args.server is not None:
        for line in ("get vms", "get nodes -o yaml"):
            words = ["--server", args.server, *shlex.split(line)]
            whole = figures([timed([sys.executable, "-m", "ctl", *words]) for _ in range(args.runs)])
            print(f"virtbus {line}: the whole call {whole}", flush=True)


if __name__ == "__main__":
    entry.run(main, "cli_start.py")
