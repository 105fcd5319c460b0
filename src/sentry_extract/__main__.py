"""The `sentry-extract` command and `python -m sentry_extract`."""

from __future__ import annotations

import ctypes
import logging
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


def prepare_process() -> None:
    """What the process needs set before the command's modules load."""
    # Arrow's C++ code reads this once, so before pyarrow loads. Its default, mimalloc,
    # keeps the pages of freed batches: a 200,000-event run peaked at 187 MB with it and
    # at 134 MB with the C library's malloc, for the same CPU (`make bench`).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    _release_memory_eagerly()
    # `import httpx` also imports httpx's own command line (click, pygments, rich's
    # progress bars and syntax highlighting), unless its module cannot be imported, which
    # httpx allows for. This command never runs httpx's: 5% of its start-up instructions.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def main() -> None:
    prepare_process()
    from sentry_extract.cli import main as command

    try:
        command()
    except SystemExit as exit:
        _end(exit.code)
    _end(0)


def _end(code: object) -> None:
    """The process ends once what it wrote is flushed, without the interpreter's own
    teardown: freeing every module's objects one by one (pyarrow's, psycopg's, httpx's)
    took about 70 ms of CPU, 5% of a 10,000-event run, for nothing the command still
    needs. The command has joined its threads and closed its files and connections."""
    if isinstance(code, str):  # how `sys.exit("message")` ends: the message, status 1
        print(code, file=sys.stderr)
        code = 1
    status = code if isinstance(code, int) else 0 if code is None else 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe, a closed file
            status = status or 1
    os._exit(status)


if __name__ == "__main__":
    main()
