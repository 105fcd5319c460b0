"""Record a run's HTTP exchanges, and replay them offline.

Cassettes use vcrpy's YAML format (`interactions: [{request, response}]`, `version: 1`),
so pytest-recording and vcrpy users can read them. They are written at the httpx
transport seam: the Authorization header never reaches them, and any occurrence of
the token in a URL or a body is replaced by `<TOKEN>`.

Beside the cassette, `sentry-extract.json` keeps what a replay needs to send the very
same requests: the run's start time (its windows) and the connection's inputs, secrets
excepted. A replay needs neither a token nor a network.
"""

from __future__ import annotations

import difflib
import json
import threading
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import yaml

from sentry_extract.errors import ConfigError, ReplayMissError
from sentry_extract.files import write_atomically

CASSETTE_FILE = "sentry.yaml"
METADATA_FILE = "sentry-extract.json"
TOKEN_PLACEHOLDER = "<TOKEN>"
DROPPED_HEADERS = (
    "authorization",
    "cookie",
    "set-cookie",
    "content-encoding",
    "content-length",
    "transfer-encoding",
)


@dataclass(frozen=True)
class Recording:
    """What a replay needs besides the exchanges."""

    run_started_at: datetime
    connection_inputs: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_started_at": self.run_started_at.isoformat(),
            "connection_inputs": dict(self.connection_inputs),
        }


def request_key(method: str, url: httpx.URL | str) -> str:
    """`GET /api/0/...?a=1&b=2`: the path and the sorted parameters, not the host."""
    parts = urlsplit(str(url))
    query = "&".join(
        f"{key}={value}" for key, value in sorted(parse_qsl(parts.query, keep_blank_values=True))
    )
    return f"{method} {parts.path}" + (f"?{query}" if query else "")


class RecordingTransport(httpx.BaseTransport):
    """Sends through `inner` and keeps every exchange, scrubbed of the token."""

    def __init__(self, inner: httpx.BaseTransport, token: str) -> None:
        self.inner = inner
        self.token = token
        self.interactions: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        content = response.read()
        response.close()
        interaction = {
            "request": {
                "body": None,
                "headers": self._headers(request.headers),
                "method": request.method,
                "uri": self._scrub(str(request.url)),
            },
            "response": {
                "body": {"string": self._scrub(content.decode("utf-8", "replace"))},
                "headers": self._headers(response.headers),
                "status": {"code": response.status_code, "message": _reason(response)},
            },
        }
        with self._lock:
            self.interactions.append(interaction)
        headers = [
            (k, v)
            for k, v in response.headers.items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code, headers=headers, content=content, request=request
        )

    def _headers(self, headers: httpx.Headers) -> dict[str, list[str]]:
        kept: dict[str, list[str]] = {}
        for key, value in headers.multi_items():
            if key.lower() not in DROPPED_HEADERS:
                kept.setdefault(key, []).append(self._scrub(value))
        return kept

    def _scrub(self, text: str) -> str:
        return text.replace(self.token, TOKEN_PLACEHOLDER) if self.token else text

    def save(self, folder: Path, recording: Recording) -> None:
        document = {"interactions": self.interactions, "version": 1}
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)
        write_atomically(folder / CASSETTE_FILE, self._scrub(text).encode("utf-8"))
        metadata = json.dumps(recording.to_json(), indent=2, sort_keys=True)
        write_atomically(folder / METADATA_FILE, self._scrub(metadata).encode("utf-8"))

    def close(self) -> None:
        self.inner.close()


class ReplayTransport(httpx.BaseTransport):
    """Answers from a cassette: the responses to a request, in the order recorded."""

    def __init__(self, interactions: list[dict[str, Any]]) -> None:
        self.answers: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.last: dict[str, dict[str, Any]] = {}
        for interaction in interactions:
            request = interaction["request"]
            self.answers[request_key(request["method"], request["uri"])].append(
                interaction["response"]
            )
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = request_key(request.method, request.url)
        with self._lock:
            queue = self.answers.get(key)
            if queue:
                self.last[key] = queue.popleft()
            answer = self.last.get(key)
        if answer is None:
            closest = difflib.get_close_matches(key, list(self.answers), n=1, cutoff=0.0)
            hint = f"; the closest recorded one is {closest[0]}" if closest else ""
            raise ReplayMissError(
                f"the cassettes hold no answer to {key}{hint}", url=request.url.path
            )
        headers = [(name, value) for name, values in answer["headers"].items() for value in values]
        content = answer["body"]["string"].encode("utf-8")
        return httpx.Response(
            answer["status"]["code"], headers=headers, content=content, request=request
        )


def load_replay(folder: Path) -> tuple[ReplayTransport, Recording]:
    cassette, metadata = folder / CASSETTE_FILE, folder / METADATA_FILE
    if not cassette.is_file() or not metadata.is_file():
        raise ConfigError(
            f"--replay: {folder} holds no recording (expected {CASSETTE_FILE} "
            f"and {METADATA_FILE}; make one with --record)"
        )
    try:
        document = yaml.safe_load(cassette.read_text(encoding="utf-8"))
        data = json.loads(metadata.read_text(encoding="utf-8"))
        recording = Recording(
            datetime.fromisoformat(data["run_started_at"]), data.get("connection_inputs") or {}
        )
        interactions = list(document["interactions"])
    except (yaml.YAMLError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"--replay: the recording in {folder} is damaged ({error})") from None
    return ReplayTransport(interactions), recording


def _reason(response: httpx.Response) -> str:
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return ""
