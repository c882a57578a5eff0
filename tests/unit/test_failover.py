"""Which HA instances fail over and which leases go (scheduler.failover), read by the leases: values
in, decisions out."""

from __future__ import annotations

from proto import fencing, subjects
from proto.spec import VMSpec
from proto.state import VMI, Phase
from scheduler.failover import LeaseSeen, lapsed, stale

NOW = 1000.0
LAPSED = NOW - fencing.EXPIRE_AFTER_S - 1  # seen renewed this long ago: past the expiry
FRESH = NOW - 1.0


def vmi(name: str, *, node: str = "node1", uid: str = "u1", ha: bool = True, phase: Phase = Phase.RUNNING) -> VMI:
    return VMI(name=name, uid=uid, spec=VMSpec(name=name, high_availability=ha), created_at=0.0, phase=phase,
               node_name=node)


def test_only_the_running_ha_instance_whose_own_lease_lapsed_fails_over() -> None:
    vmis = {"ha": vmi("ha"), "fresh": vmi("fresh"), "plain": vmi("plain", ha=False),
            "moved": vmi("moved", node="node2"), "again": vmi("again", uid="u2"),
            "ended": vmi("ended", phase=Phase.FAILED)}
    leases = {subjects.vmi_lease("node1", name): LeaseSeen("u1", 3, FRESH if name == "fresh" else LAPSED)
              for name in (*vmis, "gone")}
    assert lapsed(leases, vmis.get, NOW) == [(vmis["ha"], NOW - LAPSED)]
    # the leases nobody needs, once lapsed: not HA, another node's or another run's, ended, gone
    assert sorted(stale(leases, vmis.get, NOW)) == sorted(
        subjects.vmi_lease("node1", n) for n in ("plain", "moved", "again", "ended", "gone"))


def test_a_lease_not_yet_lapsed_is_kept_whoever_holds_it() -> None:
    leases = {subjects.vmi_lease("node1", "gone"): LeaseSeen("u1", 1, FRESH)}
    none: dict[str, VMI] = {}
    assert lapsed(leases, none.get, NOW) == [] and stale(leases, none.get, NOW) == []
