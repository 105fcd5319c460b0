"""The `sentry-extract` command and `python -m sentry_extract`."""

from __future__ import annotations

import os


def main() -> None:
    # Arrow's C++ code reads this once, so before pyarrow loads. Its default, mimalloc,
    # keeps the pages of freed batches: a 200,000-event run peaked at 187 MB with it and
    # at 134 MB with the C library's malloc, for the same CPU (`make bench`).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    from sentry_extract.cli import main as command

    command()


if __name__ == "__main__":
    main()
