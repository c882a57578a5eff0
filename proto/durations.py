"""Kubernetes' ``metav1.Duration`` as manifests spell it (Go's ``time.ParseDuration``: "5m", "1h30m",
"90s", "1.5h", "300ms", "0s"), read into seconds, and written back as Go writes it ("5m0s")."""

from __future__ import annotations

import math
import re

from proto.errors import ApiError, Code

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_MAX_TEXT = 64  # no real duration is longer; a longer one is refused before the regex walks it


def parse(text: object, field: str, *, at_least: float = 0.0, at_most: float = math.inf) -> float:
    """Pure: the seconds a Go duration string says; Invalid with the field when it is none, or out of
    [at_least, at_most]. Go's own grammar: a sign, then number-unit pairs, no spaces; "0" alone too."""
    if not isinstance(text, str):
        raise ApiError(Code.INVALID, 'a duration is a string such as "5m", "90s" or "1h30m"', field)
    if len(text) > _MAX_TEXT:
        raise ApiError(Code.INVALID, f"a duration of at most {_MAX_TEXT} characters", field)
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        seconds = 0.0
    else:
        pos, seconds = 0, 0.0
        while pos < len(body):
            match = _PART.match(body, pos)
            if match is None:
                raise ApiError(Code.INVALID, f'{text!r} is no duration (such as "5m", "90s" or "1h30m")', field)
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos == 0:
            raise ApiError(Code.INVALID, f'{text!r} is no duration (such as "5m", "90s" or "1h30m")', field)
    if text.startswith("-"):
        seconds = -seconds
    if not at_least <= seconds <= at_most:
        raise ApiError(Code.INVALID, f"{text} is out of range: from {spelled(at_least)} to {spelled(at_most)}", field)
    return seconds


def spelled(seconds: float) -> str:
    """Pure: seconds as Go prints a duration, to the millisecond: 300 -> "5m0s", 5400 -> "1h30m0s"."""
    if math.isinf(seconds):
        return "no limit"
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    millis = round(abs(seconds) * 1000)
    if millis < 1000:
        return f"{sign}{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") if rest % 1000 else str(rest // 1000)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"
