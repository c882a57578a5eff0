"""``python -m scheduler``: the api service plus the scheduler controllers, one process."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from proto import subjects
from scheduler.api import VERSION, Api
from scheduler.controllers import Scheduler
from scheduler.metrics import SchedulerMetrics
from scheduler.nodeapi import NodeApi
from servicekit import logs
from servicekit.endpoints import serve
from servicekit.store import Store


async def run(url: str, metrics_address: str | None, creds: str | None) -> None:
    log = logs.configure("scheduler")
    store = await Store.connect(url, "virtbus-scheduler", creds=creds, inbox=subjects.inbox_prefix("control"))
    api = Api(store)
    service = await serve(store.nc, name="virtbus-api", version=VERSION, queue=subjects.API_QUEUE,
                          description="virtbus api: VMs, instances, nodes, images", endpoints=api.endpoints())
    nodeapi = NodeApi(store)
    node_service = await serve(store.nc, name="virtbus-nodeapi", version=VERSION, queue=subjects.NODEAPI_QUEUE,
                               description="what nodes report: registration, VMI status, addresses",
                               endpoints=nodeapi.endpoints())
    metrics = SchedulerMetrics()
    if metrics_address:
        metrics.serve(metrics_address)
        log.info("metrics", url=f"http://{metrics_address}/metrics")
    scheduler = Scheduler(store, metrics=metrics, release=nodeapi.release_secondary)
    await scheduler.start()
    log.info("scheduler started", nats=url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("scheduler stopping")
    await scheduler.stop()
    await service.stop()
    await node_service.stop()
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scheduler")
    parser.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--metrics-address", default=None, help="HOST:PORT to serve /metrics on")
    parser.add_argument("--creds", default=os.environ.get("NATS_CREDS"),
                        help="the control plane's nkey seed file (env NATS_CREDS)")
    args = parser.parse_args()
    asyncio.run(run(args.server, args.metrics_address, args.creds))


if __name__ == "__main__":
    main()
