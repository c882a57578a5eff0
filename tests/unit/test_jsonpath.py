"""kubectl's -o jsonpath, against the examples of Kubernetes' JSONPath support page and KubeVirt's
docs: what kubectl prints for each, and typed errors for templates it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from ctl import jsonpath
from proto.errors import ApiError, Code

DOC: dict[str, Any] = {
    "kind": "List",
    "items": [
        {"kind": "None", "metadata": {"name": "127.0.0.1", "labels": {"kubernetes.io/hostname": "127.0.0.1"}},
         "status": {"capacity": {"cpu": "4"}, "addresses": [{"type": "LegacyHostIP", "address": "127.0.0.1"}]}},
        {"kind": "None", "metadata": {"name": "127.0.0.2"},
         "status": {"capacity": {"cpu": "8"}, "addresses": [{"type": "LegacyHostIP", "address": "127.0.0.2"},
                                                            {"type": "another", "address": "127.0.0.3"}]}},
    ],
    "users": [{"name": "myself", "user": {}}, {"name": "e2e", "user": {"username": "admin", "password": "secret"}}],
}


def printed(template: str, doc: Any = DOC) -> str:
    return jsonpath.render(jsonpath.parse(template), doc)


@pytest.mark.parametrize(("template", "out"), [
    ("{.kind}", "List"),
    ("{$.kind}", "List"),
    ("{['kind']}", "List"),
    ("{..name}", "127.0.0.1 127.0.0.2 myself e2e"),
    ("{.items[*].metadata.name}", "127.0.0.1 127.0.0.2"),
    ("{.users[0].name}", "myself"),
    ("{.users[-1].name}", "e2e"),
    ("{.items[0:1].metadata.name}", "127.0.0.1"),
    ("{.users[?(@.name==\"e2e\")].user.password}", "secret"),
    ("{.users[?(@.name!='e2e')].name}", "myself"),
    ("{.users[?(@.user.password)].name}", "e2e"),
    ("{.items[0].status.capacity}", '{"cpu":"4"}'),
    ("{.items[0].metadata.labels['kubernetes.io/hostname']}", "127.0.0.1"),
    ("{range .items[*]}[{.metadata.name}, {.status.capacity}] {end}",
     '[127.0.0.1, {"cpu":"4"}] [127.0.0.2, {"cpu":"8"}] '),
    ("{range .users[*]}{.name}{\"\\t\"}{.user.username}{\"\\n\"}{end}", "myself\t\ne2e\tadmin\n"),
    ("{.items[*].status.addresses[?(@.type==\"another\")].address}", "127.0.0.3"),
    ("{.kind},{.users[1].name}", "List,e2e"),
    ("{.kind,.users[1].name}", "List e2e"),
    ("{.users[0].user.*}", ""),
    ("{.nothere.at.all}", ""),  # a missing key prints nothing, as kubectl's default
    ("name: {.users[1].user.username}!", "name: admin!"),
])
def test_kubectls_examples(template: str, out: str) -> None:
    assert printed(template) == out


def test_kubevirts_address_of_an_interface() -> None:
    vmi = {"status": {"interfaces": [{"name": "default", "ipAddress": "10.244.1.2"},
                                     {"name": "ext", "ipAddress": "192.168.100.2"}], "phase": "Running",
                      "ready": True, "count": 2}}
    assert printed("{.status.interfaces[0].ipAddress}", vmi) == "10.244.1.2"
    assert printed('{.status.interfaces[?(@.name=="ext")].ipAddress}', vmi) == "192.168.100.2"
    assert printed("{.status.phase} {.status.ready} {.status.count}", vmi) == "Running true 2"
    assert printed("{.status.count}", {"status": {"count": 2}}) == "2"


@pytest.mark.parametrize("template", ["{.a", "{range .items[*]}{.x}", "{end}", "{}", "{.items[x]}", "{.a[0}",
                                      "{.a[?(@.b==nope)]}", "{.a b}", "{..}"])
def test_templates_kubectl_refuses_are_typed_errors(template: str) -> None:
    with pytest.raises(ApiError) as refused:
        jsonpath.parse(template)
    assert refused.value.code is Code.BAD_REQUEST and refused.value.field == "output"


def test_an_index_out_of_range_is_an_error_when_printed() -> None:
    with pytest.raises(ApiError) as refused:
        printed("{.items[5].metadata.name}")
    assert "out of bounds" in refused.value.message


def test_get_takes_name_and_jsonpath_and_refuses_a_bad_template_before_connecting() -> None:
    from ctl import cli, render
    from proto import resources

    args = cli.parser().parse_args(["get", "vmi", "testvm", "-o", "jsonpath={.status.phase}"])
    assert render.is_structured(args.output)
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["get", "vmi", "testvm", "-o", "jsonpath={.status.phase"])
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["get", "vmi", "-o", "template"])
    objs: list[resources.Obj] = [
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "testvm"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}]
    assert render.objects(objs, "name", one=False) == "virtualmachine.kubevirt.io/testvm\nservice/web"
    assert render.objects(objs, "jsonpath={.items[*].metadata.name}", one=False) == "testvm web"
    assert render.objects(objs[:1], "jsonpath={.kind}", one=True) == "VirtualMachine"
    with pytest.raises(ApiError):
        render.structured([{"vm": "testvm", "port": 80}], "name")  # virtbus's own rows have no kubectl name
