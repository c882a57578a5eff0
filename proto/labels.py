"""Kubernetes label selectors as data (``matchLabels`` and ``matchExpressions``) and how they match a set
of labels: what specs and records hold. Parsing from a manifest, with its field paths, is proto.selector's."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import msgspec

from proto.errors import ApiError, Code

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
MAX_REQUIREMENTS = 32


class Requirement(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True,
                  forbid_unknown_fields=True):
    key: str
    operator: Operator
    values: list[str] = []


class LabelSelector(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True,
                    forbid_unknown_fields=True):
    match_labels: dict[str, str] = {}
    match_expressions: list[Requirement] = []

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        return all(holds(r, labels) for r in self.match_expressions)

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


def holds(r: Requirement, labels: Mapping[str, str]) -> bool:
    match r.operator:
        case "In":
            return labels.get(r.key) in r.values
        case "NotIn":
            return r.key not in labels or labels[r.key] not in r.values
        case "Exists":
            return r.key in labels
        case "DoesNotExist":
            return r.key not in labels


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_labels(labels: dict[str, str], field: str) -> None:
    """Kubernetes label syntax: [DNS-1123 subdomain/]name, value empty or a name, names at most 63."""
    for key, value in labels.items():
        prefix, slash, name = key.rpartition("/")
        if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
            raise ApiError(Code.INVALID, f"label key {key!r}: the prefix must be a DNS-1123 subdomain", field)
        if not _LABEL_NAME.fullmatch(name):
            raise ApiError(Code.INVALID, f"label key {key!r}: the name must be 1-63 of A-Za-z0-9-_. starting and "
                                         "ending with a letter or digit", field)
        if value and not _LABEL_NAME.fullmatch(value):
            raise ApiError(Code.INVALID, f"label value {value!r} of {key!r} must be empty or 1-63 of A-Za-z0-9-_. "
                                         "starting and ending with a letter or digit", field)
