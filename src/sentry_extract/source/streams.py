"""The seven streams of Sling's connector.

Each `StreamSpec` says which request reads the stream, which parameters stop the
server's silent defaults from cutting data (see docs/how-it-reads-sentry.md), the
primary key, and the declared type of every known field. The further streams live in
`further_streams.py`, every stream by name in `catalog.py`; adding a stream is adding a
spec there and to `FURTHER_STREAMS`.
"""

from __future__ import annotations

from sentry_extract.model.spec import (
    Column,
    ColumnType,
    Parent,
    Parents,
    Shape,
    StreamSpec,
    columns_of,
)
from sentry_extract.source.parents import project_parent

T = ColumnType
_columns = columns_of


ORGANIZATIONS = StreamSpec(
    name="organizations",
    description="Organization details (name, slug, status, features)",
    path="organizations/{organization}/",
    shape=Shape.SINGLE,
    params=(),
    page_size_param=None,
    primary_key=("id",),
    update_key=None,
    preflight=True,  # the run's check of the organization reads it; the stream reuses that
    operation="getOrganization",
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
    scope="project:read",
    operation="listOrganizationProjects",
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
    scope="team:read",
    operation="listOrganizationTeams",
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
    scope="member:read",
    operation="listOrganizationMembers",
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
    scope="project:releases (or project:read)",
    operation="listOrganizationReleases",
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
    merges=True,
    scope="event:read",
    operation="listOrganizationIssues",
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

EACH_PROJECT = Parents(Parent.PROJECT, PROJECTS, project_parent)

EVENTS = StreamSpec(
    name="events",
    description="Error events for each project with stack traces",
    path="projects/{organization}/{project}/events/",
    shape=Shape.WINDOWED,
    parents=EACH_PROJECT,
    parent_columns=(("projectID", "id"),),  # list items carry no project
    # full=true adds entries (stack traces), contexts and sdk. Never full=false or 0.
    params=(("full", "true"),),
    page_size_param="per_page",
    primary_key=("projectID", "eventID"),
    update_key="dateCreated",
    fixed_update_key=True,
    raw_values=True,
    skips_quiet_projects=True,
    scope="event:read",
    operation="listProjectEvents",
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

SLING_STREAMS: tuple[StreamSpec, ...] = (
    ORGANIZATIONS,
    PROJECTS,
    TEAMS,
    MEMBERS,
    RELEASES,
    ISSUES,
    EVENTS,
)
