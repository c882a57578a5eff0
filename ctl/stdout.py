"""What a command prints for its user: a line at a time, flushed at once, so that a pipe, a `watch` or a
test reading the output sees each line as it is said. Its own module, importing nothing, because every
command says something and a command's start-up is what its user waits for."""

from __future__ import annotations


def say(text: str) -> None:
    print(text, flush=True)
