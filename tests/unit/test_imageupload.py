"""image-upload's command line as virtctl writes it: what it takes, what it refuses (naming the flag)
before a file is read or a byte sent."""

from __future__ import annotations

import pytest

from ctl import cli, imageupload
from proto.errors import ApiError, Code


def checked(*argv: str) -> tuple[str, int]:
    return imageupload.check(cli.parser().parse_args(["image-upload", *argv]))


def test_virtctls_command_lines() -> None:
    assert checked("dv", "fedora-dv", "--size=10Gi", "--image-path=/images/fedora30.qcow2") == ("10Gi", 10 << 30)
    assert checked("pvc", "fedora-pvc", "--pvc-size", "512Mi", "--image-path", "f.qcow2", "--insecure",
                   "--storage-class", "local", "--access-mode", "ReadWriteOnce", "--volume-mode", "block",
                   "--uploadproxy-url", "https://x") == ("512Mi", 512 << 20)
    assert checked("DV", "d", "--size", "1Gi", "--image-path", "f", "--force-bind", "--node", "node1")[0] == "1Gi"


@pytest.mark.parametrize(("argv", "code", "field"), [
    (["vm", "x", "--size", "1Gi", "--image-path", "f"], Code.BAD_REQUEST, "kind"),
    (["dv", "x", "--size", "1Gi"], Code.BAD_REQUEST, "image-path"),
    (["dv", "x", "--image-path", "f"], Code.BAD_REQUEST, "size"),
    (["dv", "x", "--size", "1Gi", "--pvc-size", "2Gi", "--image-path", "f"], Code.BAD_REQUEST, "size"),
    (["dv", "x", "--size", "lots", "--image-path", "f"], Code.INVALID, "size"),
    (["dv", "x", "--size", "1Ei", "--image-path", "f"], Code.INVALID, "size"),
    (["dv", "x", "--size", "1Gi", "--archive-path", "f.tar"], Code.INVALID, "archive-path"),
    (["dv", "x", "--no-create", "--image-path", "f"], Code.INVALID, "no-create"),
    (["dv", "x", "--size", "1Gi", "--image-path", "f", "--datasource"], Code.INVALID, "datasource"),
    (["dv", "x", "--size", "1Gi", "--image-path", "f", "--default-preference", "fedora"], Code.INVALID, "datasource"),
    (["dv", "x", "--size", "1Gi", "--image-path", "f", "--force-bind"], Code.BAD_REQUEST, "node"),
    (["dv", "../etc", "--size", "1Gi", "--image-path", "f"], Code.INVALID, "name"),
    (["dv", "x", "--size", "1Gi", "--image-path", "f", "--node", "no de"], Code.INVALID, "node")])
def test_what_it_refuses_before_reading_the_file(argv: list[str], code: Code, field: str) -> None:
    with pytest.raises(ApiError) as refused:
        checked(*argv)
    assert refused.value.code is code and refused.value.field == field, refused.value
