"""A host that accepts connections and never answers: a hung server, a wrong port behind
a proxy, a firewall that swallows the request. Tests and hand measurements use it."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class SilentHost:
    """`with SilentHost() as host:` listens on a free loopback port (`host.base_url`),
    accepts every connection, reads nothing and sends nothing until it is closed."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.1)  # so that the accepting thread sees a close
        self._connections: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-host", daemon=True)
        address, bound_port = self._listener.getsockname()[:2]
        self.base_url = f"http://{address}:{bound_port}"

    @property
    def accepted(self) -> int:
        """Connections taken so far."""
        return len(self._connections)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            self._connections.append(connection)  # held open, never answered

    def __enter__(self) -> SilentHost:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for connection in self._connections:
            connection.close()
