"""The `sentry-extract` command and `python -m sentry_extract`."""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters
M_ARENA_MAX = -8


def _release_memory_eagerly() -> None:
    """glibc: blocks of 1 MB and more are mapped on their own, so freeing a batch gives its
    memory back, and two arenas, not sixteen per core. Without this, glibc raises its
    threshold after the first large free, and the heap keeps every batch's holes: 12,000
    events of 85 KB peaked at 275 MB, and at 194 MB with it. Elsewhere: nothing to do."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


def main() -> None:
    # Arrow's C++ code reads this once, so before pyarrow loads. Its default, mimalloc,
    # keeps the pages of freed batches: a 200,000-event run peaked at 187 MB with it and
    # at 134 MB with the C library's malloc, for the same CPU (`make bench`).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    _release_memory_eagerly()
    # `import httpx` also imports httpx's own command line (click, pygments, rich's
    # progress bars and syntax highlighting), unless its module cannot be imported, which
    # httpx allows for. This command never runs httpx's: 5% of its start-up instructions.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from sentry_extract.cli import main as command

    command()


if __name__ == "__main__":
    main()
