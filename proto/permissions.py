"""Who may publish and subscribe to what: virtbus's roles as NATS permissions (pure).

NATS enforces these, not our code's manners. The roles follow Kubernetes' RBAC and NodeRestriction:
- admin: everything (the operator; the lab's default CLI user);
- viewer: the API's read verbs, reading state, events, stats and console output, screenshots and
  view-only VNC sessions (their input taken out by the launcher); nothing that changes;
- control: the api service, controllers and binder: the state buckets, streams, the API and the node API;
- node N: its handler and its launchers: its own node record and pod-IP table, its own node-API
  subjects (where the control plane checks what it reports), its own stats, console and VNC subjects.
Images (the object store's content) are written only by admin; snapshot content by nodes too (below).
"""

from __future__ import annotations

import enum

import msgspec

from proto import subjects


class Role(enum.StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"
    CONTROL = "control"
    NODE = "node"


class Rules(msgspec.Struct, frozen=True, omit_defaults=True):
    allow: list[str] = []
    deny: list[str] = []


class Responses(msgspec.Struct, frozen=True):
    """How many replies a user may publish to one request's reply subject, and for how long."""

    max: int
    expires: str


class Permissions(msgspec.Struct, frozen=True, omit_defaults=True):
    """nats-server's ``permissions`` block of one user."""

    publish: Rules
    subscribe: Rules
    allow_responses: bool | Responses = False


# Where the control plane answers: every requester's inbox (people's tools keep NATS's default
# ``_INBOX``; services have their own, subjects.inbox_prefix), granted outright rather than by
# ``allow_responses``. nats-server 2.9 remembers every reply subject delivered to a user with
# response permissions, JetStream's $JS.ACK subjects of every watched KV update included, for
# ``expires``, and past 4,096 of them sweeps all of them at each delivery: the control plane's
# watches of 1,000 nodes' leases alone (500 a second) kept nats-server's CPU at 100 % from ~250
# nodes on. The control plane is trusted with all state already; an inbox is no more.
CONTROL_REPLIES = ["_INBOX.>", f"{subjects.inbox_prefix('control')}.>", f"{subjects.inbox_prefix('node')}.>"]


READ_VERBS = ("get", "list")

# Reading JetStream state: stream info, ephemeral consumers (KV watches, object gets, stream reads),
# direct and message gets, and the flow-control replies ordered consumers must send.
JS_READ = [
    "$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
    "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.INFO.>",
    "$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.*", "$JS.FC.>",
]
SERVICE_DISCOVERY = ["$SRV.>"]


def _node_js_read(node: str) -> list[str]:
    """JS_READ for a node, less other nodes' VMI copies (BUCKET_NODE_VMIS): the node may watch only
    its own keys. A watch's consumer carries its filter in the create subject (servicekit.kvwatch),
    so the server checks it; the filterless create forms and the gets of that bucket are denied."""
    scoped = f"KV_{subjects.BUCKET_NODE_VMIS}"
    return ["$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
            "$JS.API.CONSUMER.CREATE.*", "$JS.API.CONSUMER.CREATE.*.*",
            *(f"$JS.API.CONSUMER.CREATE.KV_{b}.*.{kv_key(b, '>')}"
              for b in subjects.STATE_BUCKETS if b != subjects.BUCKET_NODE_VMIS),
            f"$JS.API.CONSUMER.CREATE.{scoped}.*.{kv_key(subjects.BUCKET_NODE_VMIS, subjects.node_vmis_of_node(node))}",
            "$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.INFO.>",
            "$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.*", "$JS.FC.>"]


def _node_js_denied() -> list[str]:
    scoped = f"KV_{subjects.BUCKET_NODE_VMIS}"
    return [f"$JS.API.CONSUMER.CREATE.{scoped}", f"$JS.API.CONSUMER.CREATE.{scoped}.*",
            f"$JS.API.DIRECT.GET.{scoped}", f"$JS.API.DIRECT.GET.{scoped}.>", f"$JS.API.STREAM.MSG.GET.{scoped}"]


def kv_key(bucket: str, key: str) -> str:
    """The subject a KV write of ``bucket``/``key`` is published on."""
    return f"$KV.{bucket}.{key}"


def permissions(role: Role, node: str | None = None) -> Permissions:
    match role:
        case Role.ADMIN:
            return Permissions(publish=Rules(allow=[">"]), subscribe=Rules(allow=[">"]), allow_responses=True)
        case Role.VIEWER:
            return Permissions(
                publish=Rules(allow=[*(f"{subjects.API_PREFIX}.*.{verb}" for verb in READ_VERBS),
                                     "virtbus.node.*.info", *subjects.VNC_VIEWER_PUBLISH, *JS_READ,
                                     *SERVICE_DISCOVERY]),
                subscribe=Rules(allow=["_INBOX.>", subjects.CONSOLE_OUT_ALL, f"{subjects.STATS_PREFIX}.>",
                                       subjects.EVENTS_ALL, *subjects.VNC_VIEWER_SUBSCRIBE]))
        case Role.CONTROL:
            return Permissions(
                publish=Rules(allow=["$JS.API.>", "$JS.FC.>", "$JS.ACK.>", "$KV.>",
                                     # deleting an image (an admin's API verb) marks its metadata and
                                     # purges; its content (chunks) only admin writes
                                     f"$O.{subjects.OBJECT_STORE_IMAGES}.M.>",
                                     # deleting a snapshot (the API's) marks its object deleted likewise
                                     f"$O.{subjects.OBJECT_STORE_SNAPSHOTS}.M.>",
                                     subjects.EVENTS_ALL, *SERVICE_DISCOVERY, *CONTROL_REPLIES]),
                subscribe=Rules(allow=[f"{subjects.inbox_prefix('control')}.>", subjects.API_ALL,
                                       subjects.NODEAPI_ALL, *SERVICE_DISCOVERY]))
        case Role.NODE:
            if node is None:
                raise ValueError("a node role needs the node's name")
            n = subjects.token(node)
            return Permissions(
                publish=Rules(allow=[
                    kv_key(subjects.BUCKET_NODES, n),
                    kv_key(subjects.BUCKET_NODE_LEASES, n),
                    kv_key(subjects.BUCKET_IPAM, subjects.ipam_pod_ips(n)),
                    kv_key(subjects.BUCKET_VMI_LEASES, subjects.vmi_leases_of_node(n)),
                    f"{subjects.NODEAPI_PREFIX}.{n}.*",
                    # Snapshot content: a node uploads the snapshots of the volumes it holds. NATS cannot
                    # scope an object store by name (chunk subjects are random, metadata subjects a whole
                    # encoded name), so this lets a node add or overwrite any object in that store, never
                    # purge or delete one ($JS.API.STREAM.PURGE is not granted) nor touch its record: the
                    # record's digest is written by the control plane from the taker's report, and a
                    # restore refuses an object whose digest is not the record's.
                    f"$O.{subjects.OBJECT_STORE_SNAPSHOTS}.C.>", f"$O.{subjects.OBJECT_STORE_SNAPSHOTS}.M.>",
                    f"{subjects.STATS_PREFIX}.{n}.*",
                    subjects.console_of_node(n, "out"),
                    subjects.vnc_of_node(n),  # its VMIs' screens: session frames down, replies
                    *_node_js_read(n), *SERVICE_DISCOVERY],
                    deny=_node_js_denied()),
                subscribe=Rules(allow=[
                    f"{subjects.inbox_prefix('node', n)}.>", subjects.node_info(n),
                    f"{subjects.STATS_PREFIX}.{n}.*",
                    subjects.console_of_node(n, "in"), subjects.console_of_node(n, "keyboard"),
                    subjects.vnc_of_node(n),
                    *SERVICE_DISCOVERY]),
                allow_responses=True)
