"""Every subject, bucket and stream name virtbus uses, and the validation of the tokens in them.

Nothing outside this module builds a subject: a name that is not a valid token could otherwise
widen a subscription (``*``, ``>``) or split a subject (``.``).
"""

from __future__ import annotations

import functools
import re
import zlib

API_PREFIX = "virtbus.api"
API_ALL = "virtbus.api.>"
API_QUEUE = "virtbus-api"

BUCKET_VMS = "vms"
BUCKET_VMIS = "vmis"
BUCKET_NODES = "nodes"
BUCKET_NETWORKS = "networks"
BUCKET_IPAM = "ipam"
BUCKET_EXPOSURES = "exposures"
BUCKET_FLOATING_IPS = "floatingips"
BUCKET_VOLUMES = "volumes"
BUCKET_SERVICES = "services"  # Kubernetes Services (proto.services), by name
BUCKET_ENDPOINTS = "endpoints"  # their Endpoints, by the Service's name
BUCKET_ROUTES = "routes"  # OpenShift Routes (proto.routes), by name
BUCKET_INGRESSES = "ingresses"  # Kubernetes Ingresses (proto.routes), by name
BUCKET_INSTANCETYPES = "instancetypes"  # user-defined ones (proto.instancetypes); the control plane's only
BUCKET_REPLICASETS = "vmirs"  # VirtualMachineInstanceReplicaSets (proto.workloads); the control plane's only
BUCKET_PREFERENCES = "preferences"  # user-defined ones (proto.preferences); the control plane's only
BUCKET_POOLS = "vmpools"  # VirtualMachinePools (proto.workloads); the control plane's only
BUCKET_CLONES = "vmclones"  # VirtualMachineClones (proto.clones); the control plane's only
BUCKET_PRIORITY_CLASSES = "priorityclasses"  # PriorityClasses (proto.priorities); the control plane's only
BUCKET_MIGRATIONS = "migrations"  # VirtualMachineInstanceMigrations (proto.migrations); the control plane's only
BUCKET_MIGRATION_POLICIES = "migrationpolicies"  # MigrationPolicies (proto.migrationpolicies); likewise
# The cluster's configuration (proto.clusterconfig, KubeVirt's KubeVirt CR), one key; the control plane's only
BUCKET_CONFIG = "config"
CONFIG_KUBEVIRT = "kubevirt"
# The control plane's leases: one key per thing only one scheduler may do at a time.
BUCKET_LEADER = "leader"
LEASE_CONTROLLERS = "controllers"  # the VM controller, the binder and node lifecycle
# every bucket only the control plane uses (a node's connect neither needs nor waits for them)
CONTROL_BUCKETS = (BUCKET_LEADER, BUCKET_CONFIG, BUCKET_INSTANCETYPES, BUCKET_REPLICASETS, BUCKET_PREFERENCES,
                   BUCKET_POOLS, BUCKET_CLONES, BUCKET_PRIORITY_CLASSES, BUCKET_MIGRATIONS, BUCKET_MIGRATION_POLICIES)
# The launchers' leases of high-availability VMIs (proto.fencing): key <node>.<vmi>, so NATS can let
# a node write only its own.
BUCKET_VMI_LEASES = "vmileases"
OBJECT_STORE_IMAGES = "images"
# Volume snapshots (proto.snapshots): their records, KubeVirt's VirtualMachineSnapshots, and their bytes
# (one object per snapshot, named by its uid).
BUCKET_SNAPSHOTS = "snapshots"
BUCKET_VM_SNAPSHOTS = "vmsnapshots"
OBJECT_STORE_SNAPSHOTS = "volumesnapshots"
# Each node's VMIs, copied from BUCKET_VMIS by the leading scheduler (scheduler.nodevmis) under
# <node>.<vmi>: a handler watches its own node's keys only, and NATS lets it read no other (proto.permissions).
# The copies are split over NODE_VMI_SHARDS buckets by a stable hash of the node's name
# (node_vmis_bucket). A node's watch filters one stream by subject, and nats-server 2.15 finds each next
# match by reading every message written to that stream since the last (filestore's firstMatching, as a
# block holds one subject per VMI): in one bucket each delivery read every other node's copies, a cost
# growing with nodes x copies (34 % of nats-server's CPU binding 10,000 VMIs on 1,000 hollow nodes).
# A shard's watches read only their shard's writes. Four, not more: each bucket is a Raft group on a
# replicated cluster, and 16 made each group's batches so small that R3 bound slower than with one
# (bench/hollow_nodes.py; the README has the figures). Since then a node hears its copies' changes as
# the shard republishes them (NODE_VMIS_REPUBLISHED), and a consumer reads its shard only for the
# current values, when its watch starts.
NODE_VMI_SHARDS = 4
NODE_VMI_BUCKETS = tuple(f"nodevmis-{i:02d}" for i in range(NODE_VMI_SHARDS))
# The one bucket of all copies before the shards: the leader deletes it once it has rebuilt them.
BUCKET_NODE_VMIS_UNSHARDED = "nodevmis"
# Each node's lease, renewed by its handler every few seconds (key: the node): its heartbeat, which only
# the control plane watches; the node's record (BUCKET_NODES) changes only when something in it does.
BUCKET_NODE_LEASES = "nodeleases"
KV_STREAM_PREFIX = "KV_"  # NATS KV's own convention: bucket B is the stream KV_B


def kv_stream(bucket: str) -> str:
    """The JetStream stream that holds a KV bucket: what consumers, stream info and the
    permissions name."""
    return f"{KV_STREAM_PREFIX}{bucket}"


KV_SUBJECT_PREFIX = "$KV."  # NATS KV's own convention too: a write of key K in bucket B is on $KV.B.K


def kv_subject(bucket: str, key: str = "") -> str:
    """The subject a KV write of ``bucket``/``key`` is published on; with no key, the bucket's
    prefix ("$KV.B."), as a KV client is given it."""
    return f"{KV_SUBJECT_PREFIX}{bucket}.{key}"


OBJECT_STREAM_PREFIX = "OBJ_"  # and an object store O is the stream OBJ_O


def object_stream(store: str) -> str:
    """The JetStream stream that holds an object store's chunks and metadata."""
    return f"{OBJECT_STREAM_PREFIX}{store}"


def object_metadata(store: str) -> str:
    """The subjects of an object store's metadata (one per object, its name encoded), where a put or a
    delete publishes the object's info."""
    return f"$O.{store}.M.>"


# The buckets every process opens (servicekit.store), the control plane creating them.
STATE_BUCKETS = (BUCKET_VMS, BUCKET_VMIS, BUCKET_NODES, BUCKET_NETWORKS, BUCKET_IPAM, BUCKET_EXPOSURES,
                 BUCKET_FLOATING_IPS, BUCKET_VMI_LEASES, BUCKET_VOLUMES, BUCKET_SERVICES, BUCKET_ENDPOINTS,
                 BUCKET_SNAPSHOTS, BUCKET_VM_SNAPSHOTS, BUCKET_ROUTES, BUCKET_INGRESSES, BUCKET_NODE_LEASES,
                 *NODE_VMI_BUCKETS)


# Keys of the ipam bucket: a node's pod CIDR claim, a node's pod-IP table, a network's address table.
def ipam_node_cidr(index: int) -> str:
    return f"nodecidr.{index}"


IPAM_NODE_CIDRS = "nodecidr.*"  # every node network's claim, for one filtered read


def ipam_pod_ips(node: str) -> str:
    return f"podips.{token(node)}"


def ipam_network(network: str) -> str:
    return f"net.{token(network)}"

def ipam_service_ip(address: str) -> str:
    """A Service's virtual IP, claimed by create (the address with '-' for '.', a key token)."""
    return "svcip." + address.replace(".", "-")


IPAM_SERVICE_IPS = ipam_service_ip("*")  # every Service's claim, as a watch's key filter


def vmi_lease(node: str, vmi: str) -> str:
    return f"{token(node)}.{token(vmi)}"


def vmi_lease_parts(key: str) -> tuple[str, str]:
    """(node, vmi) of a vmileases key; InvalidToken for anything else."""
    node, dot, vmi = key.partition(".")
    if not dot:
        raise InvalidToken(f"{key!r} is not a <node>.<vmi> lease key")
    return token(node), token(vmi)


def vmi_leases_of_node(node: str) -> str:
    return f"{token(node)}.*"


def node_vmis_bucket(node: str) -> str:
    """The one of NODE_VMI_BUCKETS that holds ``node``'s copies: CRC-32 of the name, the same in every
    process and every release (Python's own str hash is salted per process)."""
    return NODE_VMI_BUCKETS[zlib.crc32(token(node).encode()) % NODE_VMI_SHARDS]


def node_vmi(node: str, vmi: str) -> str:
    """A key of node_vmis_bucket(node)."""
    return f"{token(node)}.{token(vmi)}"


def node_vmi_parts(key: str) -> tuple[str, str]:
    """(node, vmi) of a nodevmis key; InvalidToken for anything else."""
    return vmi_lease_parts(key)


def node_vmis_of_node(node: str) -> str:
    """The keys of one node's VMIs in node_vmis_bucket(node), as a watch's filter."""
    return f"{token(node)}.*"


# Each shard's stream republishes what it stores (JetStream's RePublish) under this prefix, the
# bucket's name and the key: virtbus.nodevmis.<bucket>.<node>.<vmi>. A node follows its copies there
# with a plain subscription (servicekit.kvlive), not a consumer the server must feed.
NODE_VMIS_REPUBLISHED = "virtbus.nodevmis"


def node_vmis_republished(bucket: str) -> str:
    """Where ``bucket`` (one of NODE_VMI_BUCKETS) republishes: the prefix a key follows."""
    return f"{NODE_VMIS_REPUBLISHED}.{bucket}"


def node_vmis_republished_of_node(node: str) -> str:
    """The subjects of one node's copies as their shard republishes them: the node's subscription."""
    return f"{node_vmis_republished(node_vmis_bucket(node))}.{node_vmis_of_node(node)}"


# The buckets every node follows whole (its handler's informers: routes, addresses, Services, node
# ports, floating IPs, volumes, the router's). Their streams republish what they store under this
# prefix, the bucket's name and the key (virtbus.kvlive.<bucket>.<key>), where a process follows
# them with a plain subscription (servicekit.kvlive), not a consumer the server keeps for as long as
# the process runs: a thousand nodes held ten or more each.
KV_REPUBLISHED = "virtbus.kvlive"
FOLLOWED_BUCKETS = (BUCKET_NODES, BUCKET_NETWORKS, BUCKET_EXPOSURES, BUCKET_FLOATING_IPS, BUCKET_VOLUMES,
                    BUCKET_SNAPSHOTS, BUCKET_SERVICES, BUCKET_ENDPOINTS, BUCKET_ROUTES, BUCKET_INGRESSES)


def kv_republished(bucket: str) -> str:
    """Where ``bucket`` (one of FOLLOWED_BUCKETS) republishes: the prefix a key follows."""
    return f"{KV_REPUBLISHED}.{bucket}"


def republished_at(bucket: str) -> str | None:
    """Where ``bucket``'s stream republishes what it stores, if it does."""
    if bucket in NODE_VMI_BUCKETS:
        return node_vmis_republished(bucket)
    if bucket in FOLLOWED_BUCKETS:
        return kv_republished(bucket)
    return None


STREAM_CONSOLE = "VIRTBUS_CONSOLE"
CONSOLE_PREFIX = "virtbus.console"

# DNS-1123 label, as Kubernetes requires of object names; also a safe NATS token, path part,
# interface-name fragment and shell word.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class InvalidToken(ValueError):
    """A name that cannot be used in a subject."""


# Every key read or written is checked, ~30 times per VMI bound in a burst (3 % of the scheduler's
# CPU there); names recur, and a cached answer costs a quarter of the match. Bounded: names a client
# makes up only push older ones out.
@functools.lru_cache(maxsize=1 << 16)
def is_dns1123_label(name: str) -> bool:
    return bool(_DNS1123_LABEL.fullmatch(name))


def token(name: str) -> str:
    if not is_dns1123_label(name):
        raise InvalidToken(f"{name!r} is not a DNS-1123 label")
    return name


def api(kind: str, verb: str) -> str:
    return f"{API_PREFIX}.{token(kind)}.{token(verb)}"


# A console's subjects carry the node that runs the VMI: a node's launchers may publish and
# listen only on their own node's (proto.permissions), so no node reads another's keystrokes.
def console_out(node: str, vmi: str) -> str:
    """Serial console output of a VMI run on node, in order; kept in STREAM_CONSOLE."""
    return f"{CONSOLE_PREFIX}.{token(node)}.{token(vmi)}.out"


def console_out_any_node(vmi: str) -> str:
    """A VMI's console output wherever it ran (each run's chunks carry its uid)."""
    return f"{CONSOLE_PREFIX}.*.{token(vmi)}.out"


def console_in(node: str, vmi: str) -> str:
    """Keystrokes for a VMI's serial console."""
    return f"{CONSOLE_PREFIX}.{token(node)}.{token(vmi)}.in"


def console_keyboard(node: str, vmi: str) -> str:
    """Request/reply to the VMI's launcher: claim, renew or release the console's keyboard."""
    return f"{CONSOLE_PREFIX}.{token(node)}.{token(vmi)}.keyboard"


def console_of_node(node: str, what: str) -> str:
    """Every console subject of one node's VMIs of a kind: out, in or keyboard."""
    return f"{CONSOLE_PREFIX}.{token(node)}.*.{token(what)}"


CONSOLE_OUT_ALL = f"{CONSOLE_PREFIX}.*.*.out"

# A VMI's screen (proto.vnc): like the console's, its subjects carry the node running the VMI, so a
# node's launchers serve only their own node's (proto.permissions).
VNC_PREFIX = "virtbus.vnc"


def vnc_open(node: str, vmi: str, view_only: bool = False) -> str:
    """Request/reply to the VMI's launcher: open a VNC tunnel session; ``.view`` opens one whose
    input the launcher takes out (a viewer's), ``.open`` a full one."""
    return f"{VNC_PREFIX}.{token(node)}.{token(vmi)}.{'view' if view_only else 'open'}"


def vnc_screenshot(node: str, vmi: str) -> str:
    """Request/reply to the VMI's launcher: the screen as a PNG."""
    return f"{VNC_PREFIX}.{token(node)}.{token(vmi)}.screenshot"


def vnc_session(node: str, vmi: str, session: str, direction: str, view_only: bool = False) -> str:
    """One direction of a session: ``up`` (client to the VMI's screen) or ``down``; view-only
    sessions apart from full ones, so NATS lets a viewer near its kind only."""
    if direction not in ("up", "down"):
        raise InvalidToken(f"{direction!r} is not up or down")
    kind = "view" if view_only else "full"
    return f"{VNC_PREFIX}.{token(node)}.{token(vmi)}.{kind}.{token(session)}.{direction}"


# what a viewer may use: view-only sessions and screenshots of any VMI
VNC_VIEWER_PUBLISH = [f"{VNC_PREFIX}.*.*.view", f"{VNC_PREFIX}.*.*.screenshot", f"{VNC_PREFIX}.*.*.view.*.up"]
VNC_VIEWER_SUBSCRIBE = [f"{VNC_PREFIX}.*.*.view.*.down"]


def vnc_of_node(node: str) -> str:
    """Every VNC subject of one node's VMIs."""
    return f"{VNC_PREFIX}.{token(node)}.>"

# A VMI's TCP ports (proto.portforward): served by the handler of the node running it.
PORTFORWARD_PREFIX = "virtbus.portforward"


def portforward_open(node: str, vmi: str) -> str:
    """Request/reply to the handler of the VMI's node: open a session to one of its guest's ports."""
    return f"{PORTFORWARD_PREFIX}.{token(node)}.{token(vmi)}.open"


def portforward_opens(node: str) -> str:
    """Every open request of one node's VMIs (what its handler serves)."""
    return f"{PORTFORWARD_PREFIX}.{token(node)}.*.open"


def portforward_session(node: str, vmi: str, session: str, direction: str) -> str:
    """One direction of a session: ``up`` (client to the guest's port) or ``down``."""
    if direction not in ("up", "down"):
        raise InvalidToken(f"{direction!r} is not up or down")
    return f"{PORTFORWARD_PREFIX}.{token(node)}.{token(vmi)}.{token(session)}.{direction}"


def portforward_of_node(node: str) -> str:
    """Every port-forward subject of one node's VMIs."""
    return f"{PORTFORWARD_PREFIX}.{token(node)}.>"


# A migration's token (proto.migrationtoken): asked of the target node's launcher by the source's.
MIGRATION_TOKEN_PREFIX = "virtbus.migration"


def migration_token(node: str, migration_uid: str) -> str:
    """Request/reply to the launcher on ``node`` that is the target of this migration."""
    return f"{MIGRATION_TOKEN_PREFIX}.{token(node)}.{token(migration_uid)}"


def migration_tokens_of_node(node: str) -> str:
    """Every migration-token subject a node's launchers answer."""
    return f"{MIGRATION_TOKEN_PREFIX}.{token(node)}.*"


STATS_PREFIX = "virtbus.stats"
STREAM_EVENTS = "VIRTBUS_EVENTS"
EVENTS_ALL = "virtbus.events.>"


def node_info(node: str) -> str:
    """Request/reply: what a node's handler knows of itself (a micro service endpoint)."""
    return f"virtbus.node.{token(node)}.info"


def event(kind: str, name: str) -> str:
    """Where an event about an object goes; kept in STREAM_EVENTS."""
    return f"virtbus.events.{token(kind.lower())}.{token(name)}"


def stats(node: str, vmi: str) -> str:
    """libvirt statistics of a VMI, published by its launcher when asked (stats_wanted) and every minute."""
    return f"{STATS_PREFIX}.{token(node)}.{token(vmi)}"


def stats_wanted(node: str) -> str:
    """Asks every launcher of the node for a fresh sample now (its handler, when /metrics is scraped)."""
    return f"{STATS_PREFIX}.{token(node)}"


def stats_of_node(node: str) -> str:
    return f"{STATS_PREFIX}.{token(node)}.*"


# --- node -> control plane requests ----------------------------------------------------------------
# A node's handler and launchers never write desired state or other nodes' records: what they report
# about the VMIs bound to them goes as a request on virtbus.nodeapi.<node>.<verb>, which NATS lets
# only that node publish (proto.permissions), and the control plane checks against the binding
# (Kubernetes' NodeRestriction).
NODEAPI_PREFIX = "virtbus.nodeapi"
NODEAPI_ALL = f"{NODEAPI_PREFIX}.*.*"
NODEAPI_QUEUE = "virtbus-nodeapi"


def nodeapi(node: str, verb: str) -> str:
    return f"{NODEAPI_PREFIX}.{token(node)}.{token(verb)}"


def nodeapi_node(subject: str) -> str:
    """The node a node-API request came from: its subject's token, which only that node may publish."""
    parts = subject.split(".")
    if len(parts) != 4 or ".".join(parts[:2]) != NODEAPI_PREFIX:
        raise InvalidToken(f"{subject!r} is not a node API subject")
    return token(parts[2])


def inbox_prefix(role: str, node: str | None = None) -> str:
    """Where a service's replies come: a prefix of its own, so no other client may read them
    (people's tools keep NATS's default ``_INBOX``). A node's is a token under its role's
    (``_INBOX_node.<node>``), so ``inboxes(role)`` covers every node's."""
    return f"_INBOX_{token(role)}" + (f".{token(node)}" if node is not None else "")


def inboxes(role: str | None = None) -> str:
    """Every reply subject of a role's processes (None: people's tools, NATS's default ``_INBOX``)."""
    return f"_INBOX_{token(role)}.>" if role is not None else "_INBOX.>"
