"""Every subject, bucket and stream name virtbus uses, and the validation of the tokens in them.

Nothing outside this module builds a subject: a name that is not a valid token could otherwise
widen a subscription (``*``, ``>``) or split a subject (``.``).
"""

from __future__ import annotations

import re

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
OBJECT_STORE_IMAGES = "images"

STREAM_CONSOLE = "VIRTBUS_CONSOLE"
CONSOLE_PREFIX = "virtbus.console"

# DNS-1123 label, as Kubernetes requires of object names; also a safe NATS token, path part,
# interface-name fragment and shell word.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class InvalidToken(ValueError):
    """A name that cannot be used in a subject."""


def is_dns1123_label(name: str) -> bool:
    return bool(_DNS1123_LABEL.fullmatch(name))


def token(name: str) -> str:
    if not is_dns1123_label(name):
        raise InvalidToken(f"{name!r} is not a DNS-1123 label")
    return name


def api(kind: str, verb: str) -> str:
    return f"{API_PREFIX}.{token(kind)}.{token(verb)}"


def console_out(vmi: str) -> str:
    """Serial console output of a VMI, in order; kept in STREAM_CONSOLE."""
    return f"{CONSOLE_PREFIX}.{token(vmi)}.out"


def console_in(vmi: str) -> str:
    """Keystrokes for a VMI's serial console."""
    return f"{CONSOLE_PREFIX}.{token(vmi)}.in"


def console_keyboard(vmi: str) -> str:
    """Request/reply to the VMI's launcher: claim, renew or release the console's keyboard."""
    return f"{CONSOLE_PREFIX}.{token(vmi)}.keyboard"


CONSOLE_OUT_ALL = f"{CONSOLE_PREFIX}.*.out"
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
    """libvirt statistics of a VMI, published by its launcher every few seconds."""
    return f"{STATS_PREFIX}.{token(node)}.{token(vmi)}"


def stats_of_node(node: str) -> str:
    return f"{STATS_PREFIX}.{token(node)}.*"
