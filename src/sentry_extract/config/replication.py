"""Replication YAML -> a frozen `Replication`.

Every problem is a `ConfigError` that names the file, the key path and what to fix,
e.g. `replication.yaml: streams.issues.mode: 'incremantal' is not one of ...`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from sentry_extract.config.values import did_you_mean, parse_datetime
from sentry_extract.errors import ConfigError
from sentry_extract.model.modes import MODE_NAMES, Mode
from sentry_extract.model.spec import EXPLORE_MAX_FIELDS, Parent, StreamSpec, with_fields
from sentry_extract.model.windows import Window
from sentry_extract.records import COLUMN_CASINGS, SNAKE, Selection, column_name
from sentry_extract.source.catalog import STREAM_NAMES, STREAMS_BY_NAME, WILDCARD_NAMES
from sentry_extract.targets.partitions import PARTITION_VARIABLES

WILDCARD = "*"
ROOT_KEYS = ("source", "target", "defaults", "streams", "env")
STREAM_KEYS = (
    "mode",
    "object",
    "primary_key",
    "update_key",
    "select",
    "disabled",
    "source_options",
    "target_options",
)
SOURCE_OPTION_KEYS = ("range", "query", "fields")
TARGET_OPTION_KEYS = ("column_casing", "format")
FILE_FORMATS = ("parquet", "delta")  # what a file target writes; parquet by default
PLACEHOLDERS = ("stream_name", "source_name", "target_name", "run_timestamp")
# Filled per row by file targets, from the update key: kept as they are here.
ROW_PLACEHOLDERS = PARTITION_VARIABLES

_PLACEHOLDER_LIST = ", ".join("{" + name + "}" for name in (*PLACEHOLDERS, *PARTITION_VARIABLES))
_BRACE = re.compile(r"\{([^{}]*)\}")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class StreamConfig:
    name: str
    mode: Mode
    object: str
    primary_key: tuple[str, ...]  # output column names
    update_key: str | None  # output column name
    selection: Selection
    column_casing: str
    query: str  # issues search query; empty reads every status
    backfill_range: Window | None
    mode_kept_over_default: bool = False  # defaults.mode did not fit: its own mode instead
    format: str = "parquet"  # file targets: a Parquet dataset, or a Delta table
    fields: tuple[str, ...] = ()  # Explore streams: the fields asked for, when not the default
    spec: StreamSpec = field(init=False, repr=False, compare=False)  # resolved once, here

    def __post_init__(self) -> None:
        spec = STREAMS_BY_NAME[self.name]
        object.__setattr__(self, "spec", with_fields(spec, self.fields) if self.fields else spec)


@dataclass(frozen=True)
class Replication:
    path: Path
    source: str
    target: str
    streams: tuple[StreamConfig, ...]
    run_started_at: datetime
    notes: tuple[str, ...] = ()  # what the file asks that does not apply, said once a run

    def stream(self, name: str) -> StreamConfig:
        return next(stream for stream in self.streams if stream.name == name)


@dataclass(frozen=True)
class Overrides:
    """What the command line changes: `--streams` and `--mode`."""

    streams: tuple[str, ...] = ()
    mode: str | None = None


def load_replication(
    path: Path,
    environ: Mapping[str, str],
    run_started_at: datetime,
    overrides: Overrides = Overrides(),
) -> Replication:
    label = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", location=str(path)) from None
    except OSError as error:
        raise ConfigError(f"cannot be read ({error.strerror})", location=str(path)) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise ConfigError(f"not valid YAML: {problem}{where}", location=label) from None
    return parse_replication(document, label, path, environ, run_started_at, overrides)


def parse_replication(
    document: Any,
    label: str,
    path: Path,
    environ: Mapping[str, str],
    run_started_at: datetime,
    overrides: Overrides,
) -> Replication:
    reader = _Reader(label)
    root = reader.mapping(document, "", "a map with source, target and streams")
    reader.known_keys(root, ROOT_KEYS, "")
    variables = {**environ, **_env_section(reader, root.get("env"))}
    source = reader.name(root.get("source"), "source")
    target = reader.name(root.get("target"), "target")
    defaults = reader.mapping(root.get("defaults") or {}, "defaults", "a map of stream keys")
    reader.known_keys(defaults, STREAM_KEYS, "defaults")
    entries = _stream_entries(reader, root.get("streams"))
    if overrides.mode is not None and overrides.mode not in MODE_NAMES:
        raise ConfigError(f"--mode: '{overrides.mode}' is not one of {', '.join(MODE_NAMES)}")
    selected = _selected_names(reader, entries, overrides.streams)
    context = _TemplateContext(source, target, run_started_at, variables)
    streams = tuple(
        stream
        for name in selected
        if (stream := _stream_config(reader, name, entries, defaults, context, overrides))
    )
    notes = _default_mode_notes(defaults, streams)
    return Replication(path, source, target, streams, run_started_at, notes)


def _default_mode_notes(
    defaults: Mapping[str, Any], streams: Sequence[StreamConfig]
) -> tuple[str, ...]:
    """`defaults.mode` applies to every stream that sets none ('*' included), except a
    backfill for streams with no time range to backfill: they keep their own mode."""
    wanted = defaults.get("mode")
    kept = [stream for stream in streams if stream.mode_kept_over_default]
    if wanted is None or not kept:
        return ()
    names = ", ".join(f"{stream.name} ({stream.mode})" for stream in kept)
    return (f"defaults.mode {wanted} does not apply to streams without a time range: {names}",)


class _Reader:
    """Type checks that raise errors naming the file and key path."""

    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, key_path: str, message: str) -> ConfigError:
        location = f"{self.label}: {key_path}" if key_path else self.label
        return ConfigError(message, location=location)

    def mapping(self, value: Any, key_path: str, expected: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key_path, f"expected {expected}, got {_describe(value)}")
        return {str(key): item for key, item in value.items()}

    def known_keys(self, value: Mapping[str, Any], allowed: Sequence[str], key_path: str) -> None:
        for key in value:
            if key not in allowed:
                where = f"{key_path}.{key}" if key_path else key
                hint = did_you_mean(key, allowed)
                raise self.fail(where, f"unknown key{hint}; expected one of {', '.join(allowed)}")

    def name(self, value: Any, key_path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key_path, "required: the name of a connection")
        return value.strip()

    def string_list(self, value: Any, key_path: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(key_path, f"expected a list of column names, got {_describe(value)}")
        return tuple(value)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    kinds = {dict: "a map", list: "a list", str: "text", bool: "true/false", int: "a number"}
    return kinds.get(type(value), type(value).__name__) + (
        f" ({value!r})" if isinstance(value, str | int | float) else ""
    )


def _env_section(reader: _Reader, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    env = reader.mapping(value, "env", "a map of variable names to values")
    return {key: "" if item is None else str(item) for key, item in env.items()}


def _stream_entries(reader: _Reader, value: Any) -> dict[str, dict[str, Any]]:
    streams = reader.mapping(value, "streams", "a map of stream names (or '*')")
    if not streams:
        raise reader.fail("streams", "no streams: name at least one, or '*' for all")
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in streams.items():
        if name != WILDCARD and name not in STREAM_NAMES:
            raise reader.fail(
                f"streams.{name}",
                f"unknown stream{did_you_mean(name, STREAM_NAMES)}; "
                f"available: {', '.join(STREAM_NAMES)} (or '*' for all)",
            )
        body = reader.mapping(entry if entry is not None else {}, f"streams.{name}", "a map")
        reader.known_keys(body, STREAM_KEYS, f"streams.{name}")
        entries[name] = body
    return entries


def _selected_names(
    reader: _Reader, entries: Mapping[str, Any], wanted: Sequence[str]
) -> list[str]:
    wildcard = WILDCARD_NAMES if WILDCARD in entries else ()
    present = tuple(name for name in STREAM_NAMES if name in entries or name in wildcard)
    for name in wanted:
        if name not in STREAM_NAMES:
            raise ConfigError(
                f"--streams: unknown stream '{name}'{did_you_mean(name, STREAM_NAMES)}; "
                f"available: {', '.join(STREAM_NAMES)}"
            )
        if name not in present and wildcard:
            raise ConfigError(
                f"--streams: stream '{name}' runs only when named: '*' in {reader.label} "
                f"does not select it; add '{name}:' under streams"
            )
        if name not in present:
            raise ConfigError(
                f"--streams: stream '{name}' is not in {reader.label}; it has: {', '.join(present)}"
            )
    return [name for name in present if not wanted or name in wanted]


@dataclass(frozen=True)
class _TemplateContext:
    source: str
    target: str
    run_started_at: datetime
    variables: Mapping[str, str]


def render_object(
    template: str, stream: str, context: _TemplateContext, reader: _Reader, key_path: str
) -> str:
    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in context.variables:
            raise reader.fail(key_path, f"environment variable '{name}' is not set")
        return context.variables[name]

    values = {
        "stream_name": stream,
        "source_name": context.source.lower(),
        "target_name": context.target.lower(),
        "run_timestamp": context.run_started_at.strftime("%Y_%m_%d_%H%M%S"),
    }

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in ROW_PLACEHOLDERS:
            return match.group(0)
        if name not in values:
            hint = did_you_mean(name, PLACEHOLDERS + ROW_PLACEHOLDERS)
            raise reader.fail(
                key_path,
                f"unknown placeholder '{{{name}}}'{hint}; use {_PLACEHOLDER_LIST}",
            )
        return values[name]

    with_variables = _VARIABLE.sub(variable, template)
    return _BRACE.sub(placeholder, with_variables)


def _stream_config(
    reader: _Reader,
    name: str,
    entries: Mapping[str, dict[str, Any]],
    defaults: Mapping[str, Any],
    context: _TemplateContext,
    overrides: Overrides,
) -> StreamConfig | None:
    explicit = name in entries
    own = entries[name] if explicit else entries[WILDCARD]
    own_path = f"streams.{name if explicit else WILDCARD}"
    merged = {**defaults, **own}

    def path_of(key: str) -> str:
        return f"defaults.{key}" if key in defaults and key not in own else f"{own_path}.{key}"

    if merged.get("disabled") not in (None, False, True):
        raise reader.fail(path_of("disabled"), "expected true or false")
    if merged.get("disabled") is True and name not in overrides.streams:
        return None
    spec = STREAMS_BY_NAME[name]
    source_options = reader.mapping(
        merged.get("source_options") or {}, path_of("source_options"), "a map"
    )
    reader.known_keys(source_options, SOURCE_OPTION_KEYS, path_of("source_options"))
    fields = _fields(reader, spec, source_options.get("fields"), path_of("source_options"))
    spec = with_fields(spec, fields) if fields else spec
    mode = _mode(reader, spec, own, defaults, own_path, overrides)
    default = defaults.get("mode")
    kept_over_default = (
        default is not None and own.get("mode") is None and overrides.mode is None
    ) and not _fits(spec, default)
    target_options = reader.mapping(
        merged.get("target_options") or {}, path_of("target_options"), "a map"
    )
    reader.known_keys(target_options, TARGET_OPTION_KEYS, path_of("target_options"))
    casing = target_options.get("column_casing", SNAKE)
    if casing not in COLUMN_CASINGS:
        raise reader.fail(
            f"{path_of('target_options')}.column_casing",
            f"'{casing}' is not one of {', '.join(COLUMN_CASINGS)}",
        )
    file_format = target_options.get("format", FILE_FORMATS[0])
    if file_format not in FILE_FORMATS:
        raise reader.fail(
            f"{path_of('target_options')}.format",
            f"'{file_format}' is not one of {', '.join(FILE_FORMATS)}",
        )
    columns = [column_name(column.source_name, casing) for column in spec.columns]
    natural_key = tuple(column_name(key, casing) for key in spec.primary_key)
    primary_key = natural_key
    if merged.get("primary_key") is not None:
        primary_key = _columns(reader, merged["primary_key"], columns, path_of("primary_key"), name)
        if spec.parent is not Parent.ORGANIZATION:
            # eventID is unique per project only: never merge rows across parents.
            primary_key += tuple(key for key in natural_key if key not in primary_key)
    update_key = column_name(spec.update_key, casing) if spec.update_key else None
    if merged.get("update_key") is not None:
        update_key = _columns(reader, merged["update_key"], columns, path_of("update_key"), name)[0]
    selection = Selection()
    if merged.get("select") is not None:
        entries_ = reader.string_list(merged["select"], path_of("select"))
        selection = Selection.parse(entries_)
        _columns(
            reader, list(selection.include + selection.exclude), columns, path_of("select"), name
        )
    template = merged.get("object")
    if not isinstance(template, str) or not template.strip():
        raise reader.fail(
            path_of("object"),
            "required: where to write the stream, e.g. sentry.{stream_name} or "
            "file://./output/{stream_name}",
        )
    query = source_options.get("query", "")
    if not isinstance(query, str):
        raise reader.fail(f"{path_of('source_options')}.query", "expected text")
    backfill_range = None
    if mode.reads_range:
        backfill_range = _range(
            reader, source_options.get("range"), f"{path_of('source_options')}.range"
        )
    return StreamConfig(
        name=name,
        mode=mode,
        object=render_object(template.strip(), name, context, reader, path_of("object")),
        primary_key=primary_key,
        update_key=update_key,
        selection=selection,
        column_casing=casing,
        query=query,
        backfill_range=backfill_range,
        mode_kept_over_default=kept_over_default,
        format=file_format,
        fields=fields,
    )


def _fields(reader: _Reader, spec: StreamSpec, value: Any, options_path: str) -> tuple[str, ...]:
    """`source_options.fields`: the Explore fields to ask for instead of the stream's
    default list; they must hold its key and `timestamp` (the sort)."""
    if value is None:
        return ()
    key_path = f"{options_path}.fields"
    if not spec.takes_fields:
        raise reader.fail(
            key_path,
            f"{spec.name} takes no field list; only the Explore "
            "streams do (error_index, spans, transactions, logs)",
        )
    if (
        isinstance(value, str)
        or not isinstance(value, list)
        or not value
        or not all(isinstance(item, str) and item.strip() for item in value)
    ):
        raise reader.fail(
            key_path, f"expected a list of Sentry field names, got {_describe(value)}"
        )
    fields = tuple(item.strip() for item in value)
    if len(fields) > EXPLORE_MAX_FIELDS:
        raise reader.fail(
            key_path, f"{len(fields)} fields: Sentry answers at most {EXPLORE_MAX_FIELDS}"
        )
    repeated = sorted({name for name in fields if fields.count(name) > 1})
    if repeated:
        raise reader.fail(key_path, f"{', '.join(repeated)} named twice")
    functions = [name for name in fields if "(" in name]
    if functions:
        raise reader.fail(key_path, f"{functions[0]} is a function: list fields only, one row each")
    needed = [name for name in (*spec.primary_key, spec.update_key or "") if name]
    missing = [name for name in needed if name not in fields]
    if missing:
        raise reader.fail(
            key_path,
            f"missing {', '.join(missing)}: a field list must hold the key "
            f"({', '.join(spec.primary_key)}) and {spec.update_key} (the sort)",
        )
    return fields


def _fits(spec: StreamSpec, mode: str) -> bool:
    """False when `mode` is a backfill and the stream has no time range to backfill."""
    return mode != Mode.BACKFILL or spec.reads_time_range


def _mode(
    reader: _Reader,
    spec: StreamSpec,
    own: Mapping[str, Any],
    defaults: Mapping[str, Any],
    own_path: str,
    overrides: Overrides,
) -> Mode:
    """The stream's own mode, else `--mode`'s, else `defaults.mode` where it fits the
    stream (as Sling applies defaults, to streams from '*' too), else its natural mode."""
    for value, key_path in (
        (defaults.get("mode"), "defaults.mode"),
        (own.get("mode"), f"{own_path}.mode"),
    ):
        if value is not None and value not in MODE_NAMES:
            raise reader.fail(key_path, f"'{value}' is not one of {', '.join(MODE_NAMES)}")
    if overrides.mode is not None:
        return Mode(overrides.mode)
    if own.get("mode") is not None:
        return Mode(own["mode"])
    if defaults.get("mode") is not None and _fits(spec, defaults["mode"]):
        return Mode(defaults["mode"])
    return Mode.INCREMENTAL if spec.is_incremental else Mode.FULL_REFRESH


def _columns(
    reader: _Reader, value: Any, columns: Sequence[str], key_path: str, stream: str
) -> tuple[str, ...]:
    names = reader.string_list(value, key_path)
    for column in names:
        if column not in columns:
            raise reader.fail(
                key_path,
                f"'{column}' is not a column of {stream}{did_you_mean(column, columns)}; "
                "see 'sentry-extract conns discover NAME --columns'",
            )
    return names


def _range(reader: _Reader, value: Any, key_path: str) -> Window:
    if not isinstance(value, str) or value.count(",") != 1:
        raise reader.fail(
            key_path, "backfill needs range: 'START,END' (e.g. '2024-01-01,2024-02-01')"
        )
    start_text, end_text = (part.strip() for part in value.split(","))
    try:
        window = Window(parse_datetime(start_text), parse_datetime(end_text))
    except ValueError as error:
        raise reader.fail(key_path, str(error)) from None
    if window.start >= window.end:
        raise reader.fail(key_path, "START must be before END")
    return window
