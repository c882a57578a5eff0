"""Kubernetes quantities to bytes: decimal and binary suffixes, rounded up, nothing else."""

import pytest

from proto.quantity import InvalidQuantity, format_bytes, parse_bytes


@pytest.mark.parametrize(("text", "value"), [
    ("64M", 64_000_000),
    ("64Mi", 67_108_864),
    ("1.5Gi", 1_610_612_736),
    ("1k", 1000),
    ("1Ki", 1024),
    ("2Ti", 2 * 2**40),
    ("1E", 10**18),
    ("512", 512),
    ("0", 0),
    (" 16Mi ", 16 * 2**20),
    ("0.5k", 500),
    ("1.0001k", 1001),  # rounded up, like Kubernetes does for memory
    (512, 512),
    (0, 0),
])
def test_parses(text: str | int, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", [
    "", "M", "Mi", "abc", "64 M", "64MB", "64m", "1K", "1e3", "-1", "+1", "1.5.5", ".5Gi", "1,5Gi", "0x10",
    -1, True, False,
])
def test_refuses(text: str | int) -> None:
    with pytest.raises(InvalidQuantity):
        parse_bytes(text)


@pytest.mark.parametrize(("value", "text"), [
    (2**30, "1Gi"), (64 * 2**20, "64Mi"), (3072, "3Ki"), (1536, "1536"), (1000, "1000"),
])
def test_formats(value: int, text: str) -> None:
    assert format_bytes(value) == text
    assert parse_bytes(text) == value
