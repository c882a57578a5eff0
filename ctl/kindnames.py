"""kubectl's spellings (plural, short, the API's own) of the kinds whose commands live in modules of their
own, each to the name its module uses: plain tables, so that reading what a command line names imports
none of the modules that serve those kinds (a command's start-up, ctl.commands)."""

from __future__ import annotations

WORKLOADS = {"vmirs": "vmirs", "vmirss": "vmirs", "virtualmachineinstancereplicaset": "vmirs",
             "virtualmachineinstancereplicasets": "vmirs",
             "vmpool": "vmpool", "vmpools": "vmpool", "pool": "vmpool", "pools": "vmpool",
             "virtualmachinepool": "vmpool", "virtualmachinepools": "vmpool"}
SERVICES = {"service": "service", "services": "service", "svc": "service",
            "endpoints": "endpoints", "ep": "endpoints", "endpoint": "endpoints"}
ROUTES = {"route": "route", "routes": "route", "ingress": "ingress", "ingresses": "ingress", "ing": "ingress"}
NETWORKS = dict.fromkeys(("net-attach-def", "net-attach-defs", "network-attachment-definition",
                          "network-attachment-definitions", "networkattachmentdefinition",
                          "networkattachmentdefinitions", "network", "networks"), "network")
