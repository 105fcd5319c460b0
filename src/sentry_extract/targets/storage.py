"""Where Parquet datasets live: the one seam between the Parquet target and a filesystem.

Every change a dataset sees is one of: a whole file written at once under its final
name (a new file, or one that replaces a file of the same name), or a file deleted.
A reader listing the folder sees each file whole, old or new, never a part. Locally a
file is written beside its place under a hidden name, fsynced and renamed over it.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import pyarrow as pa

from sentry_extract.errors import LockedError
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

    def list_files(self, suffix: str) -> list[StoredFile]: ...

    def open_input(self, path: str) -> pa.NativeFile: ...

    def write(self, path: str, fill: Callable[[pa.NativeFile], None]) -> None: ...

    def read_bytes(self, path: str) -> bytes | None: ...

    def write_bytes(self, path: str, content: bytes) -> None: ...

    def delete(self, path: str) -> None: ...

    def move(self, source: str, target: str) -> None: ...

    def size(self, path: str) -> int: ...

    def lock(self) -> Lock: ...

    def can_write(self) -> str | None: ...


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

    def list_files(self, suffix: str) -> list[StoredFile]:
        """Files ending in `suffix` below the root, hidden ones (`.`, `_`) left out."""
        found = []
        for folder, folders, names in os.walk(self.folder):
            folders[:] = sorted(name for name in folders if not _is_hidden(name))
            for name in names:
                if name.endswith(suffix) and not _is_hidden(name):
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

    def remove_temporary(self) -> None:
        """Working files of a run that was killed (we hold the lock: nobody else writes)."""
        for folder, folders, names in os.walk(self.folder):
            for name in names:
                if name.startswith(TEMPORARY_PREFIX) and name.endswith(".tmp"):
                    (Path(folder) / name).unlink(missing_ok=True)
            folders[:] = [name for name in folders if not name.startswith(TEMPORARY_PREFIX)]


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.handle: IO[bytes] | None = open(path, "ab")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise LockedError(
                f"another sentry-extract run is writing {path.parent}; try again when it ends"
            ) from None

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))
