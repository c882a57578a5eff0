"""From inside a real guest: the control plane's addresses are fenced off, pods and exposures are not."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import Lab
from tests.e2e.test_networking import http_get, lab_exec, started, write_manifest

pytestmark = pytest.mark.e2e

# Stands in for what a node runs for the control plane: NATS (4222) and /metrics (9100), on every
# address of the node's namespace; each answer names the listener, so a page cannot be mistaken.
LISTENER = r"""
import http.server, sys, threading
class Reply(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"LISTENER-{sys.argv[1]}-{self.server.server_port}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
servers = [http.server.ThreadingHTTPServer(("0.0.0.0", int(p)), Reply) for p in sys.argv[2:]]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
"""
NATS, METRICS = 4222, 9100
TARGET_FIP, OWN_FIP = "192.168.200.30", "192.168.200.31"
OUTSIDE = "10.99.0.254"  # the lab's outside host, also on the node network
# Typed into the guest's shell: `t NAME ADDRESS PORT` prints FENCE-NAME-open if an HTTP answer (`p NAME
# ADDRESS`: a ping reply) came back within 3 s, else FENCE-NAME-shut (the typed text itself never
# contains those words).
PROBE = ("t() { if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $2 $3 2>/dev/null | grep -qE 'LISTENER|hostname'; "
         "then echo FENCE-$1-open; else echo FENCE-$1-shut; fi; }; "
         "p() { if ping -c 1 -W 3 $2 >/dev/null 2>&1; then echo FENCE-$1-open; else echo FENCE-$1-shut; fi; }")


def send(lab: Lab, vm: str, text: str) -> None:
    """Type a line into the guest's shell (the CLI decodes backslash escapes: keep ours literal)."""
    lab.cli("console", vm, "--send", text.replace("\\", "\\\\") + "\\n")


def pod_gateway(lab: Lab, node: str) -> str:
    out = lab_exec(lab, node, "ip", "-4", "-o", "addr", "show", "dev", "vbpods").stdout
    return out.split(" inet ")[1].split("/")[0]


def fence_rules(lab: Lab, node: str) -> str:
    return lab_exec(lab, node, "nft", "list", "table", "inet", "virtbus_fence").stdout


def dropped(lab: Lab, node: str) -> int:
    """Packets the fence's drop rules counted on the node."""
    return sum(int(n) for n in re.findall(r"counter packets (\d+) bytes \d+ drop", fence_rules(lab, node)))


def node_port(lab: Lab, vm: str) -> int:
    return int(lab.cli("expose", "vm", vm, "--port", "80").stdout.split("node port ")[1].split()[0])


def test_guest_reaches_pods_and_exposures_but_not_the_control_plane(lab: Lab) -> None:
    addresses = json.loads((lab.state_dir / "lab.json").read_text())["addresses"]
    node1, node2 = addresses["node1"], addresses["node2"]
    # the fence stands on every node before any guest runs
    for node in ("node1", "node2"):
        rules = fence_rules(lab, node)
        assert "hook input" in rules and "10.99.0.0/24 counter packets" in rules, rules

    lab.cli("apply", "-f", write_manifest(lab, "fenced", "masquerade", node="node1", running=True))
    lab.cli("apply", "-f", write_manifest(lab, "target", "masquerade", node="node2", running=True))
    listeners = [subprocess.Popen(["ip", "netns", "exec", f"{lab.prefix}-{node}", sys.executable, "-c", LISTENER,
                                   node, str(NATS), str(METRICS)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for node in ("node1", "node2", "outside")]
    # a way back to the pods from the outside host, so only the fence can keep a guest from it
    back = ["ip", "-n", f"{lab.prefix}-outside", "route", "replace", "10.244.0.0/16", "via", node1]
    subprocess.run(back, check=True)
    try:
        gw1, gw2 = pod_gateway(lab, "node1"), pod_gateway(lab, "node2")
        # the listeners answer everyone but guests: the outside host on the node network, each
        # node on its own pod gateway address, node1 the outside host (NATS on a host of its own)
        for url, where, who in ((f"http://{node1}:{NATS}/", "outside", "node1"),
                                (f"http://{OUTSIDE}:{NATS}/", "node1", "outside"),
                                (f"http://{node1}:{METRICS}/", "outside", "node1"),
                                (f"http://{node2}:{NATS}/", "outside", "node2"),
                                (f"http://{gw1}:{NATS}/", "node1", "node1"),
                                (f"http://{gw2}:{METRICS}/", "node2", "node2")):
            assert f"LISTENER-{who}-" in http_get(lab, where, url)

        fenced, target = started(lab, "fenced"), started(lab, "target")
        assert (fenced["status"]["nodeName"], target["status"]["nodeName"]) == ("node1", "node2")
        target_ip = target["status"]["interfaces"][0]["ipAddress"]
        target_port, own_port = node_port(lab, "target"), node_port(lab, "fenced")
        for address, vm in ((TARGET_FIP, "target"), (OWN_FIP, "fenced")):
            lab.cli("fip", "create", address, "--network", "provider")
            lab.cli("fip", "attach", address, "vm", vm)
        for vm in ("fenced", "target"):
            lab.cli("console", vm, "--log", "--until", "VIRTBUS-GUEST-IP", "--timeout", "120")
        assert "hostname: target" in http_get(lab, "outside", f"http://{node2}:{target_port}/")
        assert "hostname: fenced" in http_get(lab, "outside", f"http://{OWN_FIP}/")
        deadline = time.monotonic() + 20  # node1's fence lets its guests on to node2's new node port
        while str(target_port) not in fence_rules(lab, "node1"):
            assert time.monotonic() < deadline, fence_rules(lab, "node1")
            time.sleep(0.5)
        before = {node: dropped(lab, node) for node in ("node1", "node2")}

        checks = {
            "nodenats": (node1, NATS, "shut"),  # its node, where NATS would listen
            "nodemetrics": (node1, METRICS, "shut"),  # and /metrics
            "gateway": (gw1, NATS, "shut"),  # its node's address on the pod bridge, its next hop
            "othernode": (node2, NATS, "shut"),  # another node's management address
            "othergateway": (gw2, METRICS, "shut"),  # another node's pod gateway, past node1 (node2 fences it)
            "mgmthost": (OUTSIDE, NATS, "shut"),  # any other host on the node network
            "pod": (target_ip, 80, "open"),  # a VM on another node, by pod IP
            "nodeport": (node2, target_port, "open"),  # that VM's node port
            "ownnodeport": (node1, own_port, "open"),  # its own node port (hairpin)
            "fip": (TARGET_FIP, 80, "open"),  # that VM's floating IP, held by node2
            "ownfip": (OWN_FIP, 80, "open"),  # its own floating IP (hairpin)
        }
        send(lab, "fenced", PROBE)
        pings = {"pinggateway": (gw1, "open"), "pingnode": (node1, "shut")}  # its next hop answers, no more
        # all at once, each in the background: a shut one waits out its 3 s, and one after the other
        # they took 21 s
        send(lab, "fenced", " ".join([*(f"t {name} {address} {port} &" for name, (address, port, _) in checks.items()),
                                      *(f"p {name} {address} &" for name, (address, _) in pings.items())])
             + " wait; echo FENCE-$((6*7))-END")
        log = lab.cli("console", "fenced", "--log", "--until", "FENCE-42-END", "--timeout", "120").stdout
        seen = dict(re.findall(r"FENCE-([a-z]+)-(open|shut)", log))
        assert seen == {**{name: want for name, (*_, want) in checks.items()},
                        **{name: want for name, (_, want) in pings.items()}}, log
        # and shut by the fence, on both nodes, not by some accident of routing
        after = {node: dropped(lab, node) for node in ("node1", "node2")}
        assert after["node1"] > before["node1"] and after["node2"] > before["node2"], (before, after)

        # meanwhile the listeners were up all along
        for url, where in ((f"http://{node1}:{NATS}/", "outside"), (f"http://{node2}:{NATS}/", "outside"),
                           (f"http://{gw1}:{METRICS}/", "node1"), (f"http://{OUTSIDE}:{METRICS}/", "node2")):
            assert "LISTENER-" in http_get(lab, where, url)
    finally:
        subprocess.run([*back[:4], "del", *back[5:]], check=False)
        for listener in listeners:
            listener.terminate()
            listener.communicate(timeout=10)
    for vm in ("fenced", "target"):
        lab.cli("delete", vm, "--wait", "--timeout", "120")
    for address in (TARGET_FIP, OWN_FIP):
        lab.cli("fip", "delete", address)
