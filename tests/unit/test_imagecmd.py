"""The upload's progress line and its hashing reader."""

from __future__ import annotations

import hashlib
import io

from ctl.imagecmd import HashingReader, human, progress_line


def test_progress_line_says_bytes_percent_and_rate() -> None:
    line = progress_line(512 << 20, 1 << 30, 4.0, width=10)
    assert line == "[#####.....]  50%  512.0 MiB / 1.0 GiB  128.0 MiB/s"
    assert progress_line(0, 0, 0.0, width=4).startswith("[####] 100%")
    assert human(1) == "1 byte" and human(1536) == "1.5 KiB" and human(100) == "100 B"


def test_the_reader_hashes_and_counts_what_it_hands_out() -> None:
    data = bytes(range(256)) * 1000
    reader = HashingReader(io.BytesIO(data))
    chunk = bytearray(7000)
    out = bytearray()
    while n := reader.readinto(chunk):
        out += chunk[:n]
    assert bytes(out) == data and reader.done == len(data)
    assert reader.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
