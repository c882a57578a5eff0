"""`virtbus get vmis -w`: every VMI, then each change, as kubectl -w prints them."""

from __future__ import annotations

from ctl import render
from ctl.client import ApiClient
from ctl.lab import say
from proto import resources, selector
from proto.state import VMI


async def watch(api: ApiClient, name: str | None, chosen: selector.LabelSelector, fmt: str | None,
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
