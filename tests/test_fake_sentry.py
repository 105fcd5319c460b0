"""The built-in fake Sentry run as a command (`python -m sentry_extract.testing.fake_sentry`)."""

from __future__ import annotations

import socket
import subprocess
import sys


def test_the_fake_given_a_busy_port_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = subprocess.run(
            [sys.executable, "-m", "sentry_extract.testing.fake_sentry", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr == (
        f"error: cannot serve on 127.0.0.1:{port}: the address is already in use "
        "(choose another --port)\n"
    )
