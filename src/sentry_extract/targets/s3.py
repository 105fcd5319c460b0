"""Parquet datasets in a bucket: AWS S3, or an S3-compatible server (MinIO, R2, Ceph).

The dataset code is the local one (`dataset`, `parquet`); what differs sits here:

- an object PUT is atomic, a folder is not: every write is a file prepared on this
  machine and then one upload (a multipart upload that fails is aborted, so an object
  is whole or absent); a move is a server-side copy, then a delete of the source;
- listing and reading go through pyarrow's `S3FileSystem` (Parquet footers are read
  with ranged GETs); boto3 does what pyarrow cannot: uploads that never complete half
  a file, deletes that leave no folder markers, conditional puts, and error codes;
- the lock is an object created with a conditional put (`If-None-Match: *`) holding
  an owner and a lease that a thread renews (`If-Match` on its ETag). A lease not
  renewed for its length (by the server's clock), or whose holder died on this very
  machine, is taken over: a `kill -9`ed run never blocks the next one for long;
- errors say in one line what failed: a wrong key, no such bucket, no endpoint.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pyarrow as pa
import pyarrow.fs as pafs
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from sentry_extract.errors import ConfigError, LockedError, TargetError
from sentry_extract.targets.bucket import BucketAccess
from sentry_extract.targets.storage import TEMPORARY_PREFIX, StoredFile

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LEASE_SECONDS = 60.0  # a lock not renewed for this long is taken over
TRANSFER = TransferConfig(
    multipart_threshold=64 * 1024**2, multipart_chunksize=64 * 1024**2, use_threads=False
)
CONFLICT_STATUSES = (409, 412)  # ConditionalRequestConflict, PreconditionFailed


# --- where: objects in a bucket ------------------------------------------------------------


class S3Place:
    """The datasets of one S3 connection: `sentry/{stream_name}` (a prefix in the
    connection's bucket) or `s3://bucket/prefix/{stream_name}`."""

    def __init__(
        self,
        connection: BucketAccess,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.connection = connection
        self.lease_seconds = lease_seconds
        self.clock = clock  # the time a lock's age is judged at; None: the server's
        self._checked: set[str] = set()
        self._opening = threading.Lock()
        self._client: S3Client | None = None
        self._filesystem: pafs.S3FileSystem | None = None

    # --- Place ------------------------------------------------------------------------

    def form_problem(self, object_name: str) -> str | None:
        if object_name.startswith("s3://"):
            bucket = object_name.removeprefix("s3://").partition("/")[0]
            if not bucket:
                return f"'{object_name}' names no bucket: use s3://bucket/prefix/{{stream_name}}"
            return None
        if "://" in object_name:
            return (
                f"'{object_name}' is not an object of the s3 connection "
                f"{self.connection.name}: use a prefix in its bucket (sentry/{{stream_name}}) "
                "or s3://bucket/prefix/{stream_name}"
            )
        return None

    def location(self, object_name: str) -> str:
        if object_name.startswith("s3://"):
            return object_name.removeprefix("s3://")
        return f"{self.connection.bucket}/{object_name.lstrip('/')}"

    def access_problem(self, root: str) -> str | None:
        """Lists the prefix once per bucket: credentials, bucket and endpoint are checked
        before anything is read from Sentry."""
        bucket, _, prefix = root.partition("/")
        if bucket in self._checked:
            return None
        try:
            self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as error:
            raise ConfigError(
                f"cannot list s3://{root}: {self.explain(error, bucket)}",
                location=f"connection {self.connection.name}",
            ) from None
        self._checked.add(bucket)
        return None

    def storage(self, root: str, lock_name: str) -> S3Storage:
        return S3Storage(self, root, lock_name)

    # --- clients ----------------------------------------------------------------------

    @property
    def client(self) -> S3Client:
        with self._opening:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    @property
    def filesystem(self) -> pafs.S3FileSystem:
        with self._opening:
            if self._filesystem is None:
                self._filesystem = self._new_filesystem()
            return self._filesystem

    def _region(self) -> str | None:
        if self.connection.region:
            return self.connection.region
        return "us-east-1" if self.connection.endpoint else None

    def _new_client(self) -> S3Client:
        connection = self.connection
        config = Config(
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if connection.endpoint else {},
        )
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=connection.endpoint,
            region_name=self._region(),
            aws_access_key_id=connection.access_key_id,
            aws_secret_access_key=connection.secret_access_key,
            aws_session_token=connection.session_token,
            config=config,
        )

    def _new_filesystem(self) -> pafs.S3FileSystem:
        connection = self.connection
        options: dict[str, Any] = {
            "region": self._region(),
            "connect_timeout": 10,
            "request_timeout": 60,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        }
        if connection.access_key_id:
            options["access_key"] = connection.access_key_id
            options["secret_key"] = connection.secret_access_key
            options["session_token"] = connection.session_token
        if connection.endpoint:
            scheme, _, host = connection.endpoint.partition("://")
            options["endpoint_override"] = host
            options["scheme"] = scheme
        return pafs.S3FileSystem(**options)

    # --- errors -----------------------------------------------------------------------

    def explain(self, error: Exception, bucket: str) -> str:
        """What failed, in one line that names the problem and holds no secret."""
        where = self.connection.endpoint or "AWS"
        if isinstance(error, NoCredentialsError):
            return (
                "no credentials: set access_key_id and secret_access_key in the connection, "
                "or give the AWS chain some (AWS_ACCESS_KEY_ID, AWS_PROFILE, an instance role)"
            )
        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            if code == "InvalidAccessKeyId":
                return f"the access key id was rejected by {where} ({status} {code})"
            if code == "SignatureDoesNotMatch":
                return f"the secret access key was rejected by {where} ({status} {code})"
            if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
                return f"the session token was rejected by {where} ({status} {code})"
            if code == "NoSuchBucket":
                return f"no such bucket '{bucket}' at {where} ({status} {code})"
            if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301"):
                return f"bucket '{bucket}' is in another region: set region ({status} {code})"
            if status == 403:
                return f"access denied to bucket '{bucket}' at {where} ({status} {code})"
            message = _one_line(str(error.response.get("Error", {}).get("Message", "")))
            return f"{status} {code} from {where}" + (f": {message}" if message else "")
        if isinstance(error, BotoCoreError):
            reason = _one_line(str(getattr(error, "kwargs", {}).get("error", "")) or str(error))
            return f"cannot reach {where} ({reason.rpartition('connection: ')[2]})"
        return _one_line(str(error))

    # --- conns test -------------------------------------------------------------------

    def probe(self) -> str:
        """Write, read and delete a probe object; ConfigError naming the step that failed."""
        bucket = self.connection.bucket
        key = f"{TEMPORARY_PREFIX}probe-{uuid.uuid4().hex[:12]}"
        content = b"sentry-extract probe"
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("write", lambda: self.client.put_object(Bucket=bucket, Key=key, Body=content)),
            ("read", lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"].read()),
            ("delete", lambda: self.client.delete_object(Bucket=bucket, Key=key)),
        ]
        for step, request in steps:
            try:
                answer = request()
            except (ClientError, BotoCoreError) as error:
                raise ConfigError(
                    f"cannot {step} a probe object in s3://{bucket}: {self.explain(error, bucket)}"
                ) from None
            if step == "read" and answer != content:
                raise ConfigError(f"the probe object read back from s3://{bucket} differs")
        return f"ok: wrote, read and deleted a probe object in {self.connection.describe()}"


# --- what: one dataset's objects --------------------------------------------------------


class S3Storage:
    """A dataset's prefix in a bucket (see `storage.Storage`)."""

    def __init__(self, place: S3Place, root: str, lock_name: str) -> None:
        self.place = place
        self.root = root.rstrip("/")
        self.bucket, _, prefix = self.root.partition("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.lock_name = lock_name
        self._lease: S3Lease | None = None

    def describe(self, path: str = "") -> str:
        return f"s3://{self.root}/{path}" if path else f"s3://{self.root}"

    def key(self, path: str) -> str:
        return f"{self.prefix}{path}"

    def prepare(self) -> None:
        return None  # prefixes need no creating

    def scratch(self) -> Path:
        """On this machine: the bucket only ever gets whole objects."""
        return Path(tempfile.mkdtemp(prefix=TEMPORARY_PREFIX))

    def list_files(self, suffix: str, hidden: bool = False) -> list[StoredFile]:
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        with self._translated("list", ""):
            infos = self.place.filesystem.get_file_info(selector)
        found = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.endswith(suffix):
                continue
            relative = info.path.removeprefix(f"{self.root}/")
            *folders, name = relative.split("/")
            if any(folder.startswith((".", "_")) for folder in folders):
                continue
            if name.startswith(".") if hidden else not name.startswith((".", "_")):
                found.append(StoredFile(relative, int(info.size or 0)))
        return sorted(found, key=lambda stored: stored.path)

    def open_input(self, path: str) -> pa.NativeFile:
        with self._translated("read", path):
            return self.place.filesystem.open_input_file(f"{self.root}/{path}")

    def write(self, path: str, fill: Callable[[pa.NativeFile], None]) -> None:
        descriptor, name = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=".tmp")
        os.close(descriptor)
        local = Path(name)
        try:
            with pa.OSFile(name, "wb") as sink:
                fill(sink)
            self.upload(local, path)
        finally:
            local.unlink(missing_ok=True)

    def upload(self, local: Path, path: str) -> None:
        self._check_lease()
        with self._translated("write", path):
            self.place.client.upload_file(str(local), self.bucket, self.key(path), Config=TRANSFER)
        local.unlink(missing_ok=True)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            with self._translated("read", path):
                answer = self.place.client.get_object(Bucket=self.bucket, Key=self.key(path))
                return answer["Body"].read()
        except FileNotFoundError:
            return None

    def write_bytes(self, path: str, content: bytes) -> None:
        self._check_lease()
        with self._translated("write", path):
            self.place.client.put_object(Bucket=self.bucket, Key=self.key(path), Body=content)

    def delete(self, path: str) -> None:
        self._check_lease()
        with self._translated("delete", path):
            self.place.client.delete_object(Bucket=self.bucket, Key=self.key(path))

    def move(self, source: str, target: str) -> None:
        """A server-side copy, then the source deleted; nothing happens when it is gone
        (a rerun finishing a journal repeats both steps safely)."""
        if source == target:
            return
        self._check_lease()
        try:
            with self._translated("move", source):
                self.place.client.copy(
                    {"Bucket": self.bucket, "Key": self.key(source)},
                    self.bucket,
                    self.key(target),
                    Config=TRANSFER,
                )
        except FileNotFoundError:
            return
        self.delete(source)

    def size(self, path: str) -> int:
        try:
            with self._translated("read", path):
                answer = self.place.client.head_object(Bucket=self.bucket, Key=self.key(path))
        except FileNotFoundError:
            return 0
        return int(answer["ContentLength"])

    def lock(self) -> S3Lease:
        self._lease = S3Lease(self, self.key(self.lock_name), self.place.lease_seconds)
        return self._lease

    def remove_leftovers(self) -> None:
        return None  # working files stay on the machine that made them

    def _check_lease(self) -> None:
        lost = self._lease.lost if self._lease is not None else None
        if lost:
            raise TargetError(f"stopped writing {self.describe()}: {lost}")

    @contextmanager
    def _translated(self, action: str, path: str) -> Iterator[None]:
        """boto and pyarrow errors as one-line OSErrors, holding no secret (the dataset
        turns those into TargetErrors); a missing object as FileNotFoundError."""
        try:
            yield
        except FileNotFoundError:
            raise FileNotFoundError(path) from None
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(path) from None
            raise OSError(
                f"cannot {action} {self.describe(path)}: {self.place.explain(error, self.bucket)}"
            ) from None
        except BotoCoreError as error:
            raise OSError(
                f"cannot {action} {self.describe(path)}: {self.place.explain(error, self.bucket)}"
            ) from None
        except OSError as error:  # pyarrow's
            raise OSError(
                f"cannot {action} {self.describe(path)}: {_one_line(str(error))}"
            ) from None


# --- the lock: a lease renewed by a thread ----------------------------------------------


@dataclass(frozen=True)
class _Holder:
    """The lock object as read: who holds it, and how long ago it was renewed."""

    etag: str
    owner: dict[str, Any]
    age: float  # seconds since its last renewal, by the server's clock

    @property
    def lease_seconds(self) -> float:
        return float(self.owner.get("lease_seconds") or LEASE_SECONDS)

    def is_stale(self) -> bool:
        """Not renewed for longer than its lease (with a second for clock resolution),
        or held by a process of this machine that is gone."""
        return self.age > self.lease_seconds + 1 or _is_gone(self.owner)

    def describe(self) -> str:
        return (
            f"pid {self.owner.get('pid', '?')} on {self.owner.get('host', '?')}, its lease "
            f"renewed {self.age:.0f}s ago"
        )


class S3Lease:
    """The lock on one dataset: an object that only one run can create or renew."""

    def __init__(self, storage: S3Storage, key: str, lease_seconds: float) -> None:
        self.storage = storage
        self.client = storage.place.client
        self.bucket = storage.bucket
        self.key = key
        self.lease_seconds = lease_seconds
        self.owner = {**_this_process(), "id": uuid.uuid4().hex, "lease_seconds": lease_seconds}
        self.lost: str | None = None
        self._stopped = threading.Event()
        self.etag = self._acquire()
        self._renewed = time.monotonic()
        self._thread = threading.Thread(target=self._renew, name="s3-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._thread.join(timeout=self.lease_seconds)
        try:
            holder = self._read()
            if holder is not None and holder.owner.get("id") == self.owner["id"]:
                self.client.delete_object(Bucket=self.bucket, Key=self.key)
        except (ClientError, BotoCoreError):
            pass  # the lease runs out by itself

    def _acquire(self) -> str:
        try:
            for _ in range(5):
                etag = self._try_acquire()
                if etag is not None:
                    return etag
        except (ClientError, BotoCoreError) as error:
            reason = self.storage.place.explain(error, self.bucket)
            raise TargetError(f"cannot lock {self.storage.describe()}: {reason}") from None
        raise LockedError(
            f"another sentry-extract run is writing {self.storage.describe()}; "
            "try again when it ends"
        )

    def _try_acquire(self) -> str | None:
        """The lock's ETag once it is ours; None to try again; LockedError when held."""
        try:
            return self._put(if_none_match=True)
        except ClientError as error:
            if not _is_conflict(error):
                raise
        holder = self._read()
        if holder is None:
            return None  # released meanwhile
        if holder.owner.get("id") == self.owner["id"]:
            return holder.etag  # our own put, answered late
        if not holder.is_stale():
            raise LockedError(
                f"another sentry-extract run is writing {self.storage.describe()} "
                f"({holder.describe()}); try again when it ends (a lease not renewed for "
                f"{holder.lease_seconds:g}s is taken over)"
            )
        try:
            return self._put(if_match=holder.etag)  # take over, unless another run did
        except ClientError as error:
            if not _is_conflict(error):
                raise
        return None

    def _put(self, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Create the lock (`if_none_match`) or replace the version `if_match` names."""
        body = json.dumps({**self.owner, "renewed_at": datetime.now(UTC).isoformat()}).encode()
        if if_match is not None:
            answer = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, IfMatch=if_match
            )
        else:
            assert if_none_match
            answer = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*"
            )
        return str(answer["ETag"])

    def _read(self) -> _Holder | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404"):
                return None
            raise
        try:
            owner = json.loads(answer["Body"].read())
        except ValueError:
            owner = {}
        age = (self._now(answer) - answer["LastModified"]).total_seconds()
        return _Holder(str(answer["ETag"]), owner if isinstance(owner, dict) else {}, age)

    def _now(self, answer: Any) -> datetime:
        """The server's time of its answer (its Date header), unless the place was given
        a clock."""
        if self.storage.place.clock is not None:
            return self.storage.place.clock()
        date = answer["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        return parsedate_to_datetime(date) if date else datetime.now(UTC)

    def _renew(self) -> None:
        while not self._stopped.wait(self.lease_seconds / 3):
            try:
                self.etag = self._put(if_match=self.etag)
                self._renewed = time.monotonic()
                continue
            except ClientError as error:
                if _is_conflict(error):
                    holder = self._read_quietly()
                    if holder is not None and holder.owner.get("id") == self.owner["id"]:
                        self.etag = holder.etag  # our renewal, answered late
                        continue
                    self.lost = "another run took the lock over (this run's lease had run out)"
                    return
            except BotoCoreError:
                pass
            if time.monotonic() - self._renewed > self.lease_seconds:
                self.lost = f"the lock's lease could not be renewed for {self.lease_seconds:g}s"

    def _read_quietly(self) -> _Holder | None:
        try:
            return self._read()
        except (ClientError, BotoCoreError):
            return None


def _is_conflict(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status in CONFLICT_STATUSES


def _this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "namespace": _pid_namespace(),
        "pid": pid,
        "started": _process_start(pid),
    }


def _is_gone(owner: dict[str, Any]) -> bool:
    """The holder ran on this machine (same host name and process namespace) and its
    process is no more: killed, or a zombie, or its pid now names another process."""
    here = _this_process()
    if owner.get("host") != here["host"] or owner.get("namespace") != here["namespace"]:
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    started = _process_start(pid)
    if started == "zombie":
        return True
    if started is None or owner.get("started") is None:
        return False  # alive, as far as this machine can tell
    return started != owner.get("started")


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot ('zombie' for one), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    if not fields:
        return None
    if fields[0] == "Z":
        return "zombie"
    return fields[19] if len(fields) > 19 else None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def test_s3(connection: BucketAccess) -> str:
    """`conns test` for a bucket."""
    return S3Place(connection).probe()
