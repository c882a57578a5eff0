"""Time from ``virtbus start`` to Running and to the guest's console marker, median of N runs.

Needs a lab with the testvm applied (scripts/lab.sh makes one). Usage:
    .venv/bin/python bench/start_to_marker.py [--runs 5] [--vm testvm] [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctl.client import ApiClient, default_url  # noqa: E402
from proto.api import Ack, NameRequest, VMReply  # noqa: E402

MARKER = b"VIRTBUS-GUEST-READY"


async def status(api: ApiClient, name: str) -> str:
    return (await api.call("vm", "get", NameRequest(name=name), VMReply)).item.printable_status


async def until(check: object, limit: float = 300) -> None:
    start = time.monotonic()
    while not await check():  # type: ignore[operator]
        if time.monotonic() - start > limit:
            raise TimeoutError
        await asyncio.sleep(0.05)


async def one_run(api: ApiClient, name: str) -> tuple[float, float]:
    if await status(api, name) != "Stopped":
        await api.call("vm", "stop", NameRequest(name=name), Ack)
        await until(lambda: _is(api, name, "Stopped"))
    t0 = time.monotonic()
    await api.call("vm", "start", NameRequest(name=name), Ack)
    await until(lambda: _is(api, name, "Running"))
    running = time.monotonic() - t0

    async def marker() -> bool:
        return MARKER in await api.console_log(name)

    await until(marker)
    shown = time.monotonic() - t0
    await api.call("vm", "stop", NameRequest(name=name), Ack)
    await until(lambda: _is(api, name, "Stopped"))
    return running, shown


async def _is(api: ApiClient, name: str, wanted: str) -> bool:
    return await status(api, name) == wanted


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--vm", default="testvm")
    p.add_argument("--server", default=default_url())
    args = p.parse_args()
    api = await ApiClient.connect(args.server)
    try:
        results = []
        for i in range(args.runs):
            running, shown = await one_run(api, args.vm)
            results.append((running, shown))
            print(f"run {i + 1}: start->Running {running:.2f}s, start->console marker {shown:.2f}s", flush=True)
        print(f"median of {args.runs}: start->Running {statistics.median(r for r, _ in results):.2f}s, "
              f"start->console marker {statistics.median(s for _, s in results):.2f}s")
    finally:
        await api.close()


if __name__ == "__main__":
    asyncio.run(main())
