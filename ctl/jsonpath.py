"""kubectl's ``-o jsonpath=TEMPLATE``, pure: a template parsed once (before connecting, so a bad one
costs nothing), then printed over an object as kubectl prints it.

The part of Kubernetes' JSONPath that its docs and KubeVirt's use: text, ``{.a.b}``, ``{.a[0]}``,
``{.a[-1]}``, ``{.a[1:3]}``, ``{.a[*].b}``, ``{.a.*}``, ``{..name}``, ``{.a['dotted.key']}``,
``{.a[?(@.name=="default")].ipAddress}`` (``==``, ``!=``, ``<``, ``>``, ``<=``, ``>=``, or a key's
presence), ``{.a,.b}``, ``{"\\n"}`` and ``{range .items[*]}...{end}``. A key that is not there prints
nothing (kubectl's default, --allow-missing-template-keys); an index out of range is an error.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proto.errors import ApiError, Code

_FIELD = re.compile(r"[A-Za-z0-9_\-/$]+")
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_OPS = tuple(_COMPARE)  # the two-character ones first: "<=" is not "<" then "=..."


def _bad(why: str) -> ApiError:
    return ApiError(Code.BAD_REQUEST, f"jsonpath: {why}", "output")


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Every:
    pass


@dataclass(frozen=True)
class Descend:
    name: str


@dataclass(frozen=True)
class Index:
    start: int | None
    stop: int | None
    single: bool


@dataclass(frozen=True)
class Filter:
    path: tuple[Step, ...]
    op: str | None
    value: Any


Step = Field | Every | Descend | Index | Filter


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Expr:
    paths: tuple[tuple[Step, ...], ...]


@dataclass(frozen=True)
class Range:
    path: tuple[Step, ...]
    body: tuple[Node, ...]


Node = Text | Expr | Range


def _path(text: str) -> tuple[Step, ...]:
    """One path: `.a[0].b`, `$.a`, `@.a`, `..a`, `.*`, `['a']`, `[?(...)]`."""
    steps: list[Step] = []
    i = 1 if text[:1] in ("$", "@") else 0
    while i < len(text):
        if text.startswith("..", i):
            m = _FIELD.match(text, i + 2)
            if not m:
                raise _bad(f"a name after '..' at {text[i:]!r}")
            steps.append(Descend(m.group()))
            i = m.end()
        elif text.startswith(".*", i):
            steps.append(Every())
            i += 2
        elif text[i] == ".":
            m = _FIELD.match(text, i + 1)
            if not m:
                if i + 1 == len(text) and not steps:  # `{.}`: the object itself
                    break
                raise _bad(f"a name after '.' at {text[i:]!r}")
            steps.append(Field(m.group()))
            i = m.end()
        elif text[i] == "[":
            close = _closing(text, i)
            steps.append(_bracket(text[i + 1:close].strip()))
            i = close + 1
        else:
            raise _bad(f"unexpected {text[i:]!r} in {text!r}")
    return tuple(steps)


def _closing(text: str, start: int, opener: str = "[", closer: str = "]") -> int:
    """Where the bracket opened at start closes, quotes and nested pairs skipped."""
    depth, quote = 0, ""
    for j in range(start, len(text)):
        c = text[j]
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                return j
    raise _bad(f"unclosed {opener!r} in {text!r}")


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        return json.loads(text)  # numbers, true, false, null
    except json.JSONDecodeError:
        raise _bad(f"{text!r} is no value to compare with") from None


def _bracket(inner: str) -> Step:
    if inner == "*":
        return Every()
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return Field(inner[1:-1])
    if inner.startswith("?(") and inner.endswith(")"):
        cond = inner[2:-1].strip()
        for op in _OPS:
            left, sep, right = cond.partition(op)
            if sep:
                return Filter(_path(left.strip()), op, _literal(right))
        return Filter(_path(cond), None, None)
    try:
        if ":" in inner:
            start, _, stop = inner.partition(":")
            return Index(int(start) if start.strip() else None, int(stop) if stop.strip() else None, False)
        n = int(inner)
    except ValueError:
        raise _bad(f"[{inner}] is no index, slice, '*', quoted key or filter") from None
    return Index(n, None, True)


def parse(template: str) -> tuple[Node, ...]:
    """The template's nodes; a typed error (field ``output``) for one kubectl would refuse."""
    stack: list[tuple[tuple[Step, ...] | None, list[Node]]] = [(None, [])]
    i = 0
    while i < len(template):
        open_ = template.find("{", i)
        if open_ < 0:
            stack[-1][1].append(Text(template[i:]))
            break
        if open_ > i:
            stack[-1][1].append(Text(template[i:open_]))
        close = _closing(template, open_, "{", "}")
        inner = template[open_ + 1:close].strip()
        i = close + 1
        if inner.startswith("range ") or inner == "range":
            stack.append((_path(inner[5:].strip()), []))
        elif inner == "end":
            if len(stack) == 1:
                raise _bad("{end} without a {range}")
            path, body = stack.pop()
            assert path is not None
            stack[-1][1].append(Range(path, tuple(body)))
        elif len(inner) >= 2 and inner[0] == inner[-1] == '"':
            stack[-1][1].append(Text(json.loads(inner)))  # "\n", "\t" as JSON strings spell them
        elif not inner:
            raise _bad("an empty {}")
        else:
            stack[-1][1].append(Expr(tuple(_path(p.strip()) for p in _split_union(inner))))
    if len(stack) != 1:
        raise _bad("{range} without its {end}")
    return tuple(stack[0][1])


def _split_union(inner: str) -> list[str]:
    parts, depth, quote, last = [], 0, "", 0
    for j, c in enumerate(inner):
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[(":
            depth += 1
        elif c in "])":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(inner[last:j])
            last = j + 1
    return [*parts, inner[last:]]


def _step(values: list[Any], step: Step) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(step, Field):
            if isinstance(v, dict) and step.name in v:
                out.append(v[step.name])
        elif isinstance(step, Every):
            out.extend(v.values() if isinstance(v, dict) else v if isinstance(v, list) else [])
        elif isinstance(step, Descend):
            out.extend(_descend(v, step.name))
        elif isinstance(step, Index):
            if not isinstance(v, list):
                continue
            if step.single:
                assert step.start is not None
                if not -len(v) <= step.start < len(v):
                    raise _bad(f"array index out of bounds: index {step.start}, length {len(v)}")
                out.append(v[step.start])
            else:
                out.extend(v[step.start:step.stop])
        elif isinstance(v, list):
            out.extend(e for e in v if _holds(e, step))
    return out


def _descend(v: Any, name: str) -> list[Any]:
    found: list[Any] = []
    if isinstance(v, dict):
        if name in v:
            found.append(v[name])
        for child in v.values():
            found.extend(_descend(child, name))
    elif isinstance(v, list):
        for child in v:
            found.extend(_descend(child, name))
    return found


def _holds(element: Any, f: Filter) -> bool:
    got = evaluate(element, f.path)
    if f.op is None:
        return bool(got)
    if not got:
        return False
    try:
        return bool(_COMPARE[f.op](got[0], f.value))
    except TypeError:  # a string against a number: not picked, as kubectl's
        return False


def evaluate(value: Any, path: tuple[Step, ...]) -> list[Any]:
    values = [value]
    for step in path:
        values = _step(values, step)
    return values


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def render(nodes: tuple[Node, ...], value: Any) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.text)
        elif isinstance(node, Expr):
            out.append(" ".join(_text(v) for p in node.paths for v in evaluate(value, p)))
        else:
            out.extend(render(node.body, item) for item in evaluate(value, node.path))
    return "".join(out)
