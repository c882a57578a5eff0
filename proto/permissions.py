"""Who may publish and subscribe to what: virtbus's roles as NATS permissions (pure).

NATS enforces these, not our code's manners. The roles follow Kubernetes' RBAC and NodeRestriction:
- admin: everything (the operator; the lab's default CLI user);
- viewer: the API's read verbs, reading state, events, stats and console output, screenshots and
  view-only VNC sessions (their input taken out by the launcher); nothing that changes;
- control: the api service, controllers and binder: the state buckets, streams, the API and the node API,
  and the cluster's configuration (``config/kubevirt``, the KubeVirt CR: only the control plane and
  admin write it; viewers and nodes may read it);
- node N: its handler and its launchers: its own node record and pod-IP table, its own node-API
  subjects (where the control plane checks what it reports), its own stats, console, VNC and
  port-forward subjects (a viewer opens no port-forward: a guest's port takes input).
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
    """nats-server's ``allow_responses`` block: one answer to each request delivered, within ``expires``."""

    max: int = 1
    expires: str = "2m"  # nats-server's own default


# A node answers what it is asked at once (node info, $SRV pings): its notes of reply subjects expire
# after this, not after nats-server's 2 minutes. Every message its watches get has a reply subject (the
# ack's), noted and never answered, and past 4,096 notes the server scans them all at each delivery:
# 1,000 hollow nodes, each hearing every node's record as they register, made that 12-14 % of
# nats-server's CPU binding 10,000 VMIs (pprof of bench/hollow_nodes.py), still 4 % with 30 s.
NODE_RESPONSES = Responses(max=1, expires="10s")


class Permissions(msgspec.Struct, frozen=True, omit_defaults=True):
    """nats-server's ``permissions`` block of one user."""

    publish: Rules
    subscribe: Rules
    allow_responses: bool | Responses = False


# Who sends the control plane requests (the API, the node API, $SRV discovery): people's tools, nodes
# and the control plane itself. It may publish to their inboxes rather than hold ``allow_responses``:
# nats-server notes every reply subject delivered to a client with response permissions, and every
# message a KV watch delivers has one (its ack subject), never answered; past 4,096 notes the server
# scans them all for each delivery (pruneReplyPerms). The control plane's watches of every VMI and
# node made that 94 % of nats-server's CPU in a 10,000-VMI burst (py-spy and pprof, bench/binder.py).
CONTROL_REPLIES = [subjects.inboxes(), subjects.inboxes("control"), subjects.inboxes("node")]


READ_VERBS = ("get", "list")

# Reading JetStream state: stream info, ephemeral consumers (KV watches, object gets, stream reads),
# direct and message gets, and the flow-control replies ordered consumers must send.
JS_READ = [
    "$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
    "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.INFO.>",
    "$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.*", "$JS.FC.>",
]
SERVICE_DISCOVERY = ["$SRV.>"]
# The writes of the buckets processes follow whole, as their streams republish them (subjects.FOLLOWED_BUCKETS)
FOLLOWED = [f"{subjects.kv_republished(b)}.>" for b in subjects.FOLLOWED_BUCKETS]


def _node_js_read(node: str) -> list[str]:
    """JS_READ for a node, less other nodes' VMI copies (subjects.NODE_VMI_BUCKETS): the node may watch
    only its own keys, in its own shard. A watch's consumer carries its filter in the create subject
    (servicekit.kvwatch), so the server checks it; the filterless create forms and the gets of those
    buckets are denied."""
    shard = subjects.node_vmis_bucket(node)
    own = subjects.kv_subject(shard, subjects.node_vmis_of_node(node))
    return ["$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
            "$JS.API.CONSUMER.CREATE.*", "$JS.API.CONSUMER.CREATE.*.*",
            *(f"$JS.API.CONSUMER.CREATE.{subjects.kv_stream(b)}.*.{subjects.kv_subject(b, '>')}"
              for b in subjects.STATE_BUCKETS if b not in subjects.NODE_VMI_BUCKETS),
            f"$JS.API.CONSUMER.CREATE.{subjects.kv_stream(shard)}.*.{own}",
            "$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.INFO.>",
            "$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.*", "$JS.FC.>"]


def _node_js_denied() -> list[str]:
    """NATS matches whole tokens only, so each shard (and the unsharded bucket an older control plane
    may have left) is named."""
    denied = []
    for bucket in (*subjects.NODE_VMI_BUCKETS, subjects.BUCKET_NODE_VMIS_UNSHARDED):
        scoped = subjects.kv_stream(bucket)
        denied += [f"$JS.API.CONSUMER.CREATE.{scoped}", f"$JS.API.CONSUMER.CREATE.{scoped}.*",
                   f"$JS.API.DIRECT.GET.{scoped}", f"$JS.API.DIRECT.GET.{scoped}.>",
                   f"$JS.API.STREAM.MSG.GET.{scoped}"]
    return denied


def permissions(role: Role, node: str | None = None) -> Permissions:
    match role:
        case Role.ADMIN:
            # it may publish anything, replies included: response permissions would only cost (above)
            return Permissions(publish=Rules(allow=[">"]), subscribe=Rules(allow=[">"]))
        case Role.VIEWER:
            return Permissions(
                publish=Rules(allow=[*(f"{subjects.API_PREFIX}.*.{verb}" for verb in READ_VERBS),
                                     "virtbus.node.*.info", *subjects.VNC_VIEWER_PUBLISH, *JS_READ,
                                     *SERVICE_DISCOVERY]),
                subscribe=Rules(allow=["_INBOX.>", subjects.CONSOLE_OUT_ALL, f"{subjects.STATS_PREFIX}.>",
                                       subjects.EVENTS_ALL, *subjects.VNC_VIEWER_SUBSCRIBE]))
        case Role.CONTROL:
            return Permissions(
                publish=Rules(allow=["$JS.API.>", "$JS.FC.>", "$JS.ACK.>", f"{subjects.KV_SUBJECT_PREFIX}>",
                                     # deleting an image (an admin's API verb) marks its metadata and
                                     # purges; its content (chunks) only admin writes
                                     subjects.object_metadata(subjects.OBJECT_STORE_IMAGES),
                                     # deleting a snapshot (the API's) marks its object deleted likewise
                                     subjects.object_metadata(subjects.OBJECT_STORE_SNAPSHOTS),
                                     subjects.EVENTS_ALL, *SERVICE_DISCOVERY, *CONTROL_REPLIES]),
                subscribe=Rules(allow=[subjects.inboxes("control"), subjects.API_ALL,
                                       subjects.NODEAPI_ALL, *FOLLOWED, *SERVICE_DISCOVERY]))
        case Role.NODE:
            if node is None:
                raise ValueError("a node role needs the node's name")
            n = subjects.token(node)
            return Permissions(
                publish=Rules(allow=[
                    subjects.kv_subject(subjects.BUCKET_NODES, n),
                    subjects.kv_subject(subjects.BUCKET_NODE_LEASES, n),
                    subjects.kv_subject(subjects.BUCKET_IPAM, subjects.ipam_pod_ips(n)),
                    subjects.kv_subject(subjects.BUCKET_VMI_LEASES, subjects.vmi_leases_of_node(n)),
                    f"{subjects.NODEAPI_PREFIX}.{n}.*",
                    # Snapshot content: a node uploads the snapshots of the volumes it holds. NATS cannot
                    # scope an object store by name (chunk subjects are random, metadata subjects a whole
                    # encoded name), so this lets a node add or overwrite any object in that store, never
                    # purge or delete one ($JS.API.STREAM.PURGE is not granted) nor touch its record: the
                    # record's digest is written by the control plane from the taker's report, and a
                    # restore refuses an object whose digest is not the record's.
                    f"$O.{subjects.OBJECT_STORE_SNAPSHOTS}.C.>", f"$O.{subjects.OBJECT_STORE_SNAPSHOTS}.M.>",
                    f"{subjects.STATS_PREFIX}.{n}.*", subjects.stats_wanted(n),
                    subjects.console_of_node(n, "out"),
                    subjects.vnc_of_node(n),  # its VMIs' screens: session frames down, replies
                    subjects.portforward_of_node(n),  # its VMIs' ports likewise
                    # a migration's source asks its target's launcher for the token (proto.migrationtoken)
                    f"{subjects.MIGRATION_TOKEN_PREFIX}.*.*",
                    *_node_js_read(n), *SERVICE_DISCOVERY],
                    deny=_node_js_denied()),
                subscribe=Rules(allow=[
                    f"{subjects.inbox_prefix('node', n)}.>", subjects.node_info(n),
                    f"{subjects.STATS_PREFIX}.{n}.*", subjects.stats_wanted(n),
                    subjects.console_of_node(n, "in"), subjects.console_of_node(n, "keyboard"),
                    subjects.vnc_of_node(n),
                    subjects.portforward_of_node(n),
                    subjects.migration_tokens_of_node(n),  # answered to the source node's inbox only
                    subjects.node_vmis_republished_of_node(n),  # its own VMI copies' changes only
                    *FOLLOWED,  # what it may read anyway, as those buckets' streams republish it
                    # images' metadata as it is published (the image cache hears deletions so)
                    subjects.object_metadata(subjects.OBJECT_STORE_IMAGES),
                    *SERVICE_DISCOVERY]),
                allow_responses=NODE_RESPONSES)
