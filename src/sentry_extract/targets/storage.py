"""Where Parquet datasets live: the one seam between the Parquet target and a filesystem.

Every change a dataset sees is one of: a whole file written at once under its final
name (a new file, or one that replaces a file of the same name), or a file deleted.
A reader listing the folder sees each file whole, old or new, never a part. Locally a
file is written beside its place under a hidden name, fsynced and renamed over it; in
a bucket (`targets.s3`) it is one PUT of a file prepared on this machine.

A `Place` says where a target's datasets live (folders here, or a bucket) and opens a
`Storage` for one dataset's root. Staged rows always sit in a local working folder
(`Storage.scratch`) and reach the dataset through `upload`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import pyarrow as pa

from sentry_extract.errors import ConfigError, LockedError
from sentry_extract.files import fsync_folder, write_atomically

TEMPORARY_PREFIX = ".sentry-extract-"  # hidden from pyarrow, DuckDB and Spark readers


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the dataset's root, `/`-separated
    size: int


class Lock(Protocol):
    def release(self) -> None: ...


class Storage(Protocol):
    """A dataset's root folder and what can be done to the files below it."""

    root: str

    def describe(self, path: str = "") -> str: ...

    def prepare(self) -> None:
        """Make the root exist where that means something (a local folder)."""

    def scratch(self) -> Path:
        """A new local working folder for staged files; the caller removes it."""

    def list_files(self, suffix: str, hidden: bool = False) -> list[StoredFile]:
        """Files ending in `suffix` below the root, in folders readers see; with
        `hidden`, only hidden files (`.name`) instead of only visible ones."""

    def open_input(self, path: str) -> pa.NativeFile: ...

    def write(self, path: str, fill: Callable[[pa.NativeFile], None]) -> None: ...

    def upload(self, local: Path, path: str) -> None:
        """The local file `local` becomes `path` in one step (and is gone from here)."""

    def read_bytes(self, path: str) -> bytes | None: ...

    def write_bytes(self, path: str, content: bytes) -> None: ...

    def delete(self, path: str) -> None: ...

    def move(self, source: str, target: str) -> None: ...

    def size(self, path: str) -> int: ...

    def lock(self) -> Lock: ...

    def remove_leftovers(self) -> None:
        """Working files of a run that was killed (the caller holds the lock)."""


class Place(Protocol):
    """Where a Parquet target's datasets live: folders on this machine, or a bucket."""

    def form_problem(self, object_name: str) -> str | None:
        """Why `object_name` is not an object of this place, or None."""

    def location(self, object_name: str) -> str:
        """The object without its scheme: a local path, or `bucket/prefix`."""

    def access_problem(self, root: str) -> str | None:
        """Why a dataset at `root` cannot be written, or None; raises `ConfigError` for
        problems of the connection itself (credentials, bucket, endpoint)."""

    def storage(self, root: str, lock_name: str) -> Storage: ...


def object_location(place: Place, object_name: str) -> tuple[str, str | None]:
    """An object's location in `place`, and why it cannot be one (None when it can)."""
    problem = place.form_problem(object_name)
    if problem is not None:
        return "", problem
    text = place.location(object_name)
    return text, None if text.strip() else "the object is an empty path"


class LocalPlace:
    """Folders on this machine: `file://path` or a plain path."""

    def form_problem(self, object_name: str) -> str | None:
        if "://" in object_name.removeprefix("file://"):
            return (
                f"'{object_name}' is not a file path: use file://path or a plain path "
                "(a bucket needs a target connection of type s3)"
            )
        return None

    def location(self, object_name: str) -> str:
        return object_name.removeprefix("file://")

    def access_problem(self, root: str) -> str | None:
        return LocalStorage(Path(root).expanduser()).can_write()

    def storage(self, root: str, lock_name: str) -> LocalStorage:
        return LocalStorage(Path(root).expanduser(), lock_name)


class LocalStorage:
    def __init__(self, root: Path, lock_name: str = ".sentry-extract.lock") -> None:
        self.root = str(root)
        self.folder = root
        self.lock_name = lock_name

    def describe(self, path: str = "") -> str:
        return str(self.folder / path) if path else str(self.folder)

    def can_write(self) -> str | None:
        """Why the folder cannot be written, or None."""
        existing = next((p for p in (self.folder, *self.folder.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            return f"cannot write under {existing}: it is a file, not a folder"
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            return f"cannot write under {existing}: permission denied"
        return None

    def prepare(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot create output folder {self.folder}: {error.strerror}"
            ) from None

    def scratch(self) -> Path:
        """Inside the dataset's folder: on the same disk, staged files move in by rename."""
        folder = self.folder / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:12]}"
        folder.mkdir()
        return folder

    def list_files(self, suffix: str, hidden: bool = False) -> list[StoredFile]:
        """Files ending in `suffix` below the root, hidden ones (`.`, `_`) left out (or,
        with `hidden`, only files starting with `.`)."""
        found = []
        for folder, folders, names in os.walk(self.folder):
            folders[:] = sorted(name for name in folders if not _is_hidden(name))
            for name in names:
                wanted = name.startswith(".") if hidden else not _is_hidden(name)
                if name.endswith(suffix) and wanted:
                    path = Path(folder) / name
                    relative = path.relative_to(self.folder).as_posix()
                    found.append(StoredFile(relative, path.stat().st_size))
        return sorted(found, key=lambda stored: stored.path)

    def open_input(self, path: str) -> pa.NativeFile:
        return pa.OSFile(str(self.folder / path), "rb")

    def write(self, path: str, fill: Callable[[pa.NativeFile], None]) -> None:
        final = self.folder / path
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.parent / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:12]}.tmp"
        try:
            with pa.OSFile(str(temporary), "wb") as sink:
                fill(sink)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_folder(final.parent)

    def upload(self, local: Path, path: str) -> None:
        final = self.folder / path
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.replace(local, final)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            self.write(path, lambda sink: _copy_into(local, sink))  # another disk
            local.unlink()
            return
        fsync_folder(final.parent)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            return (self.folder / path).read_bytes()
        except FileNotFoundError:
            return None

    def write_bytes(self, path: str, content: bytes) -> None:
        write_atomically(self.folder / path, content)

    def delete(self, path: str) -> None:
        target = self.folder / path
        target.unlink(missing_ok=True)
        folder = target.parent
        while folder != self.folder and folder.is_relative_to(self.folder):
            try:
                folder.rmdir()  # partition folders left empty go too
            except OSError:
                break
            folder = folder.parent

    def move(self, source: str, target: str) -> None:
        """`source` replaces `target` in one step; nothing happens when it is gone."""
        origin = self.folder / source
        if not origin.exists():
            return
        destination = self.folder / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(origin, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(origin, destination)
        fsync_folder(destination.parent)

    def size(self, path: str) -> int:
        try:
            return (self.folder / path).stat().st_size
        except FileNotFoundError:
            return 0

    def lock(self) -> Lock:
        self.folder.mkdir(parents=True, exist_ok=True)
        return _FileLock(self.folder / self.lock_name)

    def remove_leftovers(self) -> None:
        """Working folders and files of a run that was killed, this version's and older
        ones' (we hold the lock: nobody else writes)."""
        for pattern in (f"{TEMPORARY_PREFIX}*", ".staging-*", ".*.staging-*"):
            for path in self.folder.glob(pattern):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
        for pattern in (".data-*.tmp", ".*.data-*.tmp"):
            for path in self.folder.glob(pattern):
                path.unlink(missing_ok=True)
        for folder, folders, names in os.walk(self.folder):
            for name in names:
                if name.startswith(TEMPORARY_PREFIX) and name.endswith(".tmp"):
                    (Path(folder) / name).unlink(missing_ok=True)
            folders[:] = [name for name in folders if not name.startswith(TEMPORARY_PREFIX)]


class _FileLock:
    """An exclusive `flock` on a lock file beside the dataset, removed when released: a
    folder holds `.sentry-extract.lock` only while a run writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[bytes] | None = None
        for _ in range(3):
            handle = open(path, "ab")  # noqa: SIM115 - held until release
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise LockedError(
                    f"another sentry-extract run is writing {path.parent}; try again when it ends"
                ) from None
            if _is_same_file(handle, path):
                self.handle = handle
                return
            handle.close()  # its holder removed it as we opened it: lock the new one
        raise LockedError(f"another sentry-extract run is writing {path.parent}")

    def release(self) -> None:
        if self.handle is not None:
            self.path.unlink(missing_ok=True)  # while still held: no one locks a stale file
            self.handle.close()
            self.handle = None


def _is_same_file(handle: IO[bytes], path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _copy_into(local: Path, sink: pa.NativeFile) -> None:
    with open(local, "rb") as source:
        while chunk := source.read(1 << 20):
            sink.write(chunk)


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


class StoredDocument:
    """One small file beside a dataset (its state), as `state.JsonStateStore` reads it."""

    def __init__(self, storage: Storage, path: str) -> None:
        self.storage = storage
        self.path = path

    def describe(self) -> str:
        return self.storage.describe(self.path)

    def read(self) -> bytes | None:
        return self.storage.read_bytes(self.path)

    def write(self, content: bytes) -> None:
        self.storage.write_bytes(self.path, content)

    def remove(self) -> None:
        self.storage.delete(self.path)
