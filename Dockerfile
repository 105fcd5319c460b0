# sentry-extract in a container: `docker build -t sentry-extract .`, then
# `docker run --rm -e SENTRY=... -e AWS_S3=... -v "$PWD:/config" sentry-extract run /config/replication.yaml`.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /build

# Runs as its own user; connections and state live in its home unless told otherwise.
RUN useradd --create-home --uid 10001 extract
USER extract
WORKDIR /home/extract

ENTRYPOINT ["sentry-extract"]
CMD ["--help"]
