"""The seven Sentry streams, stated as data.

Each `StreamSpec` says which request reads the stream, which parameters stop the
server's silent defaults from cutting data (see the API notes in the README), the
primary key, and the declared type of every known field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ColumnType(enum.Enum):
    TEXT = "text"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    JSON = "json"


class Shape(enum.Enum):
    """How a stream is read."""

    SINGLE = "single"  # one object, no pagination
    LIST = "list"  # one paginated list for the organization
    WINDOWED = "windowed"  # one paginated list, bounded by start/end
    PER_PROJECT = "per_project"  # one windowed list per project


@dataclass(frozen=True)
class Column:
    source_name: str
    type: ColumnType
    path: tuple[str, ...] = ()  # a value inside an object: ("project", "id")


@dataclass(frozen=True)
class StreamSpec:
    name: str
    description: str
    path: str  # relative to /api/0/, with {organization} and {project}
    shape: Shape
    params: tuple[tuple[str, str], ...]
    page_size_param: str | None  # "per_page", "limit", or None when unpaginated
    primary_key: tuple[str, ...]  # source field names
    update_key: str | None  # source field name
    columns: tuple[Column, ...] = field(default=())
    fixed_update_key: bool = False  # a row's update key never changes (an event's time)
    soft_deletes: bool = False  # rows that vanish from Sentry get `_deleted_at`, not removed

    @property
    def is_incremental(self) -> bool:
        return self.shape in (Shape.WINDOWED, Shape.PER_PROJECT)


PAGE_SIZE = 100
T = ColumnType


def _columns(**types: ColumnType) -> tuple[Column, ...]:
    return tuple(Column(name, column_type) for name, column_type in types.items())


ORGANIZATIONS = StreamSpec(
    name="organizations",
    description="Organization details (name, slug, status, features)",
    path="organizations/{organization}/",
    shape=Shape.SINGLE,
    params=(),
    page_size_param=None,
    primary_key=("id",),
    update_key=None,
    columns=_columns(
        id=T.TEXT,
        slug=T.TEXT,
        name=T.TEXT,
        status=T.JSON,
        dateCreated=T.TIMESTAMP,
        isEarlyAdopter=T.BOOLEAN,
        require2FA=T.BOOLEAN,
        hasAuthProvider=T.BOOLEAN,
        allowMemberInvite=T.BOOLEAN,
        allowMemberProjectCreation=T.BOOLEAN,
        allowSuperuserAccess=T.BOOLEAN,
        avatar=T.JSON,
        links=T.JSON,
        features=T.JSON,
        access=T.JSON,
        extraOptions=T.JSON,
        onboardingTasks=T.JSON,
    ),
)

PROJECTS = StreamSpec(
    name="projects",
    description="All projects in the organization with metadata",
    path="organizations/{organization}/projects/",
    shape=Shape.LIST,
    params=(),  # never all_projects=1: it turns pagination off
    page_size_param="per_page",
    primary_key=("id",),
    update_key=None,
    soft_deletes=True,
    columns=_columns(
        id=T.TEXT,
        slug=T.TEXT,
        name=T.TEXT,
        platform=T.TEXT,
        dateCreated=T.TIMESTAMP,
        isBookmarked=T.BOOLEAN,
        isMember=T.BOOLEAN,
        hasAccess=T.BOOLEAN,
        firstEvent=T.TIMESTAMP,
        firstTransactionEvent=T.BOOLEAN,
        hasSessions=T.BOOLEAN,
        hasProfiles=T.BOOLEAN,
        hasReplays=T.BOOLEAN,
        hasMonitors=T.BOOLEAN,
        hasUserReports=T.BOOLEAN,
        features=T.JSON,
        access=T.JSON,
        team=T.JSON,
        teams=T.JSON,
        platforms=T.JSON,
        environments=T.JSON,
        latestRelease=T.JSON,
        latestDeploys=T.JSON,
        options=T.JSON,
    ),
)

TEAMS = StreamSpec(
    name="teams",
    description="All teams in the organization",
    path="organizations/{organization}/teams/",
    shape=Shape.LIST,
    params=(),
    page_size_param="per_page",
    primary_key=("id",),
    update_key=None,
    soft_deletes=True,
    columns=_columns(
        id=T.TEXT,
        slug=T.TEXT,
        name=T.TEXT,
        dateCreated=T.TIMESTAMP,
        isMember=T.BOOLEAN,
        teamRole=T.TEXT,
        hasAccess=T.BOOLEAN,
        isPending=T.BOOLEAN,
        memberCount=T.INTEGER,
        flags=T.JSON,
        access=T.JSON,
        avatar=T.JSON,
        externalTeams=T.JSON,
        projects=T.JSON,
    ),
)

MEMBERS = StreamSpec(
    name="members",
    description="Organization members with roles and invite status",
    path="organizations/{organization}/members/",
    shape=Shape.LIST,
    params=(),
    page_size_param="per_page",
    primary_key=("id",),
    update_key=None,
    soft_deletes=True,
    columns=_columns(
        id=T.TEXT,
        email=T.TEXT,
        name=T.TEXT,
        user=T.JSON,
        orgRole=T.TEXT,
        pending=T.BOOLEAN,
        expired=T.BOOLEAN,
        flags=T.JSON,
        dateCreated=T.TIMESTAMP,
        inviteStatus=T.TEXT,
        inviterName=T.TEXT,
        externalUsers=T.JSON,
    ),
)

RELEASES = StreamSpec(
    name="releases",
    description="Releases across the organization, archived ones included",
    path="organizations/{organization}/releases/",
    shape=Shape.LIST,
    # status= (empty) keeps archived releases; project=-1 covers every project.
    params=(("status", ""), ("project", "-1")),
    page_size_param="per_page",
    primary_key=("id",),
    update_key=None,
    soft_deletes=True,
    columns=_columns(
        id=T.INTEGER,
        version=T.TEXT,
        shortVersion=T.TEXT,
        status=T.TEXT,
        ref=T.TEXT,
        url=T.TEXT,
        dateReleased=T.TIMESTAMP,
        dateCreated=T.TIMESTAMP,
        dateStarted=T.TIMESTAMP,
        firstEvent=T.TIMESTAMP,
        lastEvent=T.TIMESTAMP,
        newGroups=T.INTEGER,
        commitCount=T.INTEGER,
        deployCount=T.INTEGER,
        userAgent=T.TEXT,
        owner=T.JSON,
        lastCommit=T.JSON,
        lastDeploy=T.JSON,
        versionInfo=T.JSON,
        data=T.JSON,
        authors=T.JSON,
        projects=T.JSON,
        currentProjectMeta=T.JSON,
        adoptionStages=T.JSON,
    ),
)

ISSUES = StreamSpec(
    name="issues",
    description="Issues (errors/problems) filtered by lastSeen date",
    path="organizations/{organization}/issues/",
    shape=Shape.WINDOWED,
    # query= (empty) keeps resolved and ignored issues; project=-1 covers every project.
    params=(("query", ""), ("project", "-1"), ("sort", "date")),
    page_size_param="limit",
    primary_key=("id",),
    update_key="lastSeen",
    soft_deletes=True,
    columns=(
        *_columns(
            id=T.TEXT,
            shortId=T.TEXT,
            title=T.TEXT,
            culprit=T.TEXT,
            permalink=T.TEXT,
            logger=T.TEXT,
            level=T.TEXT,
            status=T.TEXT,
            substatus=T.TEXT,
            statusDetails=T.JSON,
            isPublic=T.BOOLEAN,
            platform=T.TEXT,
            priority=T.TEXT,
            project=T.JSON,
        ),
        Column("project.id", T.TEXT, path=("project", "id")),  # flat, for joins
        *_columns(
            type=T.TEXT,
            issueType=T.TEXT,
            issueCategory=T.TEXT,
            metadata=T.JSON,
            numComments=T.INTEGER,
            assignedTo=T.JSON,
            isBookmarked=T.BOOLEAN,
            isSubscribed=T.BOOLEAN,
            hasSeen=T.BOOLEAN,
            isUnhandled=T.BOOLEAN,
            count=T.INTEGER,
            userCount=T.INTEGER,
            firstSeen=T.TIMESTAMP,
            lastSeen=T.TIMESTAMP,
            shareId=T.TEXT,
            annotations=T.JSON,
            stats=T.JSON,
        ),
    ),
)

EVENTS = StreamSpec(
    name="events",
    description="Error events for each project with stack traces",
    path="projects/{organization}/{project}/events/",
    shape=Shape.PER_PROJECT,
    # full=true adds entries (stack traces), contexts and sdk. Never full=false or 0.
    params=(("full", "true"),),
    page_size_param="per_page",
    primary_key=("projectID", "eventID"),
    update_key="dateCreated",
    fixed_update_key=True,
    columns=_columns(
        **{
            "projectID": T.TEXT,
            "eventID": T.TEXT,
            "id": T.TEXT,
            "event.type": T.TEXT,
            "groupID": T.TEXT,
            "message": T.TEXT,
            "title": T.TEXT,
            "location": T.TEXT,
            "culprit": T.TEXT,
            "platform": T.TEXT,
            "dateCreated": T.TIMESTAMP,
            "dateReceived": T.TIMESTAMP,
            "crashFile": T.TEXT,
            "size": T.INTEGER,
            "user": T.JSON,
            "tags": T.JSON,
            "metadata": T.JSON,
            "entries": T.JSON,
            "contexts": T.JSON,
            "context": T.JSON,
            "sdk": T.JSON,
            "errors": T.JSON,
            "fingerprints": T.JSON,
            "packages": T.JSON,
            "release": T.JSON,
        }
    ),
)

STREAMS: tuple[StreamSpec, ...] = (
    ORGANIZATIONS,
    PROJECTS,
    TEAMS,
    MEMBERS,
    RELEASES,
    ISSUES,
    EVENTS,
)
STREAM_NAMES: tuple[str, ...] = tuple(spec.name for spec in STREAMS)
STREAMS_BY_NAME: dict[str, StreamSpec] = {spec.name: spec for spec in STREAMS}
