"""The image cache's planner: what goes, in which order, and what never does."""

from __future__ import annotations

from pathlib import Path

from handler.imagecache import MIN_AGE_S, STALE_PART_S, CacheFile, Why, _says_deleted, cache_key, plan

NOW = 1_000_000.0
GiB = 1 << 30


def entry(n: int, *, size: int = GiB, idle: float = 3600.0, partial: bool = False) -> CacheFile:
    key = f"{n:02x}" * 32
    name = f".{key[2:]}.img.42.part" if partial else f"{key[2:]}.img"
    return CacheFile(Path("/c") / key[:2] / name, key, size, NOW - idle, partial)


def removed(files: list[CacheFile], *, store: set[int], used: frozenset[int] = frozenset(),
            bound: int = 100 * GiB) -> dict[int, Why]:
    keys = {f"{n:02x}" * 32 for n in store}
    in_use = {f"{n:02x}" * 32 for n in used}
    return {int(f.key[:2], 16): why for f, why in plan(files, in_store=keys, in_use=in_use, bound=bound, now=NOW)}


def test_an_entry_whose_image_was_deleted_goes_unless_used() -> None:
    files = [entry(1), entry(2), entry(3)]
    assert removed(files, store={1}, used=frozenset({3})) == {2: Why.GONE}


def test_nothing_goes_while_everything_is_in_the_store_and_under_the_bound() -> None:
    assert removed([entry(1), entry(2)], store={1, 2}) == {}


def test_over_the_bound_the_least_recently_used_unused_go_until_under() -> None:
    files = [entry(1, idle=100), entry(2, idle=5000), entry(3, idle=9000), entry(4, idle=7000)]
    # 4 GiB held, 2 allowed: the two oldest unused go; 3 (the oldest) is in use and stays
    assert removed(files, store={1, 2, 3, 4}, used=frozenset({3}), bound=2 * GiB) == {4: Why.LRU, 2: Why.LRU}


def test_gone_entries_count_first_towards_the_bound() -> None:
    files = [entry(1, idle=5000), entry(2, idle=9000), entry(3, idle=100)]
    assert removed(files, store={1, 3}, bound=2 * GiB) == {2: Why.GONE}


def test_an_entry_in_use_never_goes_even_over_the_bound() -> None:
    assert removed([entry(1), entry(2)], store=set(), used=frozenset({1, 2}), bound=0) == {}


def test_a_young_entry_is_kept_a_launcher_may_be_about_to_use_it() -> None:
    files = [entry(1, idle=MIN_AGE_S - 1), entry(2, idle=MIN_AGE_S + 1)]
    assert removed(files, store=set(), bound=0) == {2: Why.GONE}


def test_a_fetch_under_way_is_kept_and_an_abandoned_one_goes() -> None:
    files = [entry(1, partial=True, idle=5), entry(2, partial=True, idle=STALE_PART_S + 1)]
    assert removed(files, store=set(), bound=0) == {2: Why.STALE_PART}


def test_a_fetch_under_way_counts_towards_the_bound() -> None:
    files = [entry(1, partial=True, idle=5, size=3 * GiB), entry(2, idle=500)]
    assert removed(files, store={1, 2}, bound=3 * GiB) == {2: Why.LRU}


def test_cache_key_only_for_cache_entries() -> None:
    key = "ab" + "c" * 62
    cache = Path("/state/images")
    assert cache_key(cache, cache / "ab" / f"{'c' * 62}.img") == key
    assert cache_key(cache, Path("/etc") / "ab" / f"{'c' * 62}.img") is None
    assert cache_key(cache, cache / "zz" / f"{'c' * 62}.img") is None
    assert cache_key(cache, cache / "ab" / f"{'c' * 61}.img") is None
    assert cache_key(cache, cache / "ab" / "x" / f"{'c' * 62}.img") is None


def test_only_an_objects_deletion_wakes_a_sweep() -> None:
    assert _says_deleted(b'{"name": "img", "bucket": "images", "deleted": true, "size": 0}')
    assert not _says_deleted(b'{"name": "img", "bucket": "images", "size": 10, "digest": "SHA-256=x"}')
    for written_by_hand in (b"", b"not json", b'{"deleted": "yes"}', b"[true]", b'{"deleted": null}'):
        assert not _says_deleted(written_by_hand)
