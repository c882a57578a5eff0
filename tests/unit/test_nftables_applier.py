"""nftables.Applier: a table's script goes to the kernel only when it changed; one that failed is
tried again the next time, never taken as in place."""

from __future__ import annotations

import pytest

from servicekit import nftables


def test_the_same_script_is_applied_once_and_a_failed_one_again(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel: list[tuple[str, str | None]] = []
    refuse = {"bad"}

    def apply(script: str, netns: str | None) -> None:
        if script in refuse:
            raise RuntimeError("nft: refused")
        kernel.append((script, netns))

    monkeypatch.setattr(nftables, "apply", apply)
    rules = nftables.Applier("ns1")
    assert rules.apply("a") is True
    assert rules.apply("a") is False
    assert rules.apply("b") is True
    with pytest.raises(RuntimeError):
        rules.apply("bad")
    assert rules.applied == "b"
    refuse.clear()
    assert rules.apply("bad") is True  # tried again, not taken as in place
    assert kernel == [("a", "ns1"), ("b", "ns1"), ("bad", "ns1")]
