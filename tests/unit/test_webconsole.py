"""console-web's list of VMs: a screen link for each VM with a screen, and none for one without
(autoattachGraphicsDevice: false), whose screen would only be refused."""

from __future__ import annotations

from typing import Any, cast

from ctl.client import ApiClient
from ctl.webconsole import NO_SCREEN, WebConsole
from proto.api import VMIList
from proto.spec import VMSpec
from proto.state import VMI, Phase


class Listing:
    """The API's vmi list, from VMIs it holds."""

    def __init__(self, vmis: list[VMI]) -> None:
        self.vmis = vmis
        self.asked: list[tuple[str, str]] = []

    async def call(self, kind: str, verb: str, body: Any, reply: type[Any]) -> Any:
        self.asked.append((kind, verb))
        return VMIList(items=self.vmis)


async def test_a_vm_without_a_screen_has_no_screen_link() -> None:
    api = Listing([
        VMI(name="web", uid="u1", spec=VMSpec(name="web"), created_at=0.0, phase=Phase.RUNNING, node_name="node1"),
        VMI(name="headless", uid="u2", spec=VMSpec(name="headless", graphics=False), created_at=0.0,
            phase=Phase.RUNNING, node_name="node2")])
    page = (await WebConsole(cast(ApiClient, api)).list_page()).decode()
    rows = {row.split("</td>")[0].removeprefix("<tr><td>"): row for row in page.split("\n")[-1].split("</tr>")
            if row.startswith("<tr><td>")}
    assert set(rows) == {"web", "headless"} and api.asked == [("vmi", "list")]
    assert 'href="/screen/web"' in rows["web"] and NO_SCREEN not in rows["web"]
    assert "/screen/headless" not in page and NO_SCREEN in rows["headless"]
