"""``python -m scheduler``: the api service plus the scheduler controllers, one process.

Run several: each answers the API and the node API (queue groups), and the one holding the
controllers' lease (scheduler.leader) runs the VM controller, the binder and node lifecycle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal

from proto import subjects
from proto.api import VERSION
from proto.state import NODE_LEASE_RENEW_S, Lease
from scheduler.api import Api
from scheduler.clusterconfig import ClusterConfigWatch
from scheduler.controllers import Scheduler
from scheduler.endpointsync import EndpointsController
from scheduler.leader import Elector
from scheduler.lease import Timing
from scheduler.metrics import SchedulerMetrics
from scheduler.nodeapi import NodeApi
from scheduler.nodelife import MIN_SILENCE_S, Thresholds
from scheduler.nodewatch import NodeWatch
from scheduler.snapshotdeadlines import SnapshotDeadlines
from servicekit import collector, logs, nodeclient
from servicekit.cancelling import cancel_and_wait
from servicekit.endpoints import serve
from servicekit.metricsserver import metrics_address, serve_metrics, stop_serving
from servicekit.store import Store

# A thousand nodes report a burst of binds at once. With the API's 512 waiting, most reports were
# refused busy and asked again (26,356 refusals for 10,000 reports, bench/hollow_nodes.py): each
# refusal a round trip for nothing. A report may wait for its turn as long as its node waits for the
# answer (half of it: the work must be done in time too); one that waited longer is refused then.
NODE_API_WAITING = 4096


async def run(url: str, metrics_address: str | None, creds: str | None, node_lost_after: float,
              lease_duration: float) -> None:
    log = logs.configure("scheduler")
    collector.pace_for_caches()
    store = await Store.connect(url, "virtbus-scheduler", creds=creds, inbox=subjects.inbox_prefix("control"))
    nodes = NodeWatch(store, thresholds=Thresholds.lost_after_s(node_lost_after))
    config = ClusterConfigWatch(store)  # the KubeVirt CR's settings, for the API and the controllers alike
    api = Api(store, readiness=nodes.readiness, config=config)
    service = await serve(store.nc, name="virtbus-api", version=VERSION, queue=subjects.API_QUEUE,
                          description="virtbus api: VMs, instances, nodes, images", endpoints=api.endpoints())
    leader: list[Scheduler] = []  # made below: it releases addresses through the node API
    nodeapi = NodeApi(store, nodes=lambda: nodes.nodes.values() if nodes.primed else None,
                      cached_vmi=lambda name: leader[0].cached_vmi(name) if leader else None)
    node_service = await serve(store.nc, name="virtbus-nodeapi", version=VERSION, queue=subjects.NODEAPI_QUEUE,
                               description="what nodes report: registration, VMI status, addresses",
                               endpoints=nodeapi.endpoints(), waiting=NODE_API_WAITING,
                               max_wait=nodeclient.TIMEOUT_S / 2)
    metrics = SchedulerMetrics()
    # in the background: a held port delays the scrape, never the binds
    serving = asyncio.create_task(serve_metrics(metrics_address, metrics.registry, log)) if metrics_address else None
    scheduler = Scheduler(store, metrics=metrics, nodes=nodes, release=nodeapi.release_secondary, config=config)
    leader.append(scheduler)

    endpoints = EndpointsController(store, vmi_changes=scheduler.vmi_changes, vmis=lambda: scheduler.vmis.values())
    led: list[asyncio.Task[None]] = []

    async def lead() -> None:
        await scheduler.start()
        led.append(asyncio.create_task(endpoints.run()))
        led.append(asyncio.create_task(SnapshotDeadlines(store).run()))
        metrics.leader.set(1)

    async def lose() -> None:
        metrics.leader.set(0)
        await cancel_and_wait(led)
        led.clear()
        await scheduler.stop()

    me = f"scheduler-{os.getpid()}-{secrets.token_hex(3)}"
    await store.make_control_buckets()
    elector = Elector(await store.control_bucket(subjects.BUCKET_LEADER, Lease), subjects.LEASE_CONTROLLERS, me,
                      on_lead=lead, on_lose=lose,
                      timing=Timing(duration=lease_duration, renew_every=lease_duration / 3,
                                    renew_deadline=lease_duration * 2 / 3, poll=min(0.25, lease_duration / 12)))
    tasks = [asyncio.create_task(nodes.run()), asyncio.create_task(elector.run()), asyncio.create_task(config.run())]
    log.info("scheduler started", nats=url, holder=me)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("scheduler stopping")
    # cancel_and_wait, not a cancel and an await: a cancellation that lands as a NATS reply does is
    # lost on 3.11 (servicekit.cancelling), and the election went on renewing: a SIGTERM then hung
    # the scheduler until it was killed (9 of 12 runs of bench/binder.py, each stopping two schedulers)
    await cancel_and_wait(tasks[1:2])
    await elector.resign()  # the other scheduler takes over at once, not a lease later
    await cancel_and_wait((tasks[0], tasks[2]))
    await stop_serving(serving)
    await service.stop()
    await node_service.stop()
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scheduler")
    parser.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--metrics-address", default=None, type=metrics_address, help="HOST:PORT to serve /metrics on")
    parser.add_argument("--creds", default=os.environ.get("NATS_CREDS"),
                        help="the control plane's nkey seed file (env NATS_CREDS)")
    parser.add_argument("--node-lost-after", type=float, default=Thresholds.lost_after,
                        help="seconds without a heartbeat (on this process's clock) after which a node's VMIs "
                             f"are Unknown, at least {MIN_SILENCE_S:.0f} (three of a node's lease renewals); it "
                             f"is NotReady after at most {Thresholds.ready_within:.0f}")
    parser.add_argument("--lease-duration", type=float, default=Timing.duration,
                        help="seconds the controllers' lease lasts unrenewed before another scheduler takes over")
    args = parser.parse_args()
    if args.node_lost_after <= 0 or args.lease_duration <= 0:
        parser.error("--node-lost-after and --lease-duration must be positive")
    if args.node_lost_after < MIN_SILENCE_S:
        parser.error(f"--node-lost-after must be at least {MIN_SILENCE_S:.0f} s: nodes renew their lease every "
                     f"{NODE_LEASE_RENEW_S:.0f} s, and one renewal late must not make a healthy node's VMIs Unknown")
    asyncio.run(run(args.server, args.metrics_address, args.creds, args.node_lost_after, args.lease_duration))


if __name__ == "__main__":
    main()
