"""A fake Sentry that behaves like sentry.io, traps included, over real HTTP.

What it reproduces (see the API notes in the README):
- a Link header on every list, `previous` and `next`, with `results` and `cursor`;
  `next` present on the last page too;
- issues: no `query` means `is:unresolved`; no `project` means the caller's teams'
  projects; no range means the last 90 days; `start` without `end` is a 400; it
  reads `limit` (clamped to 100, default 25) and ignores `per_page`; pages come
  back short (phantom issues dropped after the search) while `results="true"`;
  value cursors on `lastSeen` like the server's date paginator;
- releases: no `status=` hides archived ones; no `project=-1` keeps only the
  caller's teams' projects;
- events: newest first with a plain offset cursor that drifts when events arrive
  inside the window; `full=` (any value) adds stack traces and caps pages at 10;
- `per_page` above 100 is a 400; retention (90 days unless set) hides older data;
- rate-limit headers per endpoint, fixed windows plus a concurrency cap,
  429 with a bare JSON string body and no `Retry-After`;
- 401/403/404 bodies as `{"detail": ...}`.

Repositories and their commits (`fake_code.py`) and each issue's `activity` in its
details (data made on first use in `code.py`); with `ServerSettings.region_url`, the
organization lives in another region: its details name it, the rest is a 404.
Beyond the seven streams (`fake_more.py`, data made on first use in `extras.py`):
- `stats_v2`, `stats-summary`, `sessions`: `field` required; a `start` older than the
  retention is a 400 (no silent clamp); intervals 1h to 1d dividing a day, aligned;
  `groupBy=project` collapses stats_v2's series into one total; accepted errors are the
  events of each interval; sessions keep the largest `5000 // intervals` groups and
  drop the rest without a word, and refuse more than 1,000 intervals;
- `environments`: hidden ones vanish unless `visibility=all`, others without `project=-1`;
- release `deploys`/`commits`: the version is URL-encoded (a raw `/` is a 404); releases
  without a linked repository have no commits;
- `monitors`, their `checkins` (newest first, offset cursor; a slug two projects share
  names the oldest monitor), `replays` (`{"data": ...}`,
  `field` checked against the description's list), project `user-feedback` (only
  unresolved issues' reports unless `status=`);
- issue tag values: at most 1,000 per key (the most recently seen), then
  `results="false"` although more exist;
- Explore (`organizations/{org}/events/`): `dataset` and `field` required, at most 20
  fields, `sort` must be a requested field, the last 14 days without `start`/`end`,
  paging stops silently at 10,000 rows (a cursor past them is a 400), `count()`
  aggregates; `explore_partial` and `explore_refused` switch on sampling and a 403.

Retention is a setting (`retention`, 90 days by default; 30 is the Developer plan): lists,
events and Explore clamp a `start` before it silently (Explore answers 400 when the whole
range is older), the time series answer 400 to a `start` before it, and issue details answer
404 for an issue last seen before it. Issue details of an id merged away answer 200 with the
issue it went into (`FakeOrganization.merge_issues`), as Sentry's redirect table does.

It records every request (path, parameters, timing, concurrency) for the tests.
Routes under `/_fake/` look at it and change it from another process (`fake_control.py`):
`stats`, `requests`, `issues`, `add_events`, `new_issue`, `resolve`, `delete`, `merge`,
`event_keys`, `reset`, `hold` and `release`.
Run it alone with `sentry-extract fake --port 8000`, or
`python -m sentry_extract.testing.fake_sentry --port 8000`.

Its files import one way, bottom to top: rows (`rows.py`), the organization
(`extras.py`, then `organization.py`), what the endpoints read (`fake_state.py`), the
endpoints (`fake_http.py`, then `fake_more.py` and `fake_control.py`), and this server.
"""

from __future__ import annotations

import argparse
import bisect
import errno
import functools
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from sentry_extract.testing import fake_code, fake_control, fake_more
from sentry_extract.testing.fake_http import (
    MAX_PAGE_SIZE,
    NOT_FOUND,
    Answer,
    BadRequest,
    Params,
    link_header,
    offset_page,
    one,
    page_size,
    read_cursor,
    selected_projects,
    time_window,
)
from sentry_extract.testing.fake_state import (  # the names tests import from here too
    ALL_SCOPES,
    DEFAULT_TOKEN,
    FULL_PAGE_CAP,
    ORG_TOKEN_SCOPES,
    SENTRY_IO_LIMITS,
    FakeState,
    Fault,
    FaultRates,
    RateLimit,
    RequestRecord,
    ServerSettings,
)
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize
from sentry_extract.testing.rows import Row, iso, parse_iso, public

__all__ = [  # what tests, the demo and the benchmarks import from here
    "ALL_SCOPES",
    "DEFAULT_TOKEN",
    "FULL_PAGE_CAP",
    "ORG_TOKEN_SCOPES",
    "SENTRY_IO_LIMITS",
    "FakeOptions",
    "FakeSentry",
    "Fault",
    "FaultRates",
    "RateLimit",
    "RequestRecord",
    "ServerSettings",
    "connection_map",
    "main",
    "serve",
]

ISSUES_DEFAULT_LIMIT = 25
# Seconds between the serving thread's looks for a stop: `stop` waits for the next look
# (socketserver's default, half a second, was paid at the end of every test).
STOP_POLL = 0.01
EVENT_ONLY_FIELDS = (
    "entries",
    "contexts",
    "context",
    "sdk",
    "dateReceived",
    "errors",
    "fingerprints",
    "packages",
    "size",
    "release",
)


class FakeSentry(FakeState):
    """The server; `with FakeSentry(...) as fake:` serves on a free loopback port."""

    def __init__(
        self,
        organization: FakeOrganization | None = None,
        settings: ServerSettings | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(organization, settings)
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = _Server((host, port), handler)
        self.scheme = "http"
        if tls is not None:  # HTTPS, with a certificate the caller made
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        bound_host, bound_port = self.server.server_address[:2]
        self.base_url = f"{self.scheme}://{bound_host!s}:{bound_port}"
        self._thread: threading.Thread | None = None

    def start(self) -> FakeSentry:
        serve = functools.partial(self.server.serve_forever, poll_interval=STOP_POLL)
        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeSentry:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up on a slow answer is not news."""


_ROUTES = (
    (re.compile(r"^organizations/(?P<org>[^/]+)/$"), "organization"),
    (re.compile(r"^organizations/(?P<org>[^/]+)/projects/$"), "projects"),
    (re.compile(r"^organizations/(?P<org>[^/]+)/teams/$"), "teams"),
    (re.compile(r"^organizations/(?P<org>[^/]+)/members/$"), "members"),
    (re.compile(r"^organizations/(?P<org>[^/]+)/releases/$"), "releases"),
    (re.compile(r"^organizations/(?P<org>[^/]+)/issues/$"), "issues"),
    (re.compile(r"^organizations/(?P<org>[^/]+)/issues/(?P<issue>[^/]+)/$"), "issue"),
    (re.compile(r"^projects/(?P<org>[^/]+)/(?P<project>[^/]+)/events/$"), "events"),
    *fake_more.ROUTES,
    *fake_code.ROUTES,
)
_SCOPES = {
    "organization": {"org:read"},
    "projects": {"project:read"},
    "teams": {"team:read"},
    "members": {"member:read"},
    "releases": {"project:releases", "project:read", "org:ci"},
    "issues": {"event:read"},
    "issue": {"event:read"},
    "events": {"event:read"},
    **fake_more.SCOPES,
    **fake_code.SCOPES,
}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSentry
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = parse_qsl(parts.query, keep_blank_values=True)
        if parts.path.startswith("/_fake/"):
            self._control(parts.path.removeprefix("/_fake/"), params)
            return
        path = parts.path.removeprefix("/api/0/")
        route, match = next(
            ((name, m) for pattern, name in _ROUTES if (m := pattern.match(path))), (None, None)
        )
        group = route or "unknown"  # sentry.io limits each endpoint on its own
        record = RequestRecord(parts.path, params, 0, group, time.monotonic(), time.time())
        if self.fake.log_request(record):
            self.fake.released.wait()
        headers, limited = self.fake.admit(group)
        released = False
        try:
            if self.fake.settings.latency:
                time.sleep(self.fake.settings.latency)
            fault = self.fake.roll_fault() if route is not None else None
            if fault == "reset":
                self.close_connection = True
                return  # no answer at all
            if fault == "slow":
                time.sleep(self.fake.settings.faults.slow_seconds)
            status, body, link, raw, extra = self._answer(route, match, params, limited, parts.path)
            status, body, raw = _apply_fault(fault, status, body, raw)
            headers.update(extra)
            record.status = status
            record.rows = _row_count(body)
            if link:
                headers["Link"] = link
            # Sentry's rate-limit middleware ends the request's concurrency count in
            # process_response, before the answer reaches the client: a client that sends
            # its next request on receiving this one is not over the limit.
            self.fake.leave(group)
            released = True
            self._send(status, body, headers, raw)
        finally:
            record.ended = time.monotonic()
            if not released:
                self.fake.leave(group)
            if self.fake.on_request is not None:
                self.fake.on_request(record)

    def _control(self, name: str, params: list[tuple[str, str]]) -> None:
        """The routes tests, benchmarks and people use to look at the fake or change it."""
        route = fake_control.ROUTES.get(name)
        if route is None:
            self._send(404, {"detail": NOT_FOUND})
            return
        try:
            body = route(self.fake, params)
        except BadRequest as error:
            self._send(error.status, {"detail": error.detail})
            return
        self._send(200, body)

    def _answer(
        self,
        route: str | None,
        match: re.Match[str] | None,
        params: list[tuple[str, str]],
        limited: str | None,
        path: str,
    ) -> tuple[int, Any, str | None, bytes | None, dict[str, str]]:
        fault = self.fake.take_fault(path)
        if fault is not None:
            return fault.status, fault.body, None, fault.raw, fault.headers
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        scopes = self.fake.settings.token_scopes.get(token)
        if scopes is None:
            return 401, {"detail": "Invalid token"}, None, None, {}
        if limited is not None:
            return 429, limited, None, None, {}
        if route is None or match is None:
            return 404, {"detail": NOT_FOUND}, None, None, {}
        organization = self.fake.organization
        if match.group("org") != organization.slug:
            return 404, {"detail": NOT_FOUND}, None, None, {}
        if self.fake.settings.region_url is not None and route != "organization":
            return 404, {"detail": NOT_FOUND}, None, None, {}  # served by its region only
        if not scopes & _SCOPES[route]:
            denied = {"detail": "You do not have permission to perform this action."}
            return 403, denied, None, None, {}
        try:
            answer = _ENDPOINTS[route](self.fake, dict(match.groupdict()), params)
        except BadRequest as error:
            return error.status, {"detail": error.detail}, None, None, {}
        return 200, answer.body, answer.link, None, {}

    def _send(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        content = raw if raw is not None else msgspec.json.encode(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)


def _row_count(body: Any) -> int:
    """Rows in an answer: a list, or the list under `data` (replays, Explore)."""
    if isinstance(body, dict):
        body = body.get("data")
    return len(body) if isinstance(body, list) else 0


def _apply_fault(
    fault: str | None, status: int, body: Any, raw: bytes | None
) -> tuple[int, Any, bytes | None]:
    if fault is None or status != 200:
        return status, body, raw
    if fault == "server_error":
        return 503, {"detail": "Service unavailable"}, None
    if fault == "rate_limited":
        return 429, "You are attempting to use this endpoint too frequently.", None
    if fault == "query_timeout":
        return 400, {"detail": "Query timeout. Please try with a smaller date range."}, None
    if fault == "truncated":
        content = msgspec.json.encode(body)
        return 200, None, content[: max(1, len(content) // 2)]
    return status, body, raw


# --- endpoints ---------------------------------------------------------------------------


def _organization(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    organization = fake.organization
    return Answer(
        {
            "id": organization.id,
            "slug": organization.slug,
            "name": organization.slug.title(),
            "status": {"id": "active", "name": "active"},
            "dateCreated": iso(organization.created),
            "isEarlyAdopter": False,
            "require2FA": False,
            "hasAuthProvider": False,
            "allowMemberInvite": True,
            "allowMemberProjectCreation": False,
            "allowSuperuserAccess": False,
            "avatar": {"avatarType": "letter_avatar", "avatarUuid": None},
            "links": {
                "organizationUrl": f"https://{organization.slug}.sentry.example",
                "regionUrl": fake.settings.region_url or fake.base_url,
            },
            "features": ["discover-basic", "event-attachments"],
            "access": ["org:read", "project:read"],
            "extraOptions": {},
            "onboardingTasks": [],
        }
    )


def _projects(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    with fake.organization.lock:
        rows = [public(project) for project in fake.organization.projects]
    if one(params, "all_projects") == "1":
        return Answer(rows)  # pagination off: one unpaginated list
    return offset_page(rows, params, "/api/0/organizations/x/projects/", page_size(params))


def _teams(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    with fake.organization.lock:
        rows = [public(team) for team in fake.organization.teams]
    return offset_page(rows, params, "/api/0/organizations/x/teams/", page_size(params))


def _members(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    with fake.organization.lock:
        rows = [public(member) for member in fake.organization.members]
    return offset_page(rows, params, "/api/0/organizations/x/members/", page_size(params))


def _releases(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    status = one(params, "status")
    projects = selected_projects(fake, params)
    with fake.organization.lock:
        rows = [
            public(release)
            for release in fake.organization.releases
            if (status == "" or release["status"] == (status or "open"))
            and any(str(p["id"]) in projects for p in release["projects"])
        ]
    rows.sort(key=lambda row: (row["dateCreated"] or "", row["id"]), reverse=True)
    return offset_page(rows, params, "/api/0/organizations/x/releases/", page_size(params))


def _matches_query(issue: Row, query: str) -> bool:
    for token in query.split():
        if token.startswith("is:"):
            wanted = token[3:]
            wanted = "ignored" if wanted == "archived" else wanted
            if issue["status"] != wanted:
                return False
        elif token.lower() not in issue["title"].lower():
            return False
    return True


def _issues(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    organization = fake.organization
    query = one(params, "query")
    query = "is:unresolved" if query is None else query
    limit = min(_page_size_clamped(params), MAX_PAGE_SIZE)
    projects = selected_projects(fake, params)
    begin, finish = time_window(params, organization.clock(), fake.settings.retention)
    low, high = iso(begin), iso(finish)
    with organization.lock:
        found = [
            issue
            for issue in organization.issues.values()
            if issue["project"]["id"] in projects
            and low <= issue["lastSeen"] < high
            and _matches_query(issue, query)
        ]
        found.sort(key=lambda issue: (issue["lastSeen"], int(issue["id"])), reverse=True)
        value, offset, _ = read_cursor(params)
        if value:
            ties = [i for i in found if _millis(i["lastSeen"]) == value][offset:]
            found = ties + [i for i in found if _millis(i["lastSeen"]) < value]
        page = found[:limit]
        shown = [public(issue) for issue in page if issue["id"] not in organization.phantoms]
    has_next = len(found) > len(page)
    following = "0:0:0"
    if page:
        last = _millis(page[-1]["lastSeen"])
        same = sum(1 for issue in page if _millis(issue["lastSeen"]) == last)
        carried = offset if value == last else 0
        following = f"{last}:{same + carried}:0"
    return Answer(
        shown,
        link_header(
            "/api/0/organizations/x/issues/", f"{value}:0:1", bool(value), following, has_next
        ),
    )


def _page_size_clamped(params: Params) -> int:
    text = one(params, "limit")  # the issues endpoint ignores per_page
    if text is None:
        return ISSUES_DEFAULT_LIMIT
    try:
        return max(1, min(int(text), MAX_PAGE_SIZE))
    except ValueError:
        raise BadRequest("Invalid limit value.") from None


def _millis(text: str) -> int:
    return int(parse_iso(text.replace("Z", "+00:00")).timestamp() * 1000)


def _events(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    organization = fake.organization
    slug = match["project"]
    project = next((p for p in organization.projects if p["slug"] == slug or p["id"] == slug), None)
    if project is None:
        raise BadRequest(NOT_FOUND, status=404)
    if project["slug"] in fake.settings.forbidden_projects:
        raise BadRequest("You do not have permission to perform this action.", status=403)
    full = one(params, "full") is not None  # older servers read any value as true
    size = page_size(params)
    if full:
        size = min(size, fake.settings.events_page_cap)  # silent cap on full payloads
    begin, finish = time_window(params, organization.clock(), fake.settings.retention)
    _, offset, _ = read_cursor(params)
    with organization.lock:
        ordered, moments = fake.sorted_events(project["id"])
        first = bisect.bisect_left(moments, iso(begin))
        end = bisect.bisect_left(moments, iso(finish))  # the window is [first, end), oldest first
        newest = end - 1 - offset  # pages run newest first, by offset
        page = [ordered[index] for index in range(newest, max(first - 1, newest - size), -1)]
        hidden = () if full else EVENT_ONLY_FIELDS
        body = [public(event, hidden) for event in page]
    following = offset + len(page)
    link = link_header(
        f"/api/0/projects/x/{slug}/events/",
        f"0:{max(0, offset - size)}:1",
        offset > 0,
        f"0:{following}:0",
        following < end - first,
    )
    return Answer(body, link)


def _issue(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    """One issue by id, as Sentry's `get_group_with_redirect` finds it: an id merged away
    answers 200 with the issue it went into (its own, other id; no 3xx); a deleted issue,
    and one whose `lastSeen` left the retention (the cleanup removed it), answer 404."""
    organization = fake.organization
    oldest = iso(organization.clock() - fake.settings.retention)
    with organization.lock:
        wanted = match["issue"]
        issue = organization.issues.get(organization.redirects.get(wanted, wanted))
        if issue is None or issue["id"] in organization.phantoms or issue["lastSeen"] < oldest:
            raise BadRequest(NOT_FOUND, status=404)
        return Answer({**public(issue), "activity": organization.code.activity(issue)})


_ENDPOINTS: dict[str, Callable[[FakeState, dict[str, str], Params], Answer]] = {
    "organization": _organization,
    "projects": _projects,
    "teams": _teams,
    "members": _members,
    "releases": _releases,
    "issues": _issues,
    "issue": _issue,
    "events": _events,
    **fake_more.ENDPOINTS,
    **fake_code.ENDPOINTS,
}


@dataclass(frozen=True)
class FakeOptions:
    """How `sentry-extract fake` (and this module run alone) serves the organization."""

    port: int = 8000
    host: str = "127.0.0.1"
    organization: str = "acme"
    projects: int = 3
    issues: int = 40
    events: int = 400
    latency: float = 0.0
    sentry_io_limits: bool = False
    token: str = DEFAULT_TOKEN
    history_days: int = 120
    frames: int = 12
    frame_context_lines: int = 0
    frame_vars: int = 2
    events_page_cap: int = FULL_PAGE_CAP
    retention_days: int = 90
    tls_cert: str | None = None
    tls_key: str | None = None


def serve(options: FakeOptions) -> int:
    """Serve until Ctrl-C (0); a port in use or an unreadable certificate is one line on
    stderr and 2. The first lines say where it serves and how to connect to it."""
    try:
        fake = _open(options)
    except (OSError, ssl.SSLError) as error:
        print(f"error: {_why_not(options, error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    print(
        f"fake Sentry serving organization '{options.organization}' at {fake.base_url}\n"
        f"export SENTRY='{connection_map(options, fake.base_url)}'",
        flush=True,
    )
    try:
        fake.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake.server.server_close()
    return 0


def connection_map(options: FakeOptions, base_url: str) -> str:
    """The SENTRY connection to this fake, as `conns set` stores it (the test token)."""
    return (
        f'{{ type: api, spec: sentry, secrets: {{ auth_token: "{options.token}" }}, '
        f'inputs: {{ organization: "{options.organization}", base_url: "{base_url}" }} }}'
    )


def _open(options: FakeOptions) -> FakeSentry:
    size = OrganizationSize(
        projects=options.projects,
        issues=options.issues,
        events=options.events,
        history_days=options.history_days,
        frames=options.frames,
        frame_context_lines=options.frame_context_lines,
        frame_vars=options.frame_vars,
    )
    settings = ServerSettings(
        token_scopes={options.token: ALL_SCOPES},
        rate_limits=dict(SENTRY_IO_LIMITS) if options.sentry_io_limits else None,
        latency=options.latency,
        events_page_cap=options.events_page_cap,
        retention=timedelta(days=options.retention_days),
    )
    tls = None
    if options.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(options.tls_cert, options.tls_key)
    organization = FakeOrganization(options.organization, size)
    return FakeSentry(organization, settings, port=options.port, host=options.host, tls=tls)


def _why_not(options: FakeOptions, error: OSError | ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLError) or error.filename is not None:
        return f"cannot load the certificate {options.tls_cert}: {error.strerror or error}"
    reason = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        reason = "the address is already in use (choose another --port)"
    return f"cannot serve on {options.host}:{options.port}: {reason}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a generated organization like Sentry.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--organization", default="acme")
    parser.add_argument("--projects", type=int, default=3)
    parser.add_argument("--issues", type=int, default=40)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument(
        "--sentry-io-limits",
        action="store_true",
        help="enforce sentry.io-like rate limits (events: 60/min, 1 in flight)",
    )
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument(
        "--history-days",
        type=int,
        default=120,
        help="events spread over this many days (retention keeps 90)",
    )
    parser.add_argument("--frames", type=int, default=12, help="stack frames per event")
    parser.add_argument(
        "--retention-days",
        type=int,
        default=90,
        help="days the organization keeps (sentry.io: 90, its Developer plan: 30)",
    )
    parser.add_argument(
        "--frame-context-lines",
        type=int,
        default=0,
        help="source lines either side of a frame's line (0: a compact frame)",
    )
    parser.add_argument("--frame-vars", type=int, default=2, help="local variables per frame")
    parser.add_argument(
        "--events-page-cap",
        type=int,
        default=FULL_PAGE_CAP,
        help="rows per full-payload events page (sentry.io: 10)",
    )
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    return serve(FakeOptions(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    sys.exit(main())
