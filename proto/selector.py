"""Kubernetes label selectors (``matchLabels`` and ``matchExpressions``), as a replica set or a pool
picks its members: parsed with the manifest's field paths, and matched against a set of labels."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proto.errors import ApiError, Code
from proto.labels import OPERATORS, LabelSelector, Operator, Requirement

__all__ = ["LabelSelector", "Requirement", "check", "parse", "parse_text"]
from proto.labels import check_labels

MAX_REQUIREMENTS = 32


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(Code.INVALID, message, field)


def parse(obj: object, path: str) -> LabelSelector:
    """A selector as Kubernetes writes it; errors name the field under ``path``."""
    if not isinstance(obj, Mapping):
        raise ApiError(Code.BAD_REQUEST, f"{path} must be an object with matchLabels or matchExpressions", path)
    for key in obj:
        if key not in ("matchLabels", "matchExpressions"):
            raise _invalid(f"{path}.{key}", f"{path}.{key} is not supported by virtbus")
    labels = obj.get("matchLabels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in labels.items()):
        raise ApiError(Code.BAD_REQUEST, f"{path}.matchLabels must map strings to strings", f"{path}.matchLabels")
    check_labels(dict(labels), f"{path}.matchLabels")
    raw = obj.get("matchExpressions") or []
    if not isinstance(raw, list) or len(raw) > MAX_REQUIREMENTS:
        raise ApiError(Code.BAD_REQUEST, f"{path}.matchExpressions must be a list of at most {MAX_REQUIREMENTS}",
                       f"{path}.matchExpressions")
    requirements = [_requirement(item, f"{path}.matchExpressions[{i}]") for i, item in enumerate(raw)]
    selector = LabelSelector(match_labels=dict(labels), match_expressions=requirements)
    if selector.empty:
        raise _invalid(path, f"{path} is empty: it would select every instance; give matchLabels")
    return selector


def _requirement(item: Any, path: str) -> Requirement:
    if not isinstance(item, Mapping):
        raise ApiError(Code.BAD_REQUEST, f"{path} must be an object (key, operator, values)", path)
    for key in item:
        if key not in ("key", "operator", "values"):
            raise _invalid(f"{path}.{key}", f"{path}.{key} is not supported by virtbus")
    key, operator, values = item.get("key"), item.get("operator"), item.get("values") or []
    if not isinstance(key, str):
        raise ApiError(Code.BAD_REQUEST, f"{path}.key is required", f"{path}.key")
    check_labels({key: ""}, f"{path}.key")
    if operator not in OPERATORS:
        raise _invalid(f"{path}.operator", f"{path}.operator is one of {', '.join(OPERATORS)}")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ApiError(Code.BAD_REQUEST, f"{path}.values must be a list of strings", f"{path}.values")
    if operator in ("In", "NotIn") and not values:
        raise _invalid(f"{path}.values", f"{path}.values must not be empty for {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise _invalid(f"{path}.values", f"{path}.values must be empty for {operator}")
    for i, value in enumerate(values):
        check_labels({key: value}, f"{path}.values[{i}]")
    return Requirement(key=key, operator=operator, values=list(values))


def check(selector: LabelSelector, field: str) -> None:
    """A stored selector, held to the rules it was parsed with."""
    check_labels(selector.match_labels, f"{field}.matchLabels")
    if selector.empty or len(selector.match_expressions) > MAX_REQUIREMENTS:
        raise _invalid(field, "a selector selects by at least one and at most 32 requirements")
    for i, r in enumerate(selector.match_expressions):
        for value in r.values or [""]:
            check_labels({r.key: value}, f"{field}.matchExpressions[{i}]")


# --- the text form kubectl's `-l` takes: key=value, key==value, key!=value, key, !key,
# key in (a,b), key notin (a,b); requirements separated by commas, all of which must hold

_KEY = r"[A-Za-z0-9][A-Za-z0-9._/-]*"
_SET = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>[^=!,()\s]*)$")
_EXISTS = re.compile(rf"^(?P<bang>!?)\s*(?P<key>{_KEY})$")
MAX_SELECTOR_TEXT = 4096


def parse_text(text: str, field: str) -> LabelSelector:
    """``text`` as kubectl reads `-l`; an empty text selects everything. Errors name ``field``."""
    if len(text) > MAX_SELECTOR_TEXT:
        raise _invalid(field, f"a label selector is at most {MAX_SELECTOR_TEXT} characters")
    labels: dict[str, str] = {}
    requirements: list[Requirement] = []
    for part in _split(text, field):
        if (found := _SET.match(part)) is not None:
            values = [v.strip() for v in found["values"].split(",")]
            if not all(values):
                raise _invalid(field, f"{part!r}: a set is one or more values, separated by commas")
            operator: Operator = "In" if found["op"] == "in" else "NotIn"
            requirements.append(Requirement(key=found["key"], operator=operator, values=values))
        elif (found := _EQUALITY.match(part)) is not None:
            if found["op"] == "!=":
                requirements.append(Requirement(key=found["key"], operator="NotIn", values=[found["value"]]))
            elif labels.setdefault(found["key"], found["value"]) != found["value"]:
                raise _invalid(field, f"{found['key']!r} cannot equal two values")
        elif (found := _EXISTS.match(part)) is not None:
            requirements.append(Requirement(key=found["key"], operator="DoesNotExist" if found["bang"] else "Exists"))
        else:
            raise _invalid(field, f"{part!r} is not a label requirement (key=value, key!=value, key, !key, "
                                  "key in (a,b), key notin (a,b))")
    if len(requirements) + len(labels) > MAX_REQUIREMENTS:
        raise _invalid(field, f"a label selector has at most {MAX_REQUIREMENTS} requirements")
    check_labels(labels, field)
    for r in requirements:
        for value in r.values or [""]:
            check_labels({r.key: value}, field)
    return LabelSelector(match_labels=labels, match_expressions=requirements)


def _split(text: str, field: str) -> list[str]:
    """The requirements of ``text``: split at the commas outside a set's parentheses."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth not in (0, 1):
            raise _invalid(field, f"{text!r}: unbalanced parentheses")
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth:
        raise _invalid(field, f"{text!r}: unbalanced parentheses")
    parts.append(text[start:])
    stripped = [part.strip() for part in parts]
    if stripped == [""]:
        return []
    if not all(stripped):
        raise _invalid(field, f"{text!r}: an empty requirement between commas")
    return stripped
