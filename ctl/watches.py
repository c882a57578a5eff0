"""`virtbus get vms|vmis -w`: every VM or VMI, then each change, as kubectl -w prints them."""

from __future__ import annotations

from ctl import render
from ctl.client import ApiClient
from ctl.stdout import say
from proto import resources, selector
from proto.api import NameRequest, VMReply, VMView
from proto.errors import ApiError, Code
from proto.state import VMI


async def vmis(api: ApiClient, name: str | None, chosen: selector.LabelSelector, fmt: str | None,
               wide: bool) -> None:
    """Every VMI (or the one named, or those ``chosen`` picks), then each change: a table row, or with
    fmt the whole object. A VMI the selector stops picking prints as deleted, once."""
    if fmt is None:
        say(render.vmis([], wide))
    seen: dict[str, VMI] = {}
    shown_keys: set[str] = set()

    def show(key: str, vmi: VMI | None) -> None:
        if name and key != name:
            return
        if not chosen.empty:
            if vmi is not None and chosen.matches(resources.vmi_labels(vmi)):
                shown_keys.add(key)
            elif key in shown_keys:
                shown_keys.discard(key)
                vmi = None  # gone, or no longer picked: gone from this watch either way
            else:
                return
        if fmt is None:
            say(f"{key}   <deleted>" if vmi is None else render.vmis([vmi], wide).splitlines()[1])
            return
        if vmi is not None:
            seen[key] = vmi
        shown = vmi or seen.pop(key, None)  # as kubectl -w prints a deleted object: as last seen
        if shown is not None:
            say(("---\n" if fmt == "yaml" else "") + render.vmi_objects([shown], fmt, one=True))

    await api.watch_vmis(show)


async def vms(api: ApiClient, name: str | None, chosen: selector.LabelSelector, fmt: str | None,
              wide: bool) -> None:
    """Every VM (or the one named, or those ``chosen`` picks), then each change of its row (its status
    is its instance's): a table row, or with fmt the whole object; a VM deleted or no longer picked
    prints as deleted (with fmt: as last seen), once."""
    if fmt is None:
        say(render.vms([], wide))
    last: dict[str, tuple[str, str]] = {}  # each VM shown: what was printed, and what counts as a change

    def shown_as(view: VMView) -> tuple[str, str]:
        if fmt is None:
            row = render.vms([view], wide).splitlines()[1]
            words = row.split()
            return row, " ".join(words[:1] + words[2:])  # its age changes by itself: not a change
        text = render.vm_objects([view], fmt, one=True)
        return ("---\n" if fmt == "yaml" else "") + text, text

    async def changed(key: str) -> None:
        if name and key != name:
            return
        try:
            view: VMView | None = (await api.call("vm", "get", NameRequest(name=key), VMReply)).item
        except ApiError as err:
            if err.code is not Code.NOT_FOUND:
                raise
            view = None  # gone, or a VMI of its own (no VM)
        if view is not None and not chosen.matches(view.vm.spec.vm_labels):
            view = None
        if view is None:
            gone = last.pop(key, None)
            if gone is not None:
                say(f"{key}   <deleted>" if fmt is None else gone[0])  # with fmt: as last seen
            return
        printed, compared = shown_as(view)
        if key in last and last[key][1] == compared:
            return  # its instance changed in a way its row does not show
        last[key] = printed, compared
        say(printed)

    await api.watch_vm_keys(changed)
