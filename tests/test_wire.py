"""GETs through libcurl (`wire.CurlSender`), against a server on loopback that
answers exactly the bytes each test gives it: reuse, a server that closes, resets and
timeouts as httpx's errors, compressed bodies, and the request target httpx would have
sent."""

from __future__ import annotations

import gzip
import socket
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sentry_extract.errors import NetworkError
from sentry_extract.source import wire
from sentry_extract.source.client import ClientSettings, RequestCounter, SentryClient
from sentry_extract.source.ratelimit import RequestGate, TokenBucket
from sentry_extract.source.retry import RetryPolicy
from sentry_extract.source.wire import CurlSender, encoded_path, query_string

TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
HANG = b"hang"  # an answer that never comes
CLOSE = b"close"  # the connection closed instead of an answer
RESET = b"reset"  # the connection reset (RST) instead of an answer
THEN_CLOSE = b"<then close>"  # ending an answer: the connection is closed once it is sent


@dataclass
class ScriptedServer:
    """Answers each request with the next scripted bytes; counts connections."""

    answers: deque[bytes] = field(default_factory=deque)
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    listener: socket.socket = field(default_factory=socket.socket)
    release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        with connection:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                self.requests.append(head)
                answer = self.answers.popleft()
                if answer == HANG:
                    self.release.wait(30)
                    return
                if answer == CLOSE:
                    return
                if answer == RESET:  # closing with SO_LINGER 0 sends RST
                    connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    return
                connection.sendall(answer.removesuffix(THEN_CLOSE))
                if answer.endswith(THEN_CLOSE) or ends_with_the_connection(answer):
                    return

    def stop(self) -> None:
        self.release.set()
        self.listener.close()


def ends_with_the_connection(answer: bytes) -> bool:
    parts = answer.split(b"\r\n\r\n")  # a 100 Continue may come before the answer's head
    head = next(part for part in parts if not part.startswith(b"HTTP/1.1 1"))
    framed = b"Content-Length" in head or b"chunked" in head
    return b"Connection: close" in head or not framed


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    running = ScriptedServer()
    running.start()
    yield running
    running.stop()


def ok(body: bytes, *headers: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


Maker = Callable[["ScriptedServer"], CurlSender]


@pytest.fixture
def sender_of() -> Iterator[Callable[[ScriptedServer], CurlSender]]:
    made: list[CurlSender] = []

    def make(server: ScriptedServer) -> CurlSender:
        made.append(CurlSender(server.base_url, {"Authorization": "Bearer sntryu_test_wire"}))
        return made[-1]

    yield make
    for sender in made:
        sender.close()


def test_requests_share_one_kept_alive_connection(server: ScriptedServer, sender_of: Maker) -> None:
    server.answers.extend(ok(f"[{index}]".encode()) for index in range(5))
    sender = sender_of(server)
    bodies = [sender.get("/api/0/x/?a=1", "/api/0/x/", TIMEOUTS).content for _ in range(5)]
    assert bodies == [b"[0]", b"[1]", b"[2]", b"[3]", b"[4]"]
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /api/0/x/?a=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.base_url.rsplit(':', 1)[1]}".encode() in server.requests[0]
    assert b"Authorization: Bearer sntryu_test_wire" in server.requests[0]


def test_as_many_connections_are_kept_as_requests_in_flight(server: ScriptedServer) -> None:
    sender = CurlSender(server.base_url, {}, connections=3)
    server.answers.extend(ok(b"[]") for _ in range(9))
    arrived = threading.Barrier(3)

    def three_requests() -> None:
        arrived.wait()
        for _ in range(3):
            sender.get("/x", "/x", TIMEOUTS)

    threads = [threading.Thread(target=three_requests) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sender.close()
    assert len(server.requests) == 9
    assert server.connections <= 3


def test_headers_are_read_in_any_case_and_repeats_joined(
    server: ScriptedServer, sender_of: Maker
) -> None:
    server.answers.append(ok(b"[]", "Link: <a>; rel=x", "link: <b>; rel=y", "X-Thing:  v"))
    answer = sender_of(server).get("/x", "/x", TIMEOUTS)
    assert answer.headers.get("LINK") == "<a>; rel=x, <b>; rel=y"
    assert answer.headers["x-thing"] == "v"
    assert answer.status_code == 200 and answer.path == "/x"


def test_the_headers_are_the_answers_not_an_interim_ones(
    server: ScriptedServer, sender_of: Maker
) -> None:
    interim = b"HTTP/1.1 100 Continue\r\nX-Thing: interim\r\n\r\n"
    server.answers.append(interim + ok(b"[]", "X-Thing: final", "Link: <a>; rel=x"))
    answer = sender_of(server).get("/x", "/x", TIMEOUTS)
    assert (answer.status_code, dict(answer.headers)) == (
        200,
        {"content-length": "2", "x-thing": "final", "link": "<a>; rel=x"},
    )


def test_a_redirect_is_an_answer_not_followed(server: ScriptedServer, sender_of: Maker) -> None:
    server.answers.append(b"HTTP/1.1 302 Found\r\nLocation: /y\r\nContent-Length: 0\r\n\r\n")
    answer = sender_of(server).get("/x", "/x", TIMEOUTS)
    assert (answer.status_code, answer.headers["location"], len(server.requests)) == (302, "/y", 1)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_compressed_body_is_decoded(
    server: ScriptedServer, sender_of: Maker, coding: str
) -> None:
    body = b'[{"id": "1"}]'
    encoded = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
    server.answers.append(ok(encoded, f"Content-Encoding: {coding}"))
    assert sender_of(server).get("/x", "/x", TIMEOUTS).content == body


def test_a_broken_gzip_body_is_a_protocol_error(server: ScriptedServer, sender_of: Maker) -> None:
    server.answers.append(ok(b"not gzip at all", "Content-Encoding: gzip"))
    with pytest.raises(wire.RemoteProtocolError, match="encoding is broken"):
        sender_of(server).get("/x", "/x", TIMEOUTS)


def test_a_connection_the_server_closed_while_idle_is_not_used_again(
    server: ScriptedServer, sender_of: Maker
) -> None:
    server.answers.extend([ok(b"[1]") + THEN_CLOSE, ok(b"[2]", "Connection: close"), ok(b"[3]")])
    sender = sender_of(server)
    assert sender.get("/x", "/x", TIMEOUTS).content == b"[1]"
    closed = server.connections
    assert sender.get("/x", "/x", TIMEOUTS).content == b"[2]"  # on a new connection
    assert sender.get("/x", "/x", TIMEOUTS).content == b"[3]"  # and after its close, another
    assert (closed, server.connections) == (1, 3)


def test_a_new_connection_closed_without_an_answer_is_a_protocol_error(
    server: ScriptedServer, sender_of: Maker
) -> None:
    server.answers.append(CLOSE)
    with pytest.raises(wire.RemoteProtocolError, match="without sending a response"):
        sender_of(server).get("/x", "/x", TIMEOUTS)


def test_an_answer_cut_short_is_a_protocol_error(server: ScriptedServer, sender_of: Maker) -> None:
    server.answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n[1")
    with pytest.raises(wire.RemoteProtocolError, match="bytes missing"):
        sender_of(server).get("/x", "/x", TIMEOUTS)


def test_a_reset_connection_is_a_read_error(server: ScriptedServer, sender_of: Maker) -> None:
    server.answers.append(RESET)
    with pytest.raises(wire.ReadError, match="reset"):
        sender_of(server).get("/x", "/x", TIMEOUTS)


def test_a_kept_connection_reset_before_its_answer_is_sent_again_once(
    server: ScriptedServer, sender_of: Maker
) -> None:
    server.answers.extend([ok(b"[1]"), RESET, ok(b"[2]"), ok(b"[3]"), RESET, RESET])
    sender = sender_of(server)
    assert sender.get("/x", "/x", TIMEOUTS).content == b"[1]"
    assert sender.get("/x", "/x", TIMEOUTS).content == b"[2]"  # on a new connection
    assert (len(server.requests), server.connections) == (3, 2)
    assert sender.get("/x", "/x", TIMEOUTS).content == b"[3]"
    with pytest.raises(wire.ReadError):  # once only: the new connection's reset is raised
        sender.get("/x", "/x", TIMEOUTS)
    assert (len(server.requests), server.connections) == (6, 3)


def test_the_whole_exchange_is_bounded_by_the_read_timeout(
    server: ScriptedServer, sender_of: Maker
) -> None:
    server.answers.append(HANG)
    with pytest.raises(wire.ReadTimeout, match="timed out after 2"):  # milliseconds
        sender_of(server).get("/x", "/x", {**TIMEOUTS, "read": 0.25})


def test_no_answer_within_the_read_timeout(server: ScriptedServer, sender_of: Maker) -> None:
    server.answers.append(HANG)
    with pytest.raises(wire.ReadTimeout):
        sender_of(server).get("/x", "/x", {**TIMEOUTS, "read": 0.2})


def test_no_answer_on_a_kept_connection_is_a_read_timeout(
    server: ScriptedServer, sender_of: Maker
) -> None:
    server.answers.extend([ok(b"[1]"), HANG])
    sender = sender_of(server)
    assert sender.get("/x", "/x", TIMEOUTS).content == b"[1]"
    with pytest.raises(wire.ReadTimeout):
        sender.get("/x", "/x", {**TIMEOUTS, "read": 0.2})
    assert server.connections == 1


def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = CurlSender(f"http://127.0.0.1:{port}", {})
    with pytest.raises(wire.ConnectError, match="refused"):
        sender.get("/x", "/x", TIMEOUTS)


def test_a_connection_not_made_in_time_is_a_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # never accepted: once its queue is full, connections wait
        waiting = [socket.socket() for _ in range(3)]
        for client in waiting:
            client.setblocking(False)
            client.connect_ex(listener.getsockname())
        port = listener.getsockname()[1]
        sender = CurlSender(f"http://127.0.0.1:{port}", {})
        try:
            with pytest.raises(wire.ConnectTimeout):
                sender.get("/x", "/x", {**TIMEOUTS, "connect": 0.2})
        finally:
            for client in waiting:
                client.close()


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http or https URL"):
        CurlSender("ftp://sentry.test", {})


def client_of(server: ScriptedServer, attempts: int) -> SentryClient:
    return SentryClient(
        ClientSettings(
            base_url=server.base_url,
            token="sntryu_test_wire",
            gate=RequestGate(TokenBucket(0), 1),
            retry=RetryPolicy(attempts=attempts, initial_wait=0),
            sleep=lambda seconds: None,
        )
    )


def test_the_client_retries_a_cut_answer_as_a_network_error(server: ScriptedServer) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n[1"
    server.answers.extend([cut, ok(b"[2]"), CLOSE])
    counter = RequestCounter()
    with client_of(server, attempts=2) as client:
        assert client.get("teams/", {"a": 1}, counter).body == [2]
    assert (counter.requests, counter.retries) == (2, 1)
    with client_of(server, attempts=1) as client, pytest.raises(NetworkError, match="response"):
        client.get("teams/", {}, RequestCounter())


def test_an_httpx_failure_without_text_is_named_as_httpx_names_it() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ProxyError("")

    settings = ClientSettings(
        base_url="https://sentry.test",
        token="sntryu_test_wire",
        gate=RequestGate(TokenBucket(0), 1),
        retry=RetryPolicy(attempts=1, initial_wait=0),
        sleep=lambda seconds: None,
        transport=httpx.MockTransport(refuse),
    )
    with SentryClient(settings) as client, pytest.raises(NetworkError) as raised:
        client.get("teams/", {}, RequestCounter())
    assert str(raised.value).endswith("(ProxyError: ProxyError)")


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
values = texts | st.integers(-(10**6), 10**6) | st.tuples(texts, texts)


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(texts.filter(lambda text: "?" not in text and "#" not in text), max_size=4),
    params=st.dictionaries(texts, values, max_size=5),
)
@example(segments=["releases", "..", "a b", "."], params={})  # dot segments resolved
@example(segments=["%2F", "%zz", "50%", "é%C3%A9", "{x}`"], params={})  # escapes kept
@example(segments=[".", "..", "..", "teams"], params={})  # above the root
def test_the_request_target_is_the_one_httpx_sends(segments: list[str], params: dict) -> None:
    url = "https://sentry.test/api/0/" + "/".join(segments)
    request = httpx.Request("GET", url, params=params)
    path, said = encoded_path(url)
    query = query_string(params)
    assert (f"{path}?{query}" if query else path).encode() == request.url.raw_path
    assert said == request.url.path
    assert query_string(params, KNOWN_ACROSS_EXAMPLES) == query  # pairs kept from before


KNOWN_ACROSS_EXAMPLES: dict[tuple[str, str], str] = {}
