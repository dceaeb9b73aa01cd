"""The keyboard of ``agentwatch top``: the terminal in cbreak mode, keys read from the loop.

``KeyReader`` puts stdin in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still
interrupts) and hands each key to a callback from the event loop's reader, so waiting for
the next scrape and for a key are one wait. The terminal is restored on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from typing import Final

# what a key press sends -> the key's name (arrows send escape sequences)
_SEQUENCES: Final = {
    "\x1b[C": "right",
    "\x1b[D": "left",
    "\x1bOC": "right",
    "\x1bOD": "left",
    "\t": "tab",
    "\x1b[Z": "backtab",
}


def decode(data: str) -> list[str]:
    """The keys in what one read returned: escape sequences whole, else one per char."""
    keys: list[str] = []
    index = 0
    while index < len(data):  # bounded: every step consumes at least one character
        for sequence, name in _SEQUENCES.items():
            if data.startswith(sequence, index):
                keys.append(name)
                index += len(sequence)
                break
        else:
            keys.append(data[index].lower())
            index += 1
    return keys


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """The terminal of ``fd`` in cbreak mode for the block, as it was afterwards."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def read_keys(loop: asyncio.AbstractEventLoop, on_key: Callable[[str], None]) -> Iterator[bool]:
    """Calls ``on_key(name)`` for every key pressed while the block runs; yields whether
    there is a keyboard at all (stdin a terminal)."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()

    def readable() -> None:
        data = os.read(fd, 64).decode("utf-8", errors="replace")
        for key in decode(data):
            on_key(key)

    with cbreak(fd):
        loop.add_reader(fd, readable)
        try:
            yield True
        finally:
            loop.remove_reader(fd)
