"""GETs on kept-alive HTTP/1.1 connections, and the answer the client reads.

httpx's transport (httpcore and h11 underneath) spends about 1 ms of CPU on a request
for a page of events: building and checking a URL object, its headers, two state
machines and a response object. urllib3's connection pool spends less than half of
that (`make bench`). `Urllib3Sender` sends GETs to the one host through it, on
connections kept open between requests, and raises httpx's exception types, so the
client turns both ways of sending into our errors in one place.

`HttpxSender` sends through any httpx transport: a proxy the environment names, a test's
mock, a recording or a replay.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import httpx
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from sentry_extract.model.spec import Params

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


class Urllib3Sender:
    """GETs to one host (http or https, no proxy) through urllib3's pool: connections are
    kept for the next request, as many as `connections` (the requests in flight at once),
    neither retried nor redirected (the client's policy decides), gzip and deflate bodies
    decoded."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        verify: ssl.SSLContext | bool = True,
        connections: int = 1,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http or https URL: {base_url!r}")
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        self._pool: urllib3.HTTPConnectionPool
        pool_options: dict[str, Any] = {
            "maxsize": max(1, connections),
            "headers": dict(headers),
            "retries": False,
        }
        if parts.scheme == "https":
            context = (
                verify
                if isinstance(verify, ssl.SSLContext)
                else httpx.create_ssl_context(verify=verify, trust_env=True)  # SSL_CERT_FILE
            )
            self._pool = urllib3.HTTPSConnectionPool(
                parts.hostname, port, ssl_context=context, **pool_options
            )
        else:
            self._pool = urllib3.HTTPConnectionPool(parts.hostname, port, **pool_options)
        self._timeout: tuple[Timeouts, urllib3.Timeout] | None = None  # the last one made

    def get(self, target: str, path: str, timeouts: Timeouts) -> Answer:
        try:
            response = self._pool.urlopen(
                "GET",
                target,
                retries=False,
                redirect=False,
                timeout=self._urllib3_timeout(timeouts),
                preload_content=True,
                decode_content=True,
            )
        except HTTPError as error:
            raise httpx_error(error) from None
        return Answer(response.status, response.headers, response.data, path)

    def close(self) -> None:
        self._pool.close()

    def _urllib3_timeout(self, timeouts: Timeouts) -> urllib3.Timeout:
        """urllib3's timeout of these phases; the same phases again make no new one."""
        known = self._timeout
        if known is not None and known[0] == timeouts:
            return known[1]
        made = urllib3.Timeout(connect=timeouts.get("connect"), read=timeouts.get("read"))
        self._timeout = (dict(timeouts), made)
        return made


def httpx_error(error: HTTPError) -> httpx.TransportError:
    """The httpx exception that stands for urllib3's, with its text (a certificate's
    verification failure is read from it)."""
    text = str(error) or type(error).__name__
    if isinstance(error, NewConnectionError):  # refused, or a name that does not resolve
        return httpx.ConnectError(text)
    if isinstance(error, ConnectTimeoutError):
        return httpx.ConnectTimeout(text)
    if isinstance(error, ReadTimeoutError):
        return httpx.ReadTimeout(text)
    if isinstance(error, SSLError):
        return httpx.ConnectError(text)
    if isinstance(error, ProtocolError):
        cause = error.args[1] if len(error.args) > 1 else None
        if isinstance(cause, http.client.RemoteDisconnected):  # as httpcore says it
            return httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if isinstance(cause, OSError):  # reset by the server
            return httpx.ReadError(text)
        return httpx.RemoteProtocolError(text)
    if isinstance(error, DecodeError):
        return httpx.RemoteProtocolError(f"a body whose encoding is broken: {text}")
    return httpx.RemoteProtocolError(text)
