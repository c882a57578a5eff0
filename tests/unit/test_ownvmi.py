"""Which of a launcher's own VMI's values are news (launcher.ownvmi.Latest): by the vmis revision each
carries, so a copy trailing what the launcher read never takes it back."""

from __future__ import annotations

from launcher.ownvmi import Latest


def test_only_a_newer_revision_is_news_and_it_becomes_the_last() -> None:
    latest = Latest(0)
    assert latest.news(5)  # the current value, read first
    assert not latest.news(5)  # the same again (its copy, say)
    assert not latest.news(3)  # an older copy, come late
    assert latest.news(7) and latest.revision == 7
    assert not latest.news(6)
