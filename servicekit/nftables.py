"""Our nftables tables (NAT, and the guests' filter), each replaced as a whole (the script is pure;
``apply`` runs it).

``nft -f`` runs a script as one transaction: declaring the table first lets ``delete table`` work
when it does not exist yet, and the new rules replace the old ones with no moment in between.
"""

from __future__ import annotations

import subprocess

from servicekit import libnft
from servicekit.netns_socket import run_in

# the NAT hooks we use, with the priorities nft names for them (output has no name for -100)
_PRIORITY = {"prerouting": "dstnat", "output": "-100", "postrouting": "srcnat"}


def nat_table(table: str, chains: dict[str, list[str]]) -> str:
    """An ``nft -f`` script replacing ``table ip TABLE`` with one chain per NAT hook (prerouting,
    output, postrouting) holding the given rules, in order."""
    lines = [f"table ip {table}", f"delete table ip {table}", f"table ip {table} {{"]
    for hook, rules in chains.items():
        lines += [f"  chain {hook} {{", f"    type nat hook {hook} priority {_PRIORITY[hook]}; policy accept;",
                  *(f"    {rule}" for rule in rules), "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def filter_table(table: str, chains: dict[str, list[str]], *, family: str = "inet") -> str:
    """An ``nft -f`` script replacing ``table FAMILY TABLE``. A chain named after a filter hook
    (input, forward, output) is a base chain of that hook at filter priority, policy accept; any
    other chain is a regular one, for ``jump``. Chains are written in the given order, so declare
    a jump target before the chain that jumps to it."""
    lines = [f"table {family} {table}", f"delete table {family} {table}", f"table {family} {table} {{"]
    for name, rules in chains.items():
        lines.append(f"  chain {name} {{")
        if name in _FILTER_HOOKS:
            lines.append(f"    type filter hook {name} priority filter; policy accept;")
        lines += [*(f"    {rule}" for rule in rules), "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


_FILTER_HOOKS = ("input", "forward", "output")


def apply(script: str, netns: str | None) -> None:
    """Run the script in the named network namespace (None: this one). Blocking. This thread enters
    the namespace and runs it there with libnftables (servicekit.libnft), or starts nft from there
    (a child is born in its parent thread's) where the library is missing; never through ``ip netns
    exec``: no mount namespace made for it."""
    try:
        returncode, errors = run_in(netns, lambda: _run(script))
    except OSError as exc:  # no such namespace (or no nft): as ip netns exec's failure was
        raise RuntimeError(f"nft: in network namespace {netns}: {exc}") from None
    if returncode != 0:
        raise RuntimeError(f"nft: {errors.strip()}")


def _run(script: str) -> tuple[int, str]:
    """In this thread's namespace: through libnftables (servicekit.libnft), else the nft program."""
    ran = libnft.run(script)
    if ran is not None:
        return ran
    done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    return done.returncode, done.stderr


class Applier:
    """One table's rules in one namespace, applied only when they change: the same script again
    would cost a transaction and change nothing. Node ports, services, floating IPs and the guest
    fence sync at every change they watch, most of which leave their rules as they were."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self.applied: str | None = None  # the script in place, as last applied here

    def apply(self, script: str) -> bool:
        """Blocking. True when the script was applied, False when it was in place already."""
        if script == self.applied:
            return False
        apply(script, self.netns)
        self.applied = script
        return True
