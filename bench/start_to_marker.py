"""Time from ``virtbus start`` to Running and to the guest's console marker, median of N runs, and
where the time to Running went (from the VMI's own record: created, bound, its launcher's process
start and readiness, the domain running as the launcher said it; then until the API showed Running).
The marker is seen as ``virtbus console NAME`` shows it: live, by a consumer of the console's new
output opened before the start (polling the whole log every 50 ms, as this bench did until stop 24,
cost the guest CPU as it booted and read ~1.7 s late on this box).

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

import entry  # noqa: E402 - bench/entry.py, beside this script
from nats.aio.msg import Msg  # noqa: E402
from nats.js.api import DeliverPolicy  # noqa: E402

from ctl.client import ApiClient, default_url  # noqa: E402
from ctl.progress import vm_state  # noqa: E402
from proto import subjects  # noqa: E402
from proto.api import Ack, NameRequest, VMIReply  # noqa: E402
from proto.state import VMI, Phase  # noqa: E402

MARKER = b"VIRTBUS-GUEST-READY"
STAGES = ("start->accepted", "accepted->bound", "bound->launcher process", "launcher process->ready",
          "launcher ready->domain running", "domain running->seen Running")


def stages(asked: float, vmi: VMI, seen: float) -> dict[str, float] | None:
    """Seconds in each stage of one start (wall clock: the bench and the lab share this machine)."""
    bound = next((c.last_transition_time for c in vmi.conditions if c.type == "PodScheduled" and c.status == "True"),
                 None)
    marks = [asked, vmi.created_at, bound, vmi.launcher_started_at, vmi.launcher_ready_at, vmi.started_at, seen]
    if any(m is None for m in marks):
        return None
    times = [float(m) for m in marks if m is not None]
    return {name: times[i + 1] - times[i] for i, name in enumerate(STAGES)}


async def until(check: object, limit: float = 300) -> None:
    start = time.monotonic()
    while not await check():  # type: ignore[operator]
        if time.monotonic() - start > limit:
            raise TimeoutError
        await asyncio.sleep(0.05)


async def one_run(api: ApiClient, name: str) -> tuple[float, float, dict[str, float] | None]:
    # Stopped as `virtbus stop --wait` sees it: the guest down and its instance cleaned up by its node
    # (launcher ended, pod removed), which would otherwise share the CPU with this start
    if not await _stopped(api, name):
        await api.call("vm", "stop", NameRequest(name=name), Ack)
        await until(lambda: _stopped(api, name))
    # Running is seen by a watch of the VMIs, as it is written: polling every 50 ms (as before) saw
    # it 25 ms late on average, a tenth of what is measured now.
    ran = asyncio.Event()

    def on_change(key: str, vmi: VMI | None) -> None:
        if key == name and vmi is not None and vmi.phase is Phase.RUNNING:
            ran.set()

    # the VM is stopped and its launcher gone: whatever the console says from now on is this run's
    printed = bytearray()
    shown_at = asyncio.get_running_loop().create_future()

    async def show(msg: Msg) -> None:
        printed.extend(msg.data)
        if MARKER in printed and not shown_at.done():
            shown_at.set_result(time.monotonic())

    console = await api.nc.jetstream().subscribe(subjects.console_out_any_node(name), ordered_consumer=True,
                                                 deliver_policy=DeliverPolicy.NEW, cb=show)
    watch = asyncio.create_task(api.watch_vmis(on_change))
    try:
        t0, asked = time.monotonic(), time.time()
        await api.call("vm", "start", NameRequest(name=name), Ack)
        await asyncio.wait_for(ran.wait(), 300)
        running = time.monotonic() - t0
        shown = await asyncio.wait_for(shown_at, 300) - t0
    finally:
        watch.cancel()
        await console.unsubscribe()
    split = stages(asked, (await api.call("vmi", "get", NameRequest(name=name), VMIReply)).item, asked + running)
    await api.call("vm", "stop", NameRequest(name=name), Ack)
    await until(lambda: _stopped(api, name))
    return running, shown, split


async def _stopped(api: ApiClient, name: str) -> bool:
    return (await vm_state(api, name))[0] == "Stopped"


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--vm", default="testvm")
    p.add_argument("--server", default=default_url())
    args = p.parse_args()
    api = await ApiClient.connect(args.server)
    try:
        results = []
        splits = []
        for i in range(args.runs):
            running, shown, split = await one_run(api, args.vm)
            results.append((running, shown))
            if split is not None:
                splits.append(split)
            print(f"run {i + 1}: start->Running {running:.2f}s, start->console marker {shown:.2f}s", flush=True)
        print(f"median of {args.runs}: start->Running {statistics.median(r for r, _ in results):.2f}s, "
              f"start->console marker {statistics.median(s for _, s in results):.2f}s")
        if splits:
            print(f"start->Running by stage, median of {len(splits)}: " + ", ".join(
                f"{name} {statistics.median(s[name] for s in splits):.3f}s" for name in STAGES))
    finally:
        await api.close()


if __name__ == "__main__":
    entry.run(lambda: asyncio.run(main()), "start_to_marker.py")
