"""GETs on kept-alive HTTP/1.1 connections, and the answer the client reads.

httpx's transport (httpcore and h11 underneath) spends about 0.45 ms of CPU on each
request: building and checking a URL object, its headers, two state machines and a
response object; more than the rest of what a page of events costs the client. A
read-only client of one host needs little of it. `KeepAlive` writes the request line and
headers itself and reads the answer framed by Content-Length, by chunks or by the end of
the connection, on connections kept open between requests. It raises httpx's exception
types, so the client turns both ways of sending into our errors in one place.

`HttpxSender` sends through any httpx transport: a proxy the environment names, a test's
mock, a recording or a replay.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode, urlsplit

import httpx

from sentry_extract.model.spec import Params

Timeouts = Mapping[str, float | None]  # httpx's phases: connect, read, write, pool
MAX_HEAD_BYTES = 256 * 1024  # a status line and headers longer than this are refused
READ_BYTES = 256 * 1024  # the most one read of a body asks the socket for
DEFAULT_PORTS = {"http": 80, "https": 443}


class Headers(Mapping[str, str]):
    """Header values by name in any case; a repeated header's values joined by ", "
    (as httpx's `Headers.get` gives them)."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._values: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            present = self._values.get(key)
            self._values[key] = value if present is None else f"{present}, {value}"

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class Answer:
    """A response as the client reads it; `path` is the URL path that was asked."""

    status_code: int
    headers: Headers
    content: bytes
    path: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Sender(Protocol):
    def get(self, target: str, path: str, timeouts: Timeouts) -> Answer:
        """GET `target` (the path and query, encoded); `path` names it in errors."""

    def close(self) -> None: ...


def query_string(params: Params) -> str:
    """The parameters as httpx encodes them: a tuple once per value, in order."""
    return urlencode(
        [
            (key, _text(item))
            for key, value in params.items()
            for item in (value if isinstance(value, tuple | list) else (value,))
        ]
    )


def encoded_path(url: str) -> tuple[str, str]:
    """A URL's path as httpx sends it (encoded), and as httpx reads it back."""
    parsed = httpx.URL(url)
    return parsed.raw_path.decode("ascii"), parsed.path


def _text(value: object) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    return "" if value is None else str(value)


class HttpxSender:
    """GETs through an httpx transport."""

    def __init__(
        self, transport: httpx.BaseTransport, base_url: str, headers: Mapping[str, str]
    ) -> None:
        parts = urlsplit(base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._transport = transport
        self._headers = dict(headers)

    def get(self, target: str, path: str, timeouts: Timeouts) -> Answer:
        request = httpx.Request(
            "GET",
            self._origin + target,
            headers=self._headers,
            extensions={"timeout": dict(timeouts)},
        )
        response = self._transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        headers = Headers(response.headers.multi_items())
        return Answer(response.status_code, headers, response.content, path)

    def close(self) -> None:
        self._transport.close()


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()  # read from the socket, not yet used

    def is_stale(self) -> bool:
        """Readable while idle: the server closed it (or sent what was not asked)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class KeepAlive:
    """GETs to one host (http or https, no proxy) on connections kept for the next request;
    as many connections as requests in flight at once."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str], verify: ssl.SSLContext | bool = True
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http or https URL: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        shown = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port is not None and parts.port != DEFAULT_PORTS[parts.scheme]:
            shown = f"{shown}:{parts.port}"
        lines = [f"Host: {shown}", *(f"{name}: {value}" for name, value in headers.items())]
        self._head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._verify = verify
        self._context: ssl.SSLContext | None = None  # made on the first https connection
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self, target: str, path: str, timeouts: Timeouts) -> Answer:
        request = b"GET " + target.encode("ascii") + b" HTTP/1.1\r\n" + self._head
        connection = self._take() or self._open(timeouts)
        try:
            answer, keep = self._exchange(connection, request, path, timeouts)
        except BaseException:
            connection.close()
            raise
        if keep:
            self._give_back(connection)
        else:
            connection.close()
        return answer

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take(self) -> _Connection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                connection = self._idle.pop()
            if not connection.is_stale():
                return connection
            connection.close()

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(connection)
                return
        connection.close()

    def _open(self, timeouts: Timeouts) -> _Connection:
        timeout = timeouts.get("connect")
        try:
            sock = socket.create_connection((self.host, self.port), timeout)
        except TimeoutError as error:
            raise httpx.ConnectTimeout(str(error) or "timed out") from None
        except OSError as error:
            raise httpx.ConnectError(str(error)) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                sock.settimeout(timeout)
                sock = self._tls().wrap_socket(sock, server_hostname=self.host)
        except TimeoutError as error:
            sock.close()
            raise httpx.ConnectTimeout(str(error) or "timed out") from None
        except OSError as error:  # ssl.SSLError among them: an unknown certificate
            sock.close()
            raise httpx.ConnectError(str(error)) from None
        return _Connection(sock)

    def _tls(self) -> ssl.SSLContext:
        if self._context is None:
            verify = self._verify
            context = (
                verify
                if isinstance(verify, ssl.SSLContext)
                else httpx.create_ssl_context(verify=verify, trust_env=True)
            )
            context.set_alpn_protocols(["http/1.1"])
            self._context = context
        return self._context

    def _exchange(
        self, connection: _Connection, request: bytes, path: str, timeouts: Timeouts
    ) -> tuple[Answer, bool]:
        """Send the request and read its answer; whether the connection can be kept."""
        sock = connection.sock
        try:
            sock.settimeout(timeouts.get("write"))
            sock.sendall(request)
        except TimeoutError:
            raise httpx.WriteTimeout("timed out") from None
        except OSError as error:
            raise httpx.WriteError(str(error) or type(error).__name__) from None
        reader = _Reader(connection, timeouts.get("read"))
        status, version, headers = parse_head(reader.head())
        while 100 <= status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            status, version, headers = parse_head(reader.head())
        body, framed = reader.body(status, headers)
        content = decode_content(body, headers.get("content-encoding"))
        keep = framed and version == "HTTP/1.1" and not _says_close(headers)
        return Answer(status, headers, content, path), keep and not connection.buffer


def _says_close(headers: Headers) -> bool:
    value = headers.get("connection")
    return value is not None and "close" in (token.strip().lower() for token in value.split(","))


class _Reader:
    """Reads one answer from a connection, with the read timeout on each wait."""

    def __init__(self, connection: _Connection, timeout: float | None) -> None:
        self.connection = connection
        self.buffer = connection.buffer
        self.connection.sock.settimeout(timeout)

    def _receive(self, size: int = READ_BYTES) -> bytes:
        try:
            return self.connection.sock.recv(size)
        except TimeoutError:
            raise httpx.ReadTimeout("timed out") from None
        except OSError as error:
            raise httpx.ReadError(str(error) or type(error).__name__) from None

    def head(self) -> bytes:
        """The status line and headers, without the blank line that ends them."""
        searched = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n", max(0, searched - 3))
            if end >= 0:
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                return head
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError("the answer's headers are too long")
            searched = len(self.buffer)
            chunk = self._receive()
            if not chunk:
                if not self.buffer:  # as httpcore says it
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response."
                    )
                raise httpx.RemoteProtocolError("the server closed the connection mid-answer")
            self.buffer += chunk

    def exactly(self, size: int) -> bytes:
        if len(self.buffer) >= size:
            data = bytes(self.buffer[:size])
            del self.buffer[:size]
            return data
        parts = [bytes(self.buffer)]
        missing = size - len(self.buffer)
        self.buffer.clear()
        while missing > 0:
            chunk = self._receive(min(missing, READ_BYTES))
            if not chunk:
                raise httpx.RemoteProtocolError(
                    "the server closed the connection before the whole body was sent"
                )
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)

    def line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError("a chunk's size line is too long")
            chunk = self._receive()
            if not chunk:
                raise httpx.RemoteProtocolError("the server closed the connection mid-chunk")
            self.buffer += chunk

    def to_the_end(self) -> bytes:
        parts = [bytes(self.buffer)]
        self.buffer.clear()
        while chunk := self._receive():
            parts.append(chunk)
        return b"".join(parts)

    def body(self, status: int, headers: Headers) -> tuple[bytes, bool]:
        """The body, and whether its end was framed (so the connection can be kept)."""
        if status in (204, 304):
            return b"", True
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.split(",")[-1].strip().lower() != "chunked":
                raise httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {coding!r}")
            return self.chunked(), True
        length = headers.get("content-length")
        if length is None:
            return self.to_the_end(), False
        values = {value.strip() for value in length.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise httpx.RemoteProtocolError(f"a Content-Length that is not one number: {length!r}")
        return self.exactly(int(values.pop())), True

    def chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_text = self.line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"a chunk size that is not hex: {size_text!r}"
                ) from None
            if size == 0:
                while self.line():  # trailers, up to the blank line
                    pass
                return b"".join(parts)
            parts.append(self.exactly(size))
            if self.exactly(2) != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk not followed by CRLF")


def parse_head(head: bytes) -> tuple[int, str, Headers]:
    """Status, HTTP version and headers of an answer's head; a malformed one is a
    RemoteProtocolError. Values are read as ASCII, else UTF-8, else Latin-1 (httpx's
    order)."""
    text = _header_text(head)
    status_line, *lines = text.split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
    pairs = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise httpx.RemoteProtocolError(f"a malformed header line: {line[:80]!r}")
        pairs.append((name, value.strip(" \t")))
    return int(code), version, Headers(pairs)


def _header_text(head: bytes) -> str:
    for encoding in ("ascii", "utf-8"):
        try:
            return head.decode(encoding)
        except UnicodeDecodeError:
            continue
    return head.decode("latin-1")


def decode_content(body: bytes, encoding: str | None) -> bytes:
    """The body without its gzip or deflate encoding (asked for or not, as httpx would);
    other encodings are left as they came."""
    if not encoding or not body:
        return body
    for coding in reversed([part.strip().lower() for part in encoding.split(",")]):
        try:
            if coding in ("gzip", "x-gzip"):
                body = zlib.decompress(body, zlib.MAX_WBITS | 16)
            elif coding == "deflate":
                try:
                    body = zlib.decompress(body)
                except zlib.error:
                    body = zlib.decompress(body, -zlib.MAX_WBITS)
        except zlib.error as error:
            raise httpx.RemoteProtocolError(
                f"a body whose {coding} encoding is broken: {error}"
            ) from None
    return body
