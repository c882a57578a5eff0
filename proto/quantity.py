"""Kubernetes resource quantities (``64M``, ``1Gi``, ``512``), parsed to a whole number of bytes."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIXES: dict[str, int] = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


class InvalidQuantity(ValueError):
    pass


def parse_bytes(text: str | int) -> int:
    """Return the quantity in bytes, rounded up like Kubernetes does for memory."""
    if isinstance(text, bool):
        raise InvalidQuantity(f"{text!r} is not a quantity")
    if isinstance(text, int):
        if text < 0:
            raise InvalidQuantity(f"{text} is negative")
        return text
    match = _QUANTITY.match(text.strip())
    if not match:
        raise InvalidQuantity(f"{text!r} is not a quantity (examples: 64M, 128Mi, 1Gi)")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise InvalidQuantity(f"{text!r} is not a quantity") from exc
    value = number * _SUFFIXES[match.group(2) or ""]
    whole = int(value)
    return whole if whole == value else whole + 1


def format_bytes(value: int) -> str:
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIXES[suffix]
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)
