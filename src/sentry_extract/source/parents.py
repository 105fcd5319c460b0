"""How a row of a parent stream becomes a parent of the streams read once per row.

Each function is named by a spec (`Parents.parent_of`): what the child rows get from the
parent, what its requests put in the path, and how messages name it. Values in a path
are one URL segment each: `@`, `+` and `/` are common in release versions.
"""

from __future__ import annotations

from urllib.parse import quote

from sentry_extract.model.spec import ParentRow, Row


def project_parent(row: Row) -> ParentRow | None:
    """A project, asked for by its slug; its id goes into its children's rows."""
    if "slug" not in row:
        return None
    slug = str(row["slug"])
    return ParentRow({"id": str(row["id"]), "slug": slug}, {"project": slug}, f"project '{slug}'")


def release_parent(row: Row) -> ParentRow | None:
    version = str(row.get("version") or "")
    if not version:
        return None
    return ParentRow(
        {"version": version}, {"version": quote(version, safe="")}, f"release '{version}'"
    )


def monitor_parent(row: Row) -> ParentRow | None:
    """A monitor, asked for by its id: slugs are unique per project only, and by slug the
    organization's route answers the oldest monitor that has it."""
    if row.get("id") is None:
        return None
    monitor_id = str(row["id"])
    slug = str(row.get("slug") or monitor_id)
    project = row.get("project")
    where = f" of project '{project.get('slug')}'" if isinstance(project, dict) else ""
    return ParentRow(
        {"id": monitor_id, "slug": slug},
        {"monitor": quote(monitor_id, safe="")},
        f"monitor '{slug}'{where} ({monitor_id})",
    )


def issue_parent(row: Row) -> ParentRow | None:
    """An issue, by its id (then once per tag key: `ParentRow.with_tag_key`)."""
    if "id" not in row:
        return None
    issue = str(row["id"])
    return ParentRow({"id": issue}, {"issue": quote(issue, safe="")}, f"issue {issue}")


def repository_parent(row: Row) -> ParentRow | None:
    """A repository, asked for by its id; its id and name go into its commits' rows."""
    if row.get("id") is None:
        return None
    repository = str(row["id"])
    name = str(row.get("name") or repository)
    return ParentRow(
        {"id": repository, "name": name},
        {"repository": quote(repository, safe="")},
        f"repository '{name}' ({repository})",
    )
