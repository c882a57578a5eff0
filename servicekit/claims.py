"""Address claims: one table per pool in the ipam bucket (owner -> address), changed only by
compare-and-set, so two handlers can never hand out one address and an owner keeps its own."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address

from proto.errors import ApiError, Code
from servicekit.store import Bucket

Table = dict[str, str]


async def claim_address(tables: Bucket[Table], key: str, owner: str, candidates: Iterable[IPv4Address],
                        exhausted: str) -> IPv4Address:
    pool = list(candidates)
    usable = set(pool)
    for _ in range(20):
        entry = await tables.get(key)
        table = dict(entry.value) if entry else {}
        if owner in table and IPv4Address(table[owner]) in usable:
            return IPv4Address(table[owner])
        table.pop(owner, None)  # kept from a pool since changed (a network applied with another subnet)
        taken = {IPv4Address(v) for v in table.values()}
        free = next((ip for ip in pool if ip not in taken), None)
        if free is None:
            raise ApiError(Code.UNAVAILABLE, exhausted)
        table[owner] = str(free)
        try:
            if entry is None:
                await tables.create(key, table)
            else:
                await tables.update(key, table, entry.revision)
            return free
        except ApiError as exc:
            if exc.code not in (Code.CONFLICT, Code.ALREADY_EXISTS):
                raise
    raise ApiError(Code.CONFLICT, "address allocation kept racing; try again")


async def release_address(tables: Bucket[Table], key: str, owner: str) -> None:
    await tables.mutate(key, lambda t: {k: v for k, v in t.items() if k != owner})
