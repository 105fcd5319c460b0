"""The streams beyond Sling's seven: usage, release health, environments, deploys,
commits, monitors and check-ins, replays, user feedback, issue tag values and the
org-wide error index.

All of them run only when a replication names them (`named_only`): `'*'` keeps meaning
Sling's seven, so an existing replication's tables and request count do not change.
Their traps are in docs/how-it-reads-sentry.md.
"""

from __future__ import annotations

from datetime import timedelta

from sentry_extract.model.spec import (
    EXPLORE_PATH,
    Column,
    ColumnType,
    Order,
    Parent,
    Parents,
    Shape,
    StreamSpec,
    columns_of,
)
from sentry_extract.source.parents import issue_parent, monitor_parent, release_parent
from sentry_extract.source.series import read_project_usage, read_sessions, read_usage
from sentry_extract.source.streams import EACH_PROJECT, ISSUES, RELEASES

T = ColumnType
LATE_OUTCOMES = timedelta(days=3)  # outcomes and sessions keep arriving after a day ends
EXPLORE_ROW_CAP = 10_000  # offset paging of one Explore query stops here

ORG_STATS = StreamSpec(
    name="org_stats",
    description="Usage per day: events accepted, filtered, rate-limited... by category",
    path="organizations/{organization}/stats_v2/",
    shape=Shape.SERIES,
    params=(),
    page_size_param=None,
    primary_key=("interval", "category", "outcome", "reason"),
    update_key="interval",
    series=read_usage,
    late_arrivals=LATE_OUTCOMES,
    named_only=True,
    operation="listOrganizationStatsV2",
    columns=columns_of(
        interval=T.TIMESTAMP,
        category=T.TEXT,
        outcome=T.TEXT,
        reason=T.TEXT,
        quantity=T.INTEGER,  # bytes for attachments, a count for the others
        timesSeen=T.INTEGER,
    ),
)

PROJECT_STATS = StreamSpec(
    name="project_stats",
    description="Usage per project, day, category and outcome",
    path="organizations/{organization}/stats-summary/",
    shape=Shape.SERIES,
    params=(),
    page_size_param=None,
    primary_key=("day", "projectID", "category", "outcome"),
    update_key="day",
    series=read_project_usage,
    series_days=1,  # the endpoint sums its whole range: one request a day
    late_arrivals=LATE_OUTCOMES,
    named_only=True,
    operation="getOrganizationStatsSummary",
    columns=columns_of(
        day=T.TIMESTAMP,
        projectID=T.TEXT,
        projectSlug=T.TEXT,
        category=T.TEXT,
        outcome=T.TEXT,
        quantity=T.INTEGER,
    ),
)

SESSIONS = StreamSpec(
    name="sessions",
    description="Release health per day: sessions and users by project, release, "
    "environment and session status",
    path="organizations/{organization}/sessions/",
    shape=Shape.SERIES,
    params=(),
    page_size_param=None,
    primary_key=("interval", "project", "release", "environment", "session.status"),
    update_key="interval",
    series=read_sessions,
    series_days=14,
    halves=True,  # while an answer holds as many groups as Sentry keeps
    late_arrivals=LATE_OUTCOMES,
    named_only=True,
    operation="getOrganizationSessions",
    columns=columns_of(
        **{
            "interval": T.TIMESTAMP,
            "project": T.TEXT,
            "release": T.TEXT,
            "environment": T.TEXT,
            "session.status": T.TEXT,
            "sessions": T.INTEGER,
            "users": T.INTEGER,
        }
    ),
)

EACH_RELEASE = Parents(Parent.RELEASE, RELEASES, release_parent)
# The issues seen in the stream's window (those changed since the last run), once per tag key.
EACH_CHANGED_ISSUE = Parents(Parent.ISSUE, ISSUES, issue_parent, by_tag_key=True)

ENVIRONMENTS = StreamSpec(
    name="environments",
    description="Environments of the organization, hidden ones included",
    path="organizations/{organization}/environments/",
    shape=Shape.LIST,
    # `visible` (the default) drops hidden environments; without `project=-1` only those
    # of the caller's teams' projects come back
    params=(("visibility", "all"), ("project", "-1")),
    page_size_param=None,
    primary_key=("id",),
    update_key=None,
    soft_deletes=True,
    named_only=True,
    operation="listOrganizationEnvironments",
    columns=columns_of(id=T.TEXT, name=T.TEXT, isHidden=T.BOOLEAN),
)

RELEASE_DEPLOYS = StreamSpec(
    name="release_deploys",
    description="Deploys of every release (one request per release)",
    path="organizations/{organization}/releases/{version}/deploys/",
    shape=Shape.LIST,
    params=(),
    page_size_param=None,
    primary_key=("id",),
    update_key=None,
    parents=EACH_RELEASE,
    parent_columns=(("releaseVersion", "version"),),
    scope="project:releases (or project:read)",
    named_only=True,
    operation="listOrganizationReleaseDeploys",
    columns=columns_of(
        id=T.TEXT,
        releaseVersion=T.TEXT,
        environment=T.TEXT,
        name=T.TEXT,
        url=T.TEXT,
        dateStarted=T.TIMESTAMP,
        dateFinished=T.TIMESTAMP,
    ),
)

RELEASE_COMMITS = StreamSpec(
    name="release_commits",
    description="Commits of every release, where repositories are linked (one request per release)",
    path="organizations/{organization}/releases/{version}/commits/",
    shape=Shape.LIST,
    params=(),
    page_size_param=None,
    primary_key=("releaseVersion", "id"),  # a commit can belong to several releases
    update_key=None,
    parents=EACH_RELEASE,
    parent_columns=(("releaseVersion", "version"),),
    scope="project:releases (or project:read)",
    named_only=True,
    operation="listOrganizationReleaseCommits",
    columns=columns_of(
        releaseVersion=T.TEXT,
        id=T.TEXT,
        message=T.TEXT,
        dateCreated=T.TIMESTAMP,
        author=T.JSON,
        repository=T.JSON,
        pullRequest=T.JSON,
        suspectCommitType=T.TEXT,
        releases=T.JSON,
    ),
)

MONITORS = StreamSpec(
    name="monitors",
    description="Cron monitors with their schedules",
    path="organizations/{organization}/monitors/",
    shape=Shape.LIST,
    params=(("project", "-1"),),  # every project's monitors, not only the caller's teams
    page_size_param=None,
    primary_key=("id",),
    update_key=None,
    soft_deletes=True,
    named_only=True,
    operation="listOrganizationMonitors",
    columns=columns_of(
        id=T.TEXT,
        slug=T.TEXT,
        name=T.TEXT,
        status=T.TEXT,
        isMuted=T.BOOLEAN,
        isUpserting=T.BOOLEAN,
        dateCreated=T.TIMESTAMP,
        config=T.JSON,
        project=T.JSON,
        environments=T.JSON,
        owner=T.JSON,
        alertRule=T.JSON,
    ),
)

EACH_MONITOR = Parents(Parent.MONITOR, MONITORS, monitor_parent)

MONITOR_CHECKINS = StreamSpec(
    name="monitor_checkins",
    description="Check-ins of every monitor, newest first down to the last run's",
    path="organizations/{organization}/monitors/{monitor}/checkins/",
    shape=Shape.LIST,
    params=(),
    page_size_param=None,
    primary_key=("id",),
    update_key="dateCreated",
    fixed_update_key=True,
    parents=EACH_MONITOR,
    parent_columns=(("monitorID", "id"), ("monitorSlug", "slug")),
    named_only=True,
    operation="listOrganizationMonitorCheckins",
    columns=columns_of(
        id=T.TEXT,
        monitorID=T.TEXT,
        monitorSlug=T.TEXT,
        status=T.TEXT,
        environment=T.TEXT,
        duration=T.INTEGER,
        dateCreated=T.TIMESTAMP,
        dateAdded=T.TIMESTAMP,
        dateUpdated=T.TIMESTAMP,
        dateInProgress=T.TIMESTAMP,
        dateClock=T.TIMESTAMP,
        expectedTime=T.TIMESTAMP,
        monitorConfig=T.JSON,
        groups=T.JSON,
    ),
)

REPLAY_FIELDS = (
    "id",
    "project_id",
    "started_at",
    "finished_at",
    "duration",
    "count_errors",
    "count_warnings",
    "count_infos",
    "count_segments",
    "count_urls",
    "count_dead_clicks",
    "count_rage_clicks",
    "activity",
    "urls",
    "user",
    "browser",
    "os",
    "device",
    "sdk",
    "environment",
    "releases",
    "platform",
    "dist",
    "is_archived",
    "has_viewed",
    "error_ids",
    "trace_ids",
    "tags",
)

REPLAYS = StreamSpec(
    name="replays",
    description="Index of session replays (one row per replay), by started_at",
    path="organizations/{organization}/replays/",
    shape=Shape.WINDOWED,
    params=(("field", REPLAY_FIELDS), ("sort", "-started_at"), ("project", "-1")),
    page_size_param="per_page",
    primary_key=("id",),
    update_key="started_at",
    fixed_update_key=True,
    rows_key="data",
    named_only=True,
    operation="listOrganizationReplays",
    columns=columns_of(
        id=T.TEXT,
        project_id=T.TEXT,
        started_at=T.TIMESTAMP,
        finished_at=T.TIMESTAMP,
        duration=T.INTEGER,
        count_errors=T.INTEGER,
        count_warnings=T.INTEGER,
        count_infos=T.INTEGER,
        count_segments=T.INTEGER,
        count_urls=T.INTEGER,
        count_dead_clicks=T.INTEGER,
        count_rage_clicks=T.INTEGER,
        activity=T.INTEGER,
        urls=T.JSON,
        user=T.JSON,
        browser=T.JSON,
        os=T.JSON,
        device=T.JSON,
        sdk=T.JSON,
        environment=T.TEXT,
        releases=T.JSON,
        platform=T.TEXT,
        dist=T.TEXT,
        is_archived=T.BOOLEAN,
        has_viewed=T.BOOLEAN,
        error_ids=T.JSON,
        trace_ids=T.JSON,
        tags=T.JSON,
    ),
)

USER_FEEDBACK = StreamSpec(
    name="user_feedback",
    description="User reports of each project (feedback-widget reports are issues)",
    path="projects/{organization}/{project}/user-feedback/",
    shape=Shape.LIST,
    params=(("status", ""),),  # the default, unresolved, drops reports on closed issues
    page_size_param=None,
    primary_key=("id",),
    update_key=None,
    parents=EACH_PROJECT,
    parent_columns=(("projectID", "id"),),
    scope="project:read",
    named_only=True,
    operation="List a Project's User Feedback",
    columns=columns_of(
        id=T.TEXT,
        projectID=T.TEXT,
        eventID=T.TEXT,
        name=T.TEXT,
        email=T.TEXT,
        comments=T.TEXT,
        dateCreated=T.TIMESTAMP,
        user=T.JSON,
        event=T.JSON,
        issue=T.JSON,
    ),
)

ISSUE_TAG_VALUES = StreamSpec(
    name="issue_tag_values",
    description="How each issue changed since the last run splits by tag (browser, "
    "release, environment...): one request per issue and tag key",
    path="organizations/{organization}/issues/{issue}/tags/{key}/values/",
    shape=Shape.LIST,
    params=(),
    page_size_param=None,
    primary_key=("issueID", "key", "value"),
    update_key=None,
    parents=EACH_CHANGED_ISSUE,
    parent_columns=(("issueID", "id"), ("key", "key")),
    scope="event:read",
    named_only=True,
    row_cap=1_000,  # Sentry returns at most 1,000 values per key
    operation="listOrganizationIssueTagValues",
    columns=columns_of(
        issueID=T.TEXT,
        key=T.TEXT,
        value=T.TEXT,
        name=T.TEXT,
        count=T.INTEGER,
        firstSeen=T.TIMESTAMP,
        lastSeen=T.TIMESTAMP,
    ),
)

ERROR_INDEX_FIELDS = (
    "id",
    "project.id",
    "project",
    "issue.id",
    "issue",
    "title",
    "message",
    "level",
    "timestamp",
    "environment",
    "release",
    "platform",
    "culprit",
    "location",
    "event.type",
    "user.id",
    "user.email",
    "trace",
    "transaction",
)


def explore_stream(
    name: str,
    description: str,
    params: tuple[tuple[str, str | tuple[str, ...]], ...],
    primary_key: tuple[str, ...],
    columns: tuple[Column, ...],
    more_columns: tuple[Column, ...],
) -> StreamSpec:
    """A stream of Explore (`error_index`, and spans, transactions and logs): oldest first
    by `timestamp` (a capped query resumes at its last row), time slices, the 10,000-row
    cap."""
    return StreamSpec(
        name=name,
        description=description,
        path=EXPLORE_PATH,
        shape=Shape.WINDOWED,
        params=(
            *params,
            ("sort", "timestamp"),
            ("project", "-1"),  # every project, not only the caller's teams'
        ),
        page_size_param="per_page",
        primary_key=primary_key,
        update_key="timestamp",
        fixed_update_key=True,
        rows_key="data",
        order=Order.OLDEST_FIRST,
        row_cap=EXPLORE_ROW_CAP,
        scope="event:read",
        named_only=True,
        operation="listOrganizationEvents",
        columns=columns,
        more_columns=more_columns,
    )


ERROR_INDEX = explore_stream(
    "error_index",
    "One row per error event, organization-wide, 100 a request: the light "
    "way to keep up with a busy organization",
    (("dataset", "errors"), ("field", ERROR_INDEX_FIELDS)),
    ("project.id", "id"),
    columns_of(
        **{
            "id": T.TEXT,
            "project.id": T.TEXT,
            "project": T.TEXT,
            "issue.id": T.TEXT,
            "issue": T.TEXT,
            "title": T.TEXT,
            "message": T.TEXT,
            "level": T.TEXT,
            "timestamp": T.TIMESTAMP,
            "environment": T.TEXT,
            "release": T.TEXT,
            "platform": T.TEXT,
            "culprit": T.TEXT,
            "location": T.TEXT,
            "event.type": T.TEXT,
            "user.id": T.TEXT,
            "user.email": T.TEXT,
            "trace": T.TEXT,
            "transaction": T.TEXT,
        }
    ),
    (),
)


FURTHER_STREAMS: tuple[StreamSpec, ...] = (
    ORG_STATS,
    PROJECT_STATS,
    SESSIONS,
    ENVIRONMENTS,
    RELEASE_DEPLOYS,
    RELEASE_COMMITS,
    MONITORS,
    MONITOR_CHECKINS,
    REPLAYS,
    USER_FEEDBACK,
    ISSUE_TAG_VALUES,
    ERROR_INDEX,
)
