"""Prometheus configs come from the labs' own lists of /metrics: the one-machine lab's, the compose file's."""

from __future__ import annotations

from pathlib import Path

import yaml

from ctl.lab import LabConfig, compose_targets, lab_targets, prometheus_config
from tests.conftest import REPO


def test_the_compose_lab_is_scraped_at_every_listed_service_on_its_fixed_address() -> None:
    compose = yaml.safe_load((REPO / "compose" / "compose.yml").read_text())
    targets = compose_targets(REPO / "compose" / "compose.yml")
    expected = {f"{compose['services'][s]['networks']['lab']['ipv4_address']}:{port}"
                for s, port in compose["x-virtbus-metrics"].items()}
    assert set(targets) == expected and len(targets) == 4  # two schedulers, node1, node2
    for service in ("scheduler", "scheduler-b", "node1", "node2"):  # each listed service really serves there
        assert "0.0.0.0:9100" in compose["services"][service]["command"]


def test_a_service_without_a_fixed_address_is_scraped_by_name(tmp_path: Path) -> None:
    file = tmp_path / "compose.yml"
    file.write_text("x-virtbus-metrics: {node7: 9100}\nservices:\n  node7: {image: x}\n")
    assert compose_targets(file) == ["node7:9100"]


def test_the_config_lists_the_targets_prometheus_reads() -> None:
    cfg = LabConfig("/nonexistent", "vbx", 4222, metrics={"node1": 4001, "scheduler": 4000})
    config = yaml.safe_load(prometheus_config(lab_targets(cfg), "2s"))
    assert config["global"]["scrape_interval"] == "2s"
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:4001", "127.0.0.1:4000"]
