"""The repository's examples/ (what the lab and the README apply) are the seed manifests: each parses
as it is, and each says what the shared seed of the same name says."""

from __future__ import annotations

from pathlib import Path

import pytest

from proto.manifest import parse_manifest
from tests.conftest import EXAMPLES, REPO

OURS = sorted((REPO / "examples").glob("*.yaml"))


def test_the_lab_has_its_examples() -> None:
    assert {p.name for p in OURS} >= {"testvm-masquerade.yaml", "testvm-2-secondary.yaml", "multus-br.yaml"}
    assert "examples" in (REPO / "scripts" / "lab.sh").read_text()


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.name)
def test_each_example_parses_as_the_seed_does(path: Path) -> None:
    ours = parse_manifest(path.read_bytes(), content_type="yaml")
    seed = EXAMPLES / path.name
    if seed.exists():  # beside a clone there may be no shared/: then ours alone is checked
        assert ours == parse_manifest(seed.read_bytes(), content_type="yaml")
