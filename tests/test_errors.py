"""One exception tree, in errors.py, drawn in its docstring; errors explained, not rewritten."""

from __future__ import annotations

import importlib
import pkgutil
import re
import signal

import pytest

import sentry_extract
from sentry_extract import errors, pipeline
from sentry_extract.config.connections import ConnectionEntry, SentryConnection, resolve_connection
from sentry_extract.testing.fake_sentry import FakeSentry

from .helpers import TOKEN

DRAWN = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w+)\b")


def exception_classes(module: object) -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == getattr(module, "__name__", "")
    }


def test_every_exception_of_the_package_is_in_errors_py() -> None:
    for info in pkgutil.walk_packages(sentry_extract.__path__, "sentry_extract."):
        if info.name.startswith("sentry_extract.testing") or info.name.endswith("__main__"):
            continue  # the fake Sentry's own signals are not the product's errors
        module = importlib.import_module(info.name)
        if module is not errors:
            assert exception_classes(module) == {}, info.name
    defined = exception_classes(errors)
    for name in ("RunCancelled", "ReplayMissError", "Interrupted", "LockedError"):
        assert name in defined, name


def test_the_docstring_draws_the_tree_as_it_is() -> None:
    """Each class drawn under its base, four columns deeper; every class drawn once."""
    defined = exception_classes(errors)
    assert errors.__doc__ is not None
    lines = errors.__doc__.splitlines()
    root = next(i for i, line in enumerate(lines) if line.strip() == "SentryExtractError")
    tree = lines[root : lines.index("", root)]
    base = len(tree[0]) - len(tree[0].lstrip())
    drawn: list[str] = []
    parents: list[str] = []
    for line in tree:
        match = DRAWN.match(line)
        assert match is not None, line
        depth = (len(match["indent"]) - base) // 4
        parents[depth:] = [match["name"]]
        drawn.append(match["name"])
        cls = defined[match["name"]]
        parent = parents[depth - 1] if depth else "Exception"
        assert cls.__bases__[0].__name__ == parent, match["name"]
    assert sorted(drawn) == sorted(defined)


def test_explaining_an_error_raises_a_new_one_from_the_original(fake: FakeSentry) -> None:
    values = {
        "type": "api",
        "spec": "sentry",
        "secrets": {"auth_token": TOKEN},
        "inputs": {"organization": "nope", "base_url": fake.base_url},
    }
    connection = resolve_connection(ConnectionEntry("SENTRY", values, "test"))
    assert isinstance(connection, SentryConnection)
    with pytest.raises(errors.ConfigError) as raised:
        pipeline.test_connection(connection)
    assert str(raised.value).startswith("organization 'nope' not found at ")
    original = raised.value.__cause__
    assert isinstance(original, errors.NotFoundError)
    assert original.message == "The requested resource does not exist"
    assert original.status == 404


@pytest.mark.parametrize(
    ("error", "incomplete", "code"),
    [
        (None, False, 0),
        (None, True, 1),
        (errors.TargetError("cannot write"), False, 1),
        (errors.AuthenticationError("401"), False, 1),
        (RuntimeError("a bug"), False, 1),
        (errors.ConfigError("bad key"), False, 2),
        (errors.ConfigError("bad key"), True, 2),
        (errors.Interrupted(signal.SIGINT), False, 130),
        (errors.Interrupted(signal.SIGTERM), True, 143),
        (KeyboardInterrupt(), False, 130),
    ],
)
def test_one_function_maps_what_stopped_a_command_to_its_exit_code(
    error: BaseException | None, incomplete: bool, code: int
) -> None:
    assert errors.exit_code(error, incomplete=incomplete) == code


def test_a_summary_takes_its_exit_code_from_what_stopped_the_run() -> None:
    complete = pipeline.StreamResult("teams", "full-refresh", "file://out/teams")
    failed = pipeline.StreamResult("issues", "incremental", "file://out/issues", status="failed")
    assert pipeline.RunSummary([complete], 1.0).exit_code == 0
    assert pipeline.RunSummary([complete, failed], 1.0).exit_code == 1
    assert pipeline.RunSummary([], 1.0, "stopped", errors.ConfigError("bad")).exit_code == 2
    stopped = errors.Interrupted(signal.SIGTERM)
    assert pipeline.RunSummary([complete], 1.0, "SIGTERM", stopped).exit_code == 143
