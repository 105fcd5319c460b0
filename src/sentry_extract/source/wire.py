"""GETs on kept-alive HTTP/1.1 connections, and the answer the client reads.

httpx's transport (httpcore and h11 underneath) spends about 1 ms of CPU on a request
for a page of events: building and checking a URL object, its headers, two state
machines and a response object; urllib3's pool spends about 0.3 ms, most of it in
http.client reading the answer line by line. libcurl does the exchange in C, in about
0.06 ms with pycurl's calls (`make bench`, docs/performance.md). `CurlSender` sends
GETs to the one host through libcurl, on connections kept open between requests.

`HttpxSender` sends through any httpx transport: a proxy the environment names, a test's
mock, a recording or a replay. httpx is imported only then: with what it brings (httpcore,
h11, idna, `email`) it took 35 to 43 ms of CPU and 5 to 6 MB to import beside pyarrow
(which brings `ssl`), 3% of a 10,000-event run's CPU.

Both raise `errors.TransportError`s when no answer comes, named as httpx names
its own (messages show the name: "no answer within 2s (ReadTimeout)"), so the client
turns both ways of sending into our errors in one place.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlencode, urlsplit

import certifi
import pycurl

from sentry_extract.errors import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TransportError,
)
from sentry_extract.model.spec import Params

if TYPE_CHECKING:
    import httpx

Timeouts = Mapping[str, float | None]  # httpx's phases: connect, read, write, pool
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

    @classmethod
    def of_lines(cls, lines: list[bytes]) -> Headers:
        """The last answer's headers (a 100 Continue's head may come first), from the
        lines libcurl passes: one a header, the status line first."""
        start = 0
        for index, line in enumerate(lines):
            if line.startswith(b"HTTP/"):
                start = index + 1
        fields = (line.decode("latin-1").partition(":") for line in lines[start:])
        return cls((name.strip(), value.strip()) for name, colon, value in fields if colon)

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
    headers: Mapping[str, str]  # any case; a repeated header's values joined by ", "
    content: bytes
    path: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Sender(Protocol):
    def get(self, target: str, path: str, timeouts: Timeouts) -> Answer:
        """GET `target` (the path and query, encoded); `path` names it in errors."""

    def close(self) -> None: ...


KNOWN_PAIRS = 4096  # encoded `key=value` pairs kept


def query_string(params: Params, known: dict[tuple[str, str], str] | None = None) -> str:
    """The parameters as httpx encodes them: a tuple once per value, in order.

    A list's pages differ only by their cursor: each `key=value` pair is encoded once
    and kept in `known` (encoding a page's ten parameters anew took longer than
    libcurl's exchange of the page)."""
    pairs = known if known is not None else {}
    encoded: list[str] = []
    for key, value in params.items():
        for item in value if isinstance(value, tuple | list) else (value,):
            text = _text(item)
            pair = pairs.get((key, text))
            if pair is None:
                pair = urlencode(((key, text),))
                if len(pairs) >= KNOWN_PAIRS:
                    pairs.clear()
                pairs[(key, text)] = pair
            encoded.append(pair)
    return "&".join(encoded)


# What a path keeps as it is, as httpx encodes one (WHATWG's path percent-encode set):
# letters, digits and the printable ASCII but space " # < > ? ` { }; "%XX" stays too.
PATH_KEPT = frozenset(chr(code) for code in range(0x21, 0x7F) if chr(code) not in '"#<>?`{}')
PERCENT_ESCAPE = re.compile("%[A-Fa-f0-9]{2}")


def encoded_path(url: str) -> tuple[str, str]:
    """A URL's path as httpx sends it (encoded), and as httpx reads it back: "." and
    ".." segments resolved, then every character outside PATH_KEPT percent-encoded as
    UTF-8, an escape already there kept. (No query: the client adds its own.)"""
    path = _without_dot_segments(urlsplit(url).path) or "/"
    pieces: list[str] = []
    start = 0
    for escape in PERCENT_ESCAPE.finditer(path):
        pieces.append(_percent_encoded(path[start : escape.start()]))
        pieces.append(escape.group())
        start = escape.end()
    pieces.append(_percent_encoded(path[start:]))
    encoded = "".join(pieces)
    return encoded, unquote(encoded)


def _percent_encoded(text: str) -> str:
    if all(character in PATH_KEPT for character in text):
        return text
    return "".join(
        character
        if character in PATH_KEPT
        else "".join(f"%{byte:02X}" for byte in character.encode("utf-8"))
        for character in text
    )


def _without_dot_segments(path: str) -> str:
    """RFC 3986's remove_dot_segments, as httpx applies it to a URL with a host."""
    segments = path.split("/")
    if "." not in segments and ".." not in segments:
        return path
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept and kept != [""]:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    return "/".join(kept)


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
        import httpx

        request = httpx.Request(
            "GET",
            self._origin + target,
            headers=self._headers,
            extensions={"timeout": dict(timeouts)},
        )
        try:
            response = self._transport.handle_request(request)
            try:
                response.read()
            finally:
                response.close()
        except httpx.TransportError as error:
            raise of_httpx(error) from error
        headers = Headers(response.headers.multi_items())
        return Answer(response.status_code, headers, response.content, path)

    def close(self) -> None:
        self._transport.close()


def of_httpx(error: httpx.TransportError) -> TransportError:
    """Ours for httpx's, under httpx's name. A refused certificate is found in the
    errors it was raised from (httpcore's, then Python's `ssl` error)."""
    import ssl

    import httpx

    text = str(error)
    if isinstance(error, httpx.ConnectTimeout):
        return ConnectTimeout(text)
    if isinstance(error, httpx.TimeoutException):  # read, write, or a pooled connection
        return ReadTimeout(text, type(error).__name__)
    if isinstance(error, httpx.ConnectError):
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
            cause = cause.__cause__ or cause.__context__
        return ConnectError(text, certificate_refused=cause is not None)
    if isinstance(error, httpx.ReadError):
        return ReadError(text)
    if isinstance(error, httpx.RemoteProtocolError):
        return RemoteProtocolError(text)
    return TransportError(text, type(error).__name__)


class CurlSender:
    """GETs to one host (http or https, no proxy) through libcurl: a handle per request
    in flight (as many as `connections`), each keeping its connection for the next
    request; neither retried nor redirected (the client's policy decides); gzip and
    deflate asked for and decoded.

    Certificates are checked against `ca_bundle`, else as httpx checks them:
    `SSL_CERT_FILE` or `SSL_CERT_DIR`, else certifi's bundle. The read timeout bounds
    the whole exchange, from connecting to the answer's last byte (libcurl has no
    timeout between bytes finer than a second), so a deadline's bound holds to the
    millisecond.

    libcurl sends a request once more, at once, on a new connection when a kept one
    died before any byte of its answer (a server's idle close crossing the request);
    the client counts it as one request, not a retry.

    A request asked for from the main thread (the run's first, `conns test`) is sent
    from a thread of its own while the main thread waits for it: Python runs a signal's
    handler in the main thread only, between its own instructions, so Ctrl-C or SIGTERM
    would otherwise wait inside libcurl for the answer or the timeout.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        ca_bundle: str | None = None,
        connections: int = 1,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http or https URL: {base_url!r}")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._headers = [f"{name}: {value}" for name, value in headers.items()]
        self._authority = _authority(ca_bundle) if parts.scheme == "https" else None
        self._connections = max(1, connections)
        self._idle: list[pycurl.Curl] = []
        self._made: list[pycurl.Curl] = []
        self._lock = threading.Lock()

    def get(self, target: str, path: str, timeouts: Timeouts) -> Answer:
        if threading.current_thread() is not threading.main_thread():
            return self._exchange(target, path, timeouts)
        answer: Future[Answer] = Future()

        def exchange() -> None:
            try:
                answer.set_result(self._exchange(target, path, timeouts))
            except BaseException as error:
                answer.set_exception(error)

        threading.Thread(target=exchange, name="request", daemon=True).start()
        return answer.result()  # a signal's handler runs, and may raise, while it waits

    def _exchange(self, target: str, path: str, timeouts: Timeouts) -> Answer:
        handle = self._take()
        body: list[bytes] = []
        head: list[bytes] = []
        try:
            handle.setopt(pycurl.URL, self._origin + target)
            handle.setopt(pycurl.WRITEFUNCTION, body.append)
            handle.setopt(pycurl.HEADERFUNCTION, head.append)
            _set_timeouts(handle, timeouts)
            try:
                handle.perform()
            except pycurl.error as error:
                raise transport_error(handle, error) from None
            status = handle.getinfo(pycurl.RESPONSE_CODE)
        finally:
            handle.setopt(pycurl.WRITEFUNCTION, _discard)  # the lists are not kept alive
            handle.setopt(pycurl.HEADERFUNCTION, _discard)
            self._give_back(handle)
        return Answer(status, Headers.of_lines(head), b"".join(body), path)

    def close(self) -> None:
        with self._lock:
            made, self._made, self._idle = self._made, [], []
        for handle in made:
            handle.close()

    def _take(self) -> pycurl.Curl:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)  # timeouts without SIGALRM: requests run in threads
        handle.setopt(pycurl.PROXY, "")  # never the environment's proxy: httpx reaches those
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.ACCEPT_ENCODING, "gzip, deflate")
        handle.setopt(pycurl.HTTPHEADER, self._headers)
        handle.setopt(pycurl.MAXCONNECTS, 1)
        if self._authority is not None:
            option, value = self._authority
            handle.setopt(option, value)
        with self._lock:
            self._made.append(handle)
        return handle

    def _give_back(self, handle: pycurl.Curl) -> None:
        with self._lock:
            if handle in self._made and len(self._idle) < self._connections:
                self._idle.append(handle)
                return
        handle.close()


def _authority(ca_bundle: str | None) -> tuple[int, str]:
    """The certificates a TLS server is checked against: libcurl's option and its value."""
    if ca_bundle:
        return pycurl.CAINFO, ca_bundle
    if os.environ.get("SSL_CERT_FILE"):
        return pycurl.CAINFO, os.environ["SSL_CERT_FILE"]
    if os.environ.get("SSL_CERT_DIR"):
        return pycurl.CAPATH, os.environ["SSL_CERT_DIR"]
    return pycurl.CAINFO, certifi.where()


def _set_timeouts(handle: pycurl.Curl, timeouts: Timeouts) -> None:
    handle.setopt(pycurl.CONNECTTIMEOUT_MS, _milliseconds(timeouts.get("connect")))
    handle.setopt(pycurl.TIMEOUT_MS, _milliseconds(timeouts.get("read")))


def _milliseconds(seconds: float | None) -> int:
    """libcurl's timeout option: 0 waits forever."""
    return 0 if seconds is None else max(1, math.ceil(seconds * 1000))


def _discard(data: bytes) -> None:
    return None


def transport_error(handle: pycurl.Curl, error: pycurl.error) -> TransportError:
    """The failure libcurl's error stands for, with its text and what the system said."""
    code = error.args[0] if error.args else 0
    text = (error.args[1] if len(error.args) > 1 else "") or f"libcurl error {code}"
    number = handle.getinfo(pycurl.OS_ERRNO)
    if number:  # what the system said: "Connection refused", "Connection reset by peer"
        text = f"{text} ({os.strerror(number)})"
    if code in (pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_HOST):
        return ConnectError(text)
    if code == pycurl.E_OPERATION_TIMEDOUT:
        if handle.getinfo(pycurl.REQUEST_SIZE) == 0:  # the request was never sent
            return ConnectTimeout(text)
        return ReadTimeout(text)
    if code in (pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CACERT_BADFILE):
        return ConnectError(text, certificate_refused=True)
    if code == pycurl.E_SSL_CONNECT_ERROR:
        return ConnectError(text)
    if code == pycurl.E_GOT_NOTHING:  # as httpcore says it
        return RemoteProtocolError("Server disconnected without sending a response.")
    if code in (pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR):  # reset by the server
        return ReadError(text)
    if code == pycurl.E_BAD_CONTENT_ENCODING:
        return RemoteProtocolError(f"a body whose encoding is broken: {text}")
    return RemoteProtocolError(text)
