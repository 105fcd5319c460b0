"""Connections, found the way Sling finds them.

Where connections come from, later ones winning:
1. the built-in `LOCAL` connection (files on this machine);
2. `env.yaml` in the home folder (`$SENTRY_EXTRACT_HOME`, default `~/.sentry-extract`);
3. environment variables: a YAML/JSON map with `type` (or `url`), or a
   `postgresql://` URL. A `.env.sling` file in the current folder is loaded into
   the environment first, without overriding variables already set.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from dotenv.parser import parse_stream

from sentry_extract.config.values import did_you_mean, parse_datetime, parse_duration, parse_size
from sentry_extract.errors import ConfigError
from sentry_extract.files import write_atomically
from sentry_extract.source import defaults

HOME_VARIABLE = "SENTRY_EXTRACT_HOME"
ENV_FILE_NAME = "env.yaml"
DOTENV_FILE_NAME = ".env.sling"
# What a Sentry connection uses when its inputs say nothing: read by the dataclass below
# and by the parsing of inputs; the HTTP client's own come from `source.defaults`.
DEFAULT_BASE_URL = "https://sentry.io"
DEFAULT_RATE_LIMIT = 3.0  # requests per second
DEFAULT_CONCURRENCY = 2  # requests in flight
DEFAULT_LOOKBACK = timedelta(hours=1)
DEFAULT_TIMEOUT = timedelta(seconds=defaults.TIMEOUT)
DEFAULT_RETRY_ATTEMPTS = defaults.RETRY_ATTEMPTS
DEFAULT_RETRY_MAX_WAIT = timedelta(seconds=defaults.RETRY_MAX_TOTAL_WAIT)
DEFAULT_CHECKPOINT_EVERY = timedelta(minutes=1)
DEFAULT_MEMORY_BUDGET = 64 * 1000**2
DEFAULT_RECONCILE_EVERY = timedelta(hours=24)
DEFAULT_TAG_KEYS = ("browser", "release", "environment", "os")

ORIGIN_BUILT_IN = "built-in"
ORIGIN_ENVIRONMENT = "environment variable"


@dataclass(frozen=True)
class ConnectionEntry:
    """A connection as found, before it is checked."""

    name: str
    values: Mapping[str, Any]
    origin: str
    problem: str | None = None  # set when the entry could not even be read

    @property
    def type(self) -> str:
        if self.problem:
            return "?"
        declared = self.values.get("type")
        if declared:
            return str(declared)
        url = str(self.values.get("url", ""))
        return "postgres" if url.startswith(("postgresql://", "postgres://")) else "?"


@dataclass(frozen=True)
class SentryConnection:
    name: str
    organization: str
    auth_token: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    anchor_date: datetime | None = None
    projects: tuple[str, ...] | None = None
    rate_limit: float = DEFAULT_RATE_LIMIT
    concurrency: int = DEFAULT_CONCURRENCY
    lookback: timedelta = DEFAULT_LOOKBACK
    ca_bundle: str | None = None
    timeout: timedelta = DEFAULT_TIMEOUT  # one request, connecting included
    retry_attempts: int = DEFAULT_RETRY_ATTEMPTS  # attempts of one request, the first included
    retry_max_wait: timedelta = DEFAULT_RETRY_MAX_WAIT  # those attempts and their waits, in all
    checkpoint_every: timedelta = DEFAULT_CHECKPOINT_EVERY  # commit at least this often
    memory_budget: int = DEFAULT_MEMORY_BUDGET  # bytes of rows held in memory, about
    reconcile_every: timedelta | None = DEFAULT_RECONCILE_EVERY  # None: never
    tag_keys: tuple[str, ...] = DEFAULT_TAG_KEYS  # issue_tag_values: the keys read per issue
    retention_days: int | None = None  # what the organization keeps; None: learned from Sentry
    follow_region: bool | None = None  # go to the org's `links.regionUrl`; None: from sentry.io

    @property
    def follows_region(self) -> bool:
        """Whether requests go to the organization's region when it names another host:
        as asked, else only from the default host (sentry.io routes no organization's
        lists; a self-hosted server may name an internal URL that cannot be reached)."""
        if self.follow_region is not None:
            return self.follow_region
        return self.base_url == DEFAULT_BASE_URL


@dataclass(frozen=True)
class LocalConnection:
    name: str = "LOCAL"


@dataclass(frozen=True)
class PostgresConnection:
    name: str
    url: str = field(repr=False)


@dataclass(frozen=True)
class DuckDBConnection:
    """A DuckDB database file (Sling's `instance`), made with its folder on first use."""

    name: str
    instance: Path


@dataclass(frozen=True)
class S3Connection:
    """A bucket on S3 or an S3-compatible server (MinIO, R2, Ceph); without keys the
    standard AWS chain finds credentials (environment, profile, instance role)."""

    name: str
    bucket: str
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint: str | None = None  # scheme://host[:port]; None: AWS itself
    region: str | None = None


Connection = (
    SentryConnection | LocalConnection | PostgresConnection | DuckDBConnection | S3Connection
)


def home_folder(environ: Mapping[str, str]) -> Path:
    configured = environ.get(HOME_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".sentry-extract"


def env_file_path(environ: Mapping[str, str]) -> Path:
    return home_folder(environ) / ENV_FILE_NAME


# --- .env.sling --------------------------------------------------------------------


def read_dotenv(path: Path) -> dict[str, str]:
    """`KEY=value` lines, read by python-dotenv: quotes, escapes in double quotes, `#`
    comments and `export` as a shell reads them; `${VAR}` is left as written."""
    variables: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for binding in parse_stream(handle):
            if binding.error or (binding.key is not None and binding.value is None):
                location = f"{path}:{binding.original.line}"
                raise ConfigError("expected KEY=value", location=location)
            if binding.key is not None and binding.value is not None:
                variables[binding.key] = binding.value
    return variables


def environment_with_dotenv(environ: Mapping[str, str], folder: Path) -> dict[str, str]:
    """`environ` plus the variables of `folder/.env.sling` that it does not set already."""
    merged = dict(environ)
    dotenv = folder / DOTENV_FILE_NAME
    if dotenv.is_file():
        for key, value in read_dotenv(dotenv).items():
            merged.setdefault(key, value)
    return merged


# --- env.yaml ----------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"not valid YAML ({_yaml_problem(error)})", location=str(path)) from None
    if not isinstance(document, dict):
        raise ConfigError("expected a map with a 'connections' key", location=str(path))
    connections = document.get("connections") or {}
    if not isinstance(connections, dict):
        raise ConfigError("expected a map of connection names", location=f"{path}: connections")
    return document


def write_env_file(path: Path, document: Mapping[str, Any]) -> None:
    """Write atomically with mode 0600: the file holds tokens."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)
    write_atomically(path, text.encode("utf-8"), mode=0o600)


def parse_assignments(arguments: Sequence[str]) -> dict[str, Any]:
    """`key=value` words of `conns set`; `secrets=` and `inputs=` are YAML maps."""
    values: dict[str, Any] = {}
    for argument in arguments:
        key, separator, text = argument.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(f"'{argument}' is not key=value")
        if key in ("secrets", "inputs"):
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise ConfigError(f"{key}: not a YAML map ({_yaml_problem(error)})") from None
            if not isinstance(parsed, dict):
                raise ConfigError(f"{key}: expected a map like '{{ key: value }}'")
            values[key] = parsed
        else:
            values[key] = text
    return values


def set_connection(environ: Mapping[str, str], name: str, values: Mapping[str, Any]) -> Path:
    entry = ConnectionEntry(name.upper(), values, origin="conns set")
    resolve_connection(entry)  # refuse to store what could not be used
    path = env_file_path(environ)
    document = read_env_file(path)
    connections = dict(document.get("connections") or {})
    connections[name.upper()] = dict(values)
    write_env_file(path, {**document, "connections": connections})
    return path


def unset_connection(environ: Mapping[str, str], name: str) -> bool:
    path = env_file_path(environ)
    document = read_env_file(path)
    connections = dict(document.get("connections") or {})
    if connections.pop(name.upper(), None) is None:
        return False
    write_env_file(path, {**document, "connections": connections})
    return True


# --- discovery ---------------------------------------------------------------------


def discover_connections(
    environ: Mapping[str, str], from_dotenv: Collection[str] = ()
) -> dict[str, ConnectionEntry]:
    """All connections by upper-case name, later sources winning; `from_dotenv` names
    the variables that came from `.env.sling`."""
    found: dict[str, ConnectionEntry] = {
        "LOCAL": ConnectionEntry("LOCAL", {"type": "file"}, ORIGIN_BUILT_IN)
    }
    path = env_file_path(environ)
    for name, values in (read_env_file(path).get("connections") or {}).items():
        upper = str(name).upper()
        if isinstance(values, dict):
            found[upper] = ConnectionEntry(upper, values, str(path))
        else:
            found[upper] = ConnectionEntry(upper, {}, str(path), problem="expected a map")
    for variable, text in environ.items():
        origin = DOTENV_FILE_NAME if variable in from_dotenv else ORIGIN_ENVIRONMENT
        entry = _entry_from_variable(variable, text, origin)
        if entry is not None:
            found[entry.name] = entry
    return found


_POSTGRES_LIKE = re.compile(r"^(jdbc:)?postgres", re.IGNORECASE)


def _entry_from_variable(variable: str, text: str, origin: str) -> ConnectionEntry | None:
    stripped = text.strip()
    name = variable.upper()
    if _POSTGRES_LIKE.match(stripped):  # a malformed URL too: resolving says what is wrong
        return ConnectionEntry(name, {"type": "postgres", "url": stripped}, origin)
    if not stripped.startswith("{"):
        return None
    try:
        values = yaml.safe_load(stripped)
    except yaml.YAMLError as error:
        problem = f"the variable holds a malformed map ({_yaml_problem(error)})"
        return ConnectionEntry(name, {}, origin, problem=problem)
    if isinstance(values, dict) and {"type", "spec", "url"} & values.keys():
        return ConnectionEntry(name, values, origin)
    return None


def find_connection(connections: Mapping[str, ConnectionEntry], name: str) -> ConnectionEntry:
    entry = connections.get(name.upper())
    if entry is None:
        names = ", ".join(sorted(connections))
        raise ConfigError(
            f"connection '{name}' is not defined{did_you_mean(name.upper(), connections)}; "
            f"known connections: {names}. Define it with 'sentry-extract conns set {name} ...' "
            "or an environment variable"
        )
    return entry


# --- checking ----------------------------------------------------------------------

SENTRY_TOP_KEYS = ("type", "spec", "secrets", "inputs")
SENTRY_SECRET_KEYS = ("auth_token",)
SENTRY_INPUT_KEYS = (
    "organization",
    "anchor_date",
    "base_url",
    "projects",
    "rate_limit",
    "concurrency",
    "lookback",
    "ca_bundle",
    "timeout",
    "retry_attempts",
    "retry_max_wait",
    "checkpoint_every",
    "memory_budget",
    "reconcile_every",
    "tag_keys",
    "retention_days",
    "follow_region",
)
POSTGRES_KEYS = ("type", "url", "host", "port", "user", "password", "database", "sslmode")
DUCKDB_KEYS = ("type", "instance")
S3_KEYS = (
    "type",
    "bucket",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "endpoint",
    "region",
)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def resolve_connection(entry: ConnectionEntry) -> Connection:
    """Check an entry and turn it into a typed connection."""
    where = f"connection {entry.name} ({entry.origin})"
    if entry.problem:
        raise ConfigError(entry.problem, location=where)
    kind = entry.type
    if kind == "?":
        raise ConfigError(
            "type is required: type=api spec=sentry for Sentry, type=postgres for PostgreSQL",
            location=where,
        )
    if kind == "file" or (entry.name == "LOCAL" and kind == "local"):
        return LocalConnection(entry.name)
    if kind == "api":
        return _sentry_connection(entry, where)
    if kind in ("postgres", "postgresql"):
        return _postgres_connection(entry, where)
    if kind == "s3":
        return _s3_connection(entry, where)
    if kind == "duckdb":
        return _duckdb_connection(entry, where)
    if kind in ("gs", "azure"):
        raise ConfigError(
            f"type: '{kind}' is not supported yet; Parquet goes to S3 and S3-compatible "
            "storage (type=s3), or to local files",
            location=where,
        )
    raise ConfigError(
        f"type: '{entry.values.get('type')}' is not supported; use type=api spec=sentry "
        "for Sentry, type=postgres for PostgreSQL, type=duckdb for a DuckDB file or type=s3 "
        "for a bucket",
        location=where,
    )


def _check_keys(values: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in values:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            raise ConfigError(
                f"unknown key '{key}'{hint}; expected one of {', '.join(allowed)}", location=where
            )


def _sub_map(entry: ConnectionEntry, key: str, where: str) -> Mapping[str, Any]:
    value = entry.values.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a map", location=where)
    return value


def _sentry_connection(entry: ConnectionEntry, where: str) -> SentryConnection:
    _check_keys(entry.values, SENTRY_TOP_KEYS, where)
    spec = entry.values.get("spec")
    if spec != "sentry":
        raise ConfigError(f"spec: '{spec}' is not supported; use spec=sentry", location=where)
    secrets = _sub_map(entry, "secrets", where)
    inputs = _sub_map(entry, "inputs", where)
    _check_keys(secrets, SENTRY_SECRET_KEYS, f"{where}: secrets")
    _check_keys(inputs, SENTRY_INPUT_KEYS, f"{where}: inputs")
    token = secrets.get("auth_token")
    if not isinstance(token, str) or not token.strip():
        raise ConfigError(
            "secrets.auth_token is required (a Sentry auth token, sntryu_...)", location=where
        )
    organization = inputs.get("organization")
    if not isinstance(organization, str) or not organization.strip():
        raise ConfigError("inputs.organization is required (the organization slug)", where)
    return SentryConnection(
        name=entry.name,
        organization=organization.strip(),
        auth_token=token.strip(),
        base_url=_base_url(inputs.get("base_url", DEFAULT_BASE_URL), where),
        anchor_date=_optional(inputs, "anchor_date", parse_datetime, where),
        projects=_projects(inputs.get("projects"), where),
        rate_limit=_number(
            inputs.get("rate_limit", DEFAULT_RATE_LIMIT), "inputs.rate_limit", where, float
        ),
        concurrency=_at_least_one(inputs, "concurrency", DEFAULT_CONCURRENCY, where),
        lookback=_optional(inputs, "lookback", parse_duration, where) or DEFAULT_LOOKBACK,
        ca_bundle=_ca_bundle(inputs.get("ca_bundle"), where),
        timeout=_optional(inputs, "timeout", parse_duration, where) or DEFAULT_TIMEOUT,
        retry_attempts=_at_least_one(inputs, "retry_attempts", DEFAULT_RETRY_ATTEMPTS, where),
        retry_max_wait=_optional(inputs, "retry_max_wait", parse_duration, where)
        or DEFAULT_RETRY_MAX_WAIT,
        checkpoint_every=_optional(inputs, "checkpoint_every", parse_duration, where)
        or DEFAULT_CHECKPOINT_EVERY,
        memory_budget=_memory_budget(inputs.get("memory_budget"), where),
        reconcile_every=_reconcile_every(inputs.get("reconcile_every"), where),
        tag_keys=_tag_keys(inputs.get("tag_keys"), where),
        retention_days=_retention_days(inputs.get("retention_days"), where),
        follow_region=_follow_region(inputs.get("follow_region"), where),
    )


def _follow_region(value: Any, where: str) -> bool | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"inputs.follow_region: '{value}' is not true or false", location=where)


def _optional(inputs: Mapping[str, Any], key: str, parse: Any, where: str) -> Any:
    if inputs.get(key) in (None, ""):
        return None
    try:
        return parse(inputs[key])
    except ValueError as error:
        raise ConfigError(f"inputs.{key}: {error}", location=where) from None


MINIMUM_MEMORY_BUDGET = 16 * 1000**2


def _memory_budget(value: Any, where: str) -> int:
    if value in (None, ""):
        return DEFAULT_MEMORY_BUDGET
    try:
        size = parse_size(value)
    except ValueError as error:
        raise ConfigError(f"inputs.memory_budget: {error}", location=where) from None
    if size < MINIMUM_MEMORY_BUDGET:
        raise ConfigError("inputs.memory_budget: at least 16MB", location=where)
    return size


def _reconcile_every(value: Any, where: str) -> timedelta | None:
    """A duration; 0 reconciles on every run; `off` never does."""
    if value in (None, ""):
        return DEFAULT_RECONCILE_EVERY
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "never")):
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise ConfigError(
            f"inputs.reconcile_every: {value!r} is not a duration (24h, 7d, 0 for every run) "
            "or off",
            location=where,
        ) from None


def _retention_days(value: Any, where: str) -> int | None:
    """Whole days from 1 (a server that keeps less than a day does not exist)."""
    if value in (None, ""):
        return None
    text = "" if isinstance(value, bool) or not isinstance(value, int | str) else str(value)
    if not (text.isascii() and text.isdigit()):  # "²" is a digit, but no number of days
        raise ConfigError(
            f"inputs.retention_days: {value!r} is not a whole number of days (30, 90)",
            location=where,
        )
    days = int(value)
    if days < 1:
        raise ConfigError("inputs.retention_days: at least 1 day", location=where)
    return days


def _base_url(value: Any, where: str) -> str:
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"inputs.base_url: '{value}' is not a URL like https://sentry.io or "
            "http://127.0.0.1:8000",
            location=where,
        )
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(
            f"inputs.base_url: '{value}' must be scheme://host[:port] only, without a path",
            location=where,
        )
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"inputs.base_url: '{value}' has a bad port", location=where) from None
    return text


def _tag_keys(value: Any, where: str) -> tuple[str, ...]:
    if value in (None, ""):
        return DEFAULT_TAG_KEYS
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(k, str) for k in value):
        raise ConfigError(
            "inputs.tag_keys: expected a list of tag keys, e.g. [browser, release]",
            location=where,
        )
    return tuple(value)


def _projects(value: Any, where: str) -> tuple[str, ...] | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(slug, str | int) for slug in value):
        raise ConfigError("inputs.projects: expected a list of project slugs", location=where)
    return tuple(str(slug) for slug in value)


def _number(value: Any, key: str, where: str, kind: type[int] | type[float]) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}", location=where)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a number, got {value!r}", location=where) from None
    if number < 0:
        raise ConfigError(f"{key}: must not be negative", location=where)
    return number


def _at_least_one(inputs: Mapping[str, Any], key: str, default: int, where: str) -> int:
    """A whole number; 0 counts as 1."""
    return max(1, int(_number(inputs.get(key, default), f"inputs.{key}", where, int)))


def _ca_bundle(value: Any, where: str) -> str | None:
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"inputs.ca_bundle: no file at {path}", location=where)
    return str(path)


def _postgres_connection(entry: ConnectionEntry, where: str) -> PostgresConnection:
    # psycopg loads on first use: a run into Parquet never needs it (a tenth of start-up).
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    _check_keys(entry.values, POSTGRES_KEYS, where)
    url = entry.values.get("url")
    if url:
        text = str(url)
        if not text.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "url: not a PostgreSQL URL; expected postgresql://user:password@host:port/database",
                where,
            )
        try:
            conninfo_to_dict(text)
        except psycopg.ProgrammingError as error:
            problem = str(error).strip().splitlines()[0].replace(text, "...")  # it has the password
            raise ConfigError(f"url: not a valid PostgreSQL URL ({problem})", where) from None
        if not _has_numeric_port(text):  # psycopg would only find out when connecting
            raise ConfigError("url: the port is not a number", where)
        return PostgresConnection(entry.name, text)

    keys = {"host": "host", "port": "port", "user": "user", "password": "password"}
    parts = {key: str(entry.values[name]) for name, key in keys.items() if name in entry.values}
    if "database" in entry.values:
        parts["dbname"] = str(entry.values["database"])
    if "sslmode" in entry.values:
        parts["sslmode"] = str(entry.values["sslmode"])
    if "host" not in parts:
        raise ConfigError("either url or host is required", location=where)
    return PostgresConnection(entry.name, make_conninfo(**parts))


def _has_numeric_port(url: str) -> bool:
    """True unless the URL names one host with a port that is not a number."""
    try:
        parts = urlsplit(url)
        if "," not in parts.netloc:  # several hosts: psycopg reads their ports itself
            parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return True


def _duckdb_connection(entry: ConnectionEntry, where: str) -> DuckDBConnection:
    _check_keys(entry.values, DUCKDB_KEYS, where)
    instance = str(entry.values.get("instance") or "").strip()
    if not instance:
        raise ConfigError("instance is required (the DuckDB file, e.g. ./sentry.duckdb)", where)
    return DuckDBConnection(entry.name, Path(instance).expanduser())


def _s3_connection(entry: ConnectionEntry, where: str) -> S3Connection:
    _check_keys(entry.values, S3_KEYS, where)
    values = {
        key: str(value).strip()
        for key, value in entry.values.items()
        if value not in (None, "") and key != "type"
    }
    bucket = values.get("bucket", "").removeprefix("s3://").rstrip("/")
    if not bucket:
        raise ConfigError("bucket is required (the bucket's name)", location=where)
    if not _BUCKET.match(bucket):
        raise ConfigError(
            f"bucket: '{bucket}' is not a bucket name (3 to 63 lower-case letters, digits, "
            "dots and hyphens)",
            location=where,
        )
    key_id, secret = values.get("access_key_id"), values.get("secret_access_key")
    if bool(key_id) != bool(secret):
        raise ConfigError(
            "access_key_id and secret_access_key go together: give both, or neither to use "
            "the AWS chain (environment, profile, instance role)",
            location=where,
        )
    if values.get("session_token") and not key_id:
        raise ConfigError("session_token needs access_key_id and secret_access_key", location=where)
    return S3Connection(
        name=entry.name,
        bucket=bucket,
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=values.get("session_token"),
        endpoint=_endpoint(values.get("endpoint"), where),
        region=values.get("region"),
    )


def _endpoint(value: str | None, where: str) -> str | None:
    """`scheme://host[:port]`; a bare `host[:port]` means https."""
    if not value:
        return None
    text = value.rstrip("/") if "://" in value else f"https://{value.rstrip('/')}"
    parts = urlsplit(text)
    problem = None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "is not a URL like https://s3.example.com or http://127.0.0.1:9000"
    elif parts.path or parts.query:
        problem = "must be scheme://host[:port] only, without a path"
    else:
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            problem = "has a bad port"
    if problem:
        raise ConfigError(f"endpoint: '{value}' {problem}", location=where)
    return text


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)


def connection_inputs(connection: SentryConnection) -> dict[str, Any]:
    """The inputs that shape a connection's requests, secrets and local paths excepted."""
    inputs: dict[str, Any] = {
        "organization": connection.organization,
        "base_url": connection.base_url,
        "rate_limit": connection.rate_limit,
        "concurrency": connection.concurrency,
        "lookback": f"{connection.lookback.total_seconds():g}s",
    }
    if connection.anchor_date is not None:
        inputs["anchor_date"] = connection.anchor_date.isoformat()
    if connection.projects is not None:
        inputs["projects"] = list(connection.projects)
    reconcile = connection.reconcile_every
    inputs["reconcile_every"] = "off" if reconcile is None else f"{reconcile.total_seconds():g}s"
    if connection.tag_keys != DEFAULT_TAG_KEYS:
        inputs["tag_keys"] = list(connection.tag_keys)
    if connection.retention_days is not None:
        inputs["retention_days"] = connection.retention_days
    if connection.follow_region is not None:
        inputs["follow_region"] = connection.follow_region
    return inputs


def replay_connection(name: str, inputs: Mapping[str, Any]) -> SentryConnection:
    """The connection a recording was made with, with a stand-in for its token."""
    values = {
        "type": "api",
        "spec": "sentry",
        "secrets": {"auth_token": "<TOKEN>"},
        # Recordings made before reconcile existed never reconciled.
        "inputs": {"reconcile_every": "off", **inputs},
    }
    connection = resolve_connection(ConnectionEntry(name.upper(), values, "the recording"))
    assert isinstance(connection, SentryConnection)
    return connection
