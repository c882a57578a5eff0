"""A node's copy of a VMI bound to it (subjects.node_vmis_bucket(node), key <node>.<vmi>): what the node's handler
watches instead of every VMI of the cluster. The leading scheduler writes it from the authoritative
``vmis`` entry (scheduler.nodevmis); the handler still reads that entry before it acts."""

from __future__ import annotations

from proto.state import VMI, State


class NodeVmi(State, frozen=True):
    vmi: VMI
    # the ``vmis`` bucket's revision this copies: a rebuild writes only what moved on since
    revision: int
