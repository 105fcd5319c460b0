"""A bucket as the S3 storage reaches it: plain values, made from an s3 connection by the
layer above (`pipeline.connect`), so that the targets never import the configuration."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BucketAccess:
    """A bucket on S3 or an S3-compatible server (MinIO, R2, Ceph); without keys the
    standard AWS chain finds credentials (environment, profile, instance role). `name`
    is the connection's, for messages."""

    name: str
    bucket: str
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint: str | None = None  # scheme://host[:port]; None: AWS itself
    region: str | None = None

    def describe(self) -> str:
        return f"s3://{self.bucket}" + (f" at {self.endpoint}" if self.endpoint else "")
