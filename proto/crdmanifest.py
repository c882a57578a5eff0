"""The envelope of a custom resource's manifest as virtbus reads it (snapshot.kubevirt.io's and
clone.kubevirt.io's kinds): an object of known top-level keys, an accepted apiVersion, metadata of
known keys in the one namespace, a DNS-1123 name and a spec object; anything else is refused with its
field's full path."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from proto.errors import ApiError, Code
from proto.schema import check_namespace
from proto.validation import check_name

METADATA = frozenset({"name", "namespace", "labels", "annotations", "creationTimestamp"})


def obj(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(Code.INVALID, f"{field or 'the manifest'} must be an object", field)
    return value


def only(value: dict[str, Any], allowed: Collection[str], field: str) -> None:
    for key in value:
        if key not in allowed:
            path = f"{field}.{key}" if field else key
            raise ApiError(Code.INVALID, f"{path} is not supported by virtbus", path)


def envelope(doc: Any, api_versions: Collection[str]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(the manifest, its name, its spec), the envelope checked."""
    top = obj(doc, "")
    only(top, {"apiVersion", "kind", "metadata", "spec", "status"}, "")
    if top.get("apiVersion") not in api_versions:
        raise ApiError(Code.INVALID, f"apiVersion must be one of {sorted(api_versions)}", "apiVersion")
    meta = obj(top.get("metadata"), "metadata")
    only(meta, METADATA, "metadata")
    check_namespace(meta)
    name = meta.get("name")
    if not isinstance(name, str):
        raise ApiError(Code.INVALID, "metadata.name is required", "metadata.name")
    check_name(name, "metadata.name")
    return top, name, obj(top.get("spec"), "spec")
