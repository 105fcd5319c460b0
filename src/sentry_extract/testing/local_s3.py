"""A throwaway local S3 server with one bucket, for trying the bucket target.

    .venv/bin/python -m sentry_extract.testing.local_s3              # 127.0.0.1:9000, until Ctrl-C
    .venv/bin/python -m sentry_extract.testing.local_s3 --port 9100 --bucket sandbox

It is moto's server mode (`moto[server]`, installed with the test tools by `make test` /
`make demo`) on loopback, in memory: the bucket and its objects go when it stops. It
prints the `AWS_S3` connection to paste into the shell that runs sentry-extract.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import socket
import sys
import threading
from typing import Any

HOST = "127.0.0.1"
REGION = "us-east-1"
ACCESS_KEY_ID = "AKIALOCALS3SANDBOX01"  # moto takes any keys; these say where they belong
SECRET_ACCESS_KEY = "local-s3-sandbox-secret"


def connection_map(endpoint: str, bucket: str) -> str:
    """The AWS_S3 connection to the bucket, as `conns set AWS_S3 type=s3 ...` stores it."""
    return (
        f"{{type: s3, bucket: {bucket}, endpoint: {endpoint}, region: {REGION}, "
        f"access_key_id: {ACCESS_KEY_ID}, secret_access_key: {SECRET_ACCESS_KEY}}}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a throwaway S3 bucket on loopback.")
    parser.add_argument("--port", type=int, default=9000, help="0: any free port")
    parser.add_argument("--bucket", default="sentry-sandbox", help="the bucket to create")
    arguments = parser.parse_args(argv)
    try:
        server = _open(arguments.port)
    except ImportError:
        print(
            "moto is not installed: run 'make test' or "
            "\".venv/bin/pip install 'moto[server]'\" first",
            file=sys.stderr,
        )
        return 2
    except OSError as error:
        print(f"error: cannot serve on {HOST}:{arguments.port}: {_reason(error)}", file=sys.stderr)
        return 2
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://{HOST}:{server.port}"
    try:
        return _serve(endpoint, arguments.bucket)
    finally:
        server.shutdown()
        server.server_close()


def _open(port: int) -> Any:
    """moto's S3 app on a socket bound here, so that a port in use is our one line."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    with socket.create_server((HOST, port)) as listener:
        application = DomainDispatcherApplication(create_backend_app)
        return make_server(
            HOST,
            listener.getsockname()[1],
            application,
            threaded=True,
            request_handler=MotoRequestHandler,
            fd=listener.fileno(),  # the server takes a copy of the listening socket
        )


def _serve(endpoint: str, bucket: str) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    try:
        client.create_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as error:
        print(f"error: cannot create the bucket '{bucket}': {error}", file=sys.stderr)
        return 2
    print(f"S3 serving bucket '{bucket}' at {endpoint} (in memory, until Ctrl-C)")
    print(f"export AWS_S3='{connection_map(endpoint, bucket)}'", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


def _reason(error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return "the address is already in use (choose another --port)"
    return error.strerror or str(error)


if __name__ == "__main__":
    sys.exit(main())
