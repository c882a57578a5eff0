"""KubeVirt's label and annotation filters (a VirtualMachineClone's ``labelFilters``): each a regular
expression that keeps the keys it matches anywhere in them (Go's ``regexp.MatchString``), ``!`` before
one that drops them, and ``*`` alone for every key.

KubeVirt runs them with Go's RE2, in time linear in the key. Python's ``re`` backtracks, and a filter
such as ``(a+)+$`` would hold the control plane for minutes on one label key, so virtbus takes the
part of the syntax filters are written in (letters and the like, ``.``, ``*``, ``^``, ``$``) and
matches it here, in linear time; any other operator is refused with the filter's field.
"""

from __future__ import annotations

from proto.errors import ApiError, Code

MAX_FILTER = 317  # a label key's longest: a 253-character prefix, "/", a 63-character name
_OPERATORS = frozenset("()[]{}+?|\\")
Atom = tuple[str, bool]  # a character ("." any) and whether a "*" follows it


def _atoms(body: str) -> tuple[bool, list[Atom], bool]:
    start = body.startswith("^")
    end = body.endswith("$") and len(body) > int(start)
    core = body[int(start):len(body) - int(end)]
    atoms: list[Atom] = []
    for char in core:
        if char == "*":
            if not atoms or atoms[-1][1]:
                raise ValueError("'*' follows nothing it could repeat")
            atoms[-1] = (atoms[-1][0], True)
        elif char in "^$":
            raise ValueError(f"{char!r} only at the filter's {'start' if char == '^' else 'end'}")
        else:
            atoms.append((char, False))
    return start, atoms, end


def check(filters: list[str] | None, field: str) -> None:
    for index, text in enumerate(filters or []):
        body = text.removeprefix("!")
        where = f"{field}[{index}]"
        if len(text) > MAX_FILTER:
            raise ApiError(Code.INVALID, f"a filter is at most {MAX_FILTER} characters", where)
        bad = sorted(_OPERATORS.intersection(body))
        if bad:
            raise ApiError(Code.INVALID, f"{text!r}: virtbus takes filters of characters, '.', '*', '^' and '$'; "
                                         f"not {', '.join(repr(b) for b in bad)}", where)
        if body != "*":
            try:
                _atoms(body)
            except ValueError as exc:
                raise ApiError(Code.INVALID, f"{text!r}: {exc}", where) from None


def matches(pattern: str, key: str) -> bool:
    """Pure: whether the (checked) filter matches somewhere in key: a set of positions in the
    pattern stepped over the key once, so at most len(pattern) x len(key) steps."""
    if pattern == "*":
        return True
    start, atoms, end = _atoms(pattern)

    def closure(states: set[int]) -> set[int]:
        out, todo = set(states), list(states)
        while todo:
            i = todo.pop()
            if i < len(atoms) and atoms[i][1] and i + 1 not in out:  # a starred atom may match nothing
                out.add(i + 1)
                todo.append(i + 1)
        return out

    states = closure({0})
    for char in key:
        if not end and len(atoms) in states:
            return True
        stepped = set()
        for i in states:
            if i < len(atoms) and atoms[i][0] in (".", char):
                stepped.add(i if atoms[i][1] else i + 1)
        states = closure(stepped | (set() if start else {0}))
    return len(atoms) in states


def kept(keys: dict[str, str], filters: list[str] | None) -> dict[str, str]:
    """Pure: the keys the filters keep. None keeps all; otherwise a key stays when a filter matches
    it and no ``!`` filter does (negations win, as in KubeVirt)."""
    if filters is None:
        return dict(keys)
    keep = [f for f in filters if not f.startswith("!")]
    drop = [f[1:] for f in filters if f.startswith("!")]
    return {k: v for k, v in keys.items()
            if any(matches(p, k) for p in keep) and not any(matches(p, k) for p in drop)}
