"""``python -m launcher.warmcaps --node-dir DIR [--netns NAME]``: started once by a node's handler
as it starts, so that no VM's launch pays for libvirt's probe of QEMU (~1 s of CPU: QEMU started
twice, every property and CPU model asked for) nor for the qom-get storm of a cache not yet
trimmed (launcher.capscache). It does what the first launch on the node would have done: a libvirtd
of its own, with the node's capabilities cache (launcher.namespaces), asked for the capabilities of
every emulator (what a launch's later calls ask for), then stopped; the cache trimmed. A node whose
cache is empty starts from the host's copy, which libvirt uses if it still matches (capscache.seed),
and the host's copy is kept up to date (capscache.keep).

Best effort: whatever fails here, the first launch probes as it did before.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

import structlog

from launcher import capscache, namespaces, priority
from launcher.libvirtd import PrivateLibvirtd
from servicekit import logs


async def _warm(workdir: Path, netns: str | None, seeded: dict[str, int]) -> None:
    """seeded: the files copied from the host's cache (capscache.seed)."""
    libvirtd = PrivateLibvirtd(huge_pages=False)
    try:
        await libvirtd.start(netns, workdir)
        await asyncio.to_thread(libvirtd.conn.getCapabilities)
        await asyncio.to_thread(libvirtd.conn.close)
        libvirtd.conn = None  # closed by us: no close callback to take back (stop() would try)
    finally:
        await libvirtd.settle()
        await asyncio.to_thread(libvirtd.stop)
    # before trim rewrites them: each seeded file loaded as copied, or probed afresh
    reused = capscache.reused(capscache.CACHE_DIR, seeded)
    trimmed = capscache.trim()
    kept = capscache.keep(capscache.CACHE_DIR, capscache.host_cache_dir())
    structlog.get_logger().info("QEMU capabilities cached", trimmed=len(trimmed), from_host=len(reused),
                                saved_for_host=len(kept))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m launcher.warmcaps")
    p.add_argument("--node-dir", required=True, help="the node's state directory (its libvirt-cache)")
    p.add_argument("--netns", default=None, help="the node's network namespace, for libvirtd")
    args = p.parse_args(argv)
    node_dir = Path(args.node_dir)
    workdir = node_dir / "warmcaps"
    priority.lower_launcher()  # below the control plane, as a launch is
    logs.configure("warmcaps")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        seeded = capscache.seed(node_dir / capscache.NODE_CACHE_DIR, capscache.host_cache_dir())
        # before any thread: a mount namespace of its own, with the node's cache as a launcher has it
        namespaces.enter_private_mounts(workdir / "libvirt-etc", node_dir / "libvirt-cache")
        asyncio.run(_warm(workdir, args.netns, seeded))
    except Exception as exc:  # noqa: BLE001 - best effort: the first launch probes instead
        print(f"warmcaps: not warmed: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
