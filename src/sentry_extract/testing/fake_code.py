"""The fake Sentry's repositories and their commits (the issues' activity is served in
their details, `fake_sentry.py`), as Sentry serves them:

- `repos/`: only active repositories unless `status=deleted` (the others) or `status=`
  (empty: all; any other value: none), by name, offset cursor
  (`OrganizationRepositoriesEndpoint`);
- `repos/{id}/commits/`: newest first by the date recorded, a cursor and nothing else; an
  id of another organization, or none, is a 404 (`OrganizationRepositoryCommitsEndpoint`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sentry_extract.testing.fake_http import (
    NOT_FOUND,
    Answer,
    BadRequest,
    Params,
    offset_page,
    one,
    page_size,
)
from sentry_extract.testing.fake_state import FakeState

Endpoint = Callable[[FakeState, dict[str, str], Params], Answer]


def _repositories(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    status = one(params, "status")
    with fake.organization.lock:
        rows = fake.organization.code.listed_repositories("active" if status is None else status)
    return offset_page(rows, params, "/api/0/organizations/x/repos/", page_size(params))


def _repository_commits(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    code = fake.organization.code
    with fake.organization.lock:
        if code.repository(match["repository"]) is None:
            raise BadRequest(NOT_FOUND, status=404)
        rows = code.newest_commits_first(match["repository"])
    path = f"/api/0/organizations/x/repos/{match['repository']}/commits/"
    return offset_page(rows, params, path, page_size(params))


_ORG = r"^organizations/(?P<org>[^/]+)/"
ROUTES = (
    (re.compile(_ORG + r"repos/$"), "repositories"),
    (re.compile(_ORG + r"repos/(?P<repository>[^/]+)/commits/$"), "repository_commits"),
)
SCOPES = {
    "repositories": {"org:read", "org:ci"},
    "repository_commits": {"org:read"},
}
ENDPOINTS: dict[str, Endpoint] = {
    "repositories": _repositories,
    "repository_commits": _repository_commits,
}
