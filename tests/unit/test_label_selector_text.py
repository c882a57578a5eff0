"""kubectl's `-l` text, as `virtbus get vms|vmis -l` and the API's labelSelector take it."""

from __future__ import annotations

import pytest

from proto.errors import ApiError, Code
from proto.selector import parse_text

LABELS = {"app": "web", "tier": "front", "kubevirt.io/domain": "testvm"}


@pytest.mark.parametrize(("text", "picked"), [
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app = web , tier=front", True),
    ("app=db", False),
    ("app!=db", True),
    ("app!=web", False),
    ("missing!=x", True),  # as Kubernetes: a label that is not there is not equal to x
    ("kubevirt.io/domain", True),
    ("!kubevirt.io/domain", False),
    ("!missing", True),
    ("missing", False),
    ("tier in (front,back)", True),
    ("tier in (back)", False),
    ("tier notin (back, middle),app", True),
    ("tier notin (front)", False),
    ("app=web,tier in (front),!missing,kubevirt.io/domain=testvm", True),
    ("app=", False),  # the empty value
])
def test_picks_as_kubectl_does(text: str, picked: bool) -> None:
    assert parse_text(text, "selector").matches(LABELS) is picked


@pytest.mark.parametrize("text", [
    "app=web=x", "app in web", "app in ()", "app in (a,,b)", "tier in (a", "a),b", "app,,tier", "=web",
    "app=web;reboot", "app=$(reboot)", "-app", "app=" + "x" * 64, "a" * 64, "bad_prefix!/x=y",
    "app=a,app=b", ",".join(f"k{i}" for i in range(33)), "x" * 5000,
])
def test_anything_else_is_refused_by_its_field(text: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_text(text, "labelSelector")
    assert refused.value.code is Code.INVALID and refused.value.field == "labelSelector"
