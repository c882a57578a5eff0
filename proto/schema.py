"""The schema walker behind proto.kubevirt: each level of a manifest is a table of the keys virtbus
knows; a key missing from its table is refused with its full dotted path (Code.INVALID), a value of
the wrong type is a Code.BAD_REQUEST, and only keys that change nothing here are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proto.errors import ApiError, Code


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def bad(path: str, message: str) -> ApiError:  # the wrong type: the request is malformed
    return ApiError(Code.BAD_REQUEST, message, field=path or None)


def invalid(path: str, message: str) -> ApiError:  # well formed, but not something virtbus can honour
    return ApiError(Code.INVALID, message, field=path)


def only_known(obj: Mapping[str, Any], path: str, allowed: Iterable[str], ignored: Iterable[str] = ()) -> None:
    """Every key of ``obj`` is one virtbus honours (``allowed``) or may ignore (``ignored``); the first
    other one is refused with its full path."""
    known = set(allowed) | set(ignored)
    for key in obj:
        if key not in known:
            where = join(path, str(key))
            raise invalid(where, f"{where} is not supported by virtbus")


def type_name(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# --- the walker: a node per level checks a value's shape and returns it cleaned


class Node:
    def walk(self, value: Any, path: str) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Scalar(Node):
    kind: type
    what: str

    def walk(self, value: Any, path: str) -> Any:
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise bad(path, f"{path} must be {self.what}, not {type_name(value)}")
        return value


STR = Scalar(str, "a string")
INT = Scalar(int, "an integer")
BOOL = Scalar(bool, "a boolean")


@dataclass(frozen=True)
class Choice(Node):
    """A string from a fixed set; any other value is one virtbus does not support."""

    allowed: tuple[str, ...]

    def walk(self, value: Any, path: str) -> Any:
        STR.walk(value, path)
        if value not in self.allowed:
            raise invalid(path, f"{path} {value!r} is not supported by virtbus "
                                 f"(supported: {', '.join(self.allowed)})")
        # the set's own string, not the manifest's equal copy: a spec leaves out a field at its default
        # (proto.spec.Spec, omit_defaults), and msgspec tells a default by identity
        return self.allowed[self.allowed.index(value)]


@dataclass(frozen=True)
class Off(Node):
    """A boolean flag virtbus does not implement: accepted only when false."""

    def walk(self, value: Any, path: str) -> Any:
        if BOOL.walk(value, path):
            raise invalid(path, f"{path} true is not supported by virtbus")
        return value


@dataclass(frozen=True)
class Refused(Node):
    """A key virtbus knows and cannot honour, refused with why."""

    why: str

    def walk(self, value: Any, path: str) -> Any:
        raise invalid(path, f"{path} is not supported by virtbus: {self.why}")


class Quantity(Node):
    def walk(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise bad(path, f"{path} must be a quantity such as 64Mi, not {type_name(value)}")
        return str(value)


class StrMap(Node):
    def walk(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise bad(path, f"{path} must be an object of strings, not {type_name(value)}")
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise bad(path, f"{path} must map strings to strings; {key!r}: {item!r} does not")
        return dict(value)


@dataclass(frozen=True)
class ListOf(Node):
    item: Node

    def walk(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise bad(path, f"{path} must be a list, not {type_name(value)}")
        return [self.item.walk(item, f"{path}[{index}]") for index, item in enumerate(value)]


class Ignored(Node):
    """Accepted and dropped: it has no effect in virtbus."""


@dataclass(frozen=True)
class Object(Node):
    fields: Mapping[str, Node]

    def walk(self, value: Any, path: str) -> Any:
        if value is None:  # `pod:` in YAML reads as `pod: {}`
            value = {}
        if not isinstance(value, dict):
            raise bad(path, f"{path or 'a manifest'} must be an object, not {type_name(value)}")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise bad(path, f"{path or 'the manifest'} has a key that is not a string: {key!r}")
            child = join(path, key)
            node = self.fields.get(key)
            if node is None:
                raise invalid(child, f"{child} is not supported by virtbus")
            if isinstance(node, Ignored) or (item is None and not isinstance(node, Object)):
                continue  # null is absent, as in Kubernetes
            out[key] = node.walk(item, child)
        return out


IGNORED = Ignored()
EMPTY = Object({})
QUANTITY = Quantity()


# --- what every manifest's reader needs

# virtbus has one set of names. A manifest of a namespaced kind may say so (`namespace: default`, as
# `kubectl get -o yaml` writes it); any other namespace is refused, not folded into this one, where
# `prod/db` would replace `default/db` without a word.
NAMESPACE = "default"


class Namespace(Node):
    def walk(self, value: Any, path: str) -> Any:
        STR.walk(value, path)
        if value != NAMESPACE:
            raise invalid(path, f"virtbus has one namespace, {NAMESPACE!r}; {path} {value!r} is not it")
        return value


def check_namespace(meta: Mapping[str, Any], path: str = "metadata") -> None:
    """For the readers that do not walk a table: ``meta``'s namespace, if any, is the one there is."""
    if meta.get("namespace") is not None:
        Namespace().walk(meta["namespace"], join(path, "namespace"))


_OBJECT_META = ("annotations", "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
                "selfLink", "finalizers")
METADATA = Object({
    "name": STR,
    "namespace": Namespace(),
    "labels": StrMap(),  # the VM object's own; the instance's are the template's
    **dict.fromkeys(_OBJECT_META, IGNORED),
})
# a cluster-wide object's (the KubeVirt CR lives in KubeVirt's own namespace, whatever it is called)
CLUSTER_METADATA = Object({"name": STR, "labels": StrMap(), **dict.fromkeys(("namespace", *_OBJECT_META), IGNORED)})


def required(tree: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in tree:
        raise invalid(join(path, key), f"{join(path, key)} is required")
    return tree[key]


def one_of(tree: Mapping[str, Any], keys: tuple[str, ...], path: str, what: str) -> Any:
    present = [key for key in keys if key in tree]
    if len(present) != 1:
        raise invalid(path, f"{path} needs exactly one {what}: {' or '.join(keys)}")
    return present[0]


def check_kind(obj: Mapping[str, Any], versions: tuple[str, ...], kind: str) -> None:
    api_version, got = obj.get("apiVersion"), obj.get("kind")
    if api_version not in versions:
        raise bad("apiVersion", f"apiVersion {api_version!r} is not supported: use {' or '.join(versions)}")
    if got != kind:
        raise invalid("kind", f"kind {got!r} is not supported by virtbus for {api_version} (only {kind})")
