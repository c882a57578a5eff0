"""The repository's examples/ (what the lab and the README apply) are the seed manifests: each parses
as it is, and each says what the shared seed of the same name says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from proto import instancetypes, snapshotmanifest
from proto.manifest import INSTANCE_KIND, parse_instance, parse_manifest
from tests.conftest import EXAMPLES, REPO

OURS = sorted((REPO / "examples").glob("*.yaml"))


def test_the_lab_has_its_examples() -> None:
    assert {p.name for p in OURS} >= {"testvm-masquerade.yaml", "testvm-2-secondary.yaml", "multus-br.yaml"}
    assert "examples" in (REPO / "scripts" / "lab.sh").read_text()


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.name)
def test_each_example_parses_as_the_seed_does(path: Path) -> None:
    data = path.read_bytes()
    doc = yaml.safe_load(data)
    if doc.get("kind") in snapshotmanifest.KINDS:
        asked = snapshotmanifest.parse(doc)
        assert getattr(asked, "vm", None) == "keeper", "against examples/testvm-persistent.yaml's VM"
        return
    if instancetypes.is_instancetype(doc):
        assert instancetypes.parse(doc).name == doc["metadata"]["name"]
        return
    if "instancetype" in doc.get("spec", {}):  # sized as the API sizes it before it parses it
        data = json.dumps(instancetypes.expand(doc, instancetypes.COMMON.get)).encode()
    is_instance = doc.get("kind") == INSTANCE_KIND
    ours = (parse_instance if is_instance else parse_manifest)(data, content_type="yaml")
    seed = EXAMPLES / path.name
    if seed.exists():  # beside a clone there may be no shared/: then ours alone is checked
        assert ours == (parse_instance if is_instance else parse_manifest)(seed.read_bytes(), content_type="yaml")
