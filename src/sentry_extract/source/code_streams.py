"""The code and the history of an issue: repositories, their commits, and the activity
of each issue seen since the last run (status changes, assignments, merges, comments).

Named-only, like the other further streams. How Sentry serves them:
- `repos/` lists the active repositories only (its `status` defaults to `active`; those
  disabled or being deleted need `status=deleted`), by name, offset cursor;
- `repos/{id}/commits/` takes a cursor and nothing else: newest first by the date Sentry
  recorded the commit (`dateCreated`, its `date_added`), so a run stops at the page that
  reaches the last run's start, less the lookback, as check-ins do;
- an issue's details hold its latest activity, at most 100 entries, newest first, ending
  with a `first_seen` entry whose id is `0` for every issue (hence the key: issue and id);
  a merged id answers the issue it went into, whose activity is not the merged one's.
"""

from __future__ import annotations

from sentry_extract.model.spec import (
    ColumnType,
    Parent,
    Parents,
    Shape,
    StreamSpec,
    columns_of,
)
from sentry_extract.source.parents import issue_parent, repository_parent
from sentry_extract.source.streams import ISSUES

T = ColumnType
ISSUE_ACTIVITY_CAP = 100  # entries of an issue's details (`get_activities_for_group(num=100)`)

REPOSITORIES = StreamSpec(
    name="repositories",
    description="Repositories linked to the organization (a disabled one gets _deleted_at)",
    path="organizations/{organization}/repos/",
    shape=Shape.LIST,
    params=(),  # `status` defaults to active: what has commits to read
    page_size_param=None,
    primary_key=("id",),
    update_key=None,
    soft_deletes=True,
    scope="org:read (or org:ci)",
    named_only=True,
    operation="listOrganizationRepos",
    columns=columns_of(
        id=T.TEXT,
        name=T.TEXT,
        url=T.TEXT,
        provider=T.JSON,
        status=T.TEXT,
        dateCreated=T.TIMESTAMP,
        integrationId=T.TEXT,
        externalSlug=T.TEXT,
        externalId=T.TEXT,
    ),
)

EACH_REPOSITORY = Parents(Parent.REPOSITORY, REPOSITORIES, repository_parent)

REPOSITORY_COMMITS = StreamSpec(
    name="repository_commits",
    description="Commits of every repository, newest first down to the last run's",
    path="organizations/{organization}/repos/{repository}/commits/",
    shape=Shape.LIST,
    params=(),  # a cursor only: no range, no page size
    page_size_param=None,
    primary_key=("repositoryID", "id"),  # a commit id is unique within its repository
    update_key="dateCreated",
    fixed_update_key=True,
    parents=EACH_REPOSITORY,
    parent_columns=(("repositoryID", "id"), ("repositoryName", "name")),
    named_only=True,
    operation="listOrganizationRepoCommits",
    columns=columns_of(
        repositoryID=T.TEXT,
        repositoryName=T.TEXT,
        id=T.TEXT,
        message=T.TEXT,
        dateCreated=T.TIMESTAMP,
        author=T.JSON,
        pullRequest=T.JSON,
        suspectCommitType=T.TEXT,
    ),
)

# The issues the issues stream's window lists: those seen since the last run.
EACH_SEEN_ISSUE = Parents(Parent.ISSUE, ISSUES, issue_parent)

ISSUE_ACTIVITY = StreamSpec(
    name="issue_activity",
    description="What happened to each issue seen since the last run: status changes, "
    "assignments, merges, comments (one request per issue)",
    path="organizations/{organization}/issues/{issue}/",
    shape=Shape.SINGLE,  # one object per issue; its rows are under `activity`
    params=(("collapse", ("stats", "tags", "release")),),  # the parts not needed: cheaper
    page_size_param=None,
    primary_key=("issueID", "id"),  # `first_seen` is id 0 in every issue
    update_key=None,
    parents=EACH_SEEN_ISSUE,
    parent_columns=(("issueID", "id"),),
    rows_key="activity",
    row_cap=ISSUE_ACTIVITY_CAP,
    scope="event:read",
    named_only=True,
    operation="getOrganizationIssue",
    columns=columns_of(
        issueID=T.TEXT,
        id=T.TEXT,
        type=T.TEXT,
        dateCreated=T.TIMESTAMP,
        user=T.JSON,
        data=T.JSON,
    ),
)

CODE_STREAMS: tuple[StreamSpec, ...] = (REPOSITORIES, REPOSITORY_COMMITS, ISSUE_ACTIVITY)
