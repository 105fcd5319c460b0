"""TLS is verified unless a CA bundle is named; odd JSON bodies never crash the client."""

from __future__ import annotations

import json
import ssl
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sentry_extract.errors import SourceError, UntrustedCertificateError
from sentry_extract.records import decoded
from sentry_extract.source.client import (
    ClientSettings,
    RequestCounter,
    SentryClient,
    environment_proxy,
)
from sentry_extract.source.ratelimit import RequestGate, TokenBucket
from sentry_extract.source.retry import RetryPolicy
from sentry_extract.testing.fake_sentry import FakeSentry
from sentry_extract.testing.organization import FakeOrganization

from .helpers import TOKEN, invoke, sentry_connection


@pytest.fixture
def tls_fake(tmp_path: Path) -> Any:
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    with FakeSentry(FakeOrganization(), tls=context) as fake:
        yield fake, bundle


def test_an_unknown_certificate_is_refused(
    cli: CliRunner, tls_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _ = tls_fake
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, retry_attempts=1))
    result = invoke(cli, "conns", "test", "SENTRY")
    assert result.exit_code == 2  # bad input, as from run
    assert "unable to get local issuer certificate" in result.stderr
    assert result.stderr.strip().endswith(": check inputs.ca_bundle (the server's CA)")
    assert fake.requests == []


def test_a_named_ca_bundle_is_trusted(
    cli: CliRunner, tls_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, bundle = tls_fake
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, ca_bundle=str(bundle)))
    result = invoke(cli, "conns", "test", "SENTRY")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("SENTRY: ok: organization 'Acme'")


@pytest.mark.parametrize("through", ["libcurl", "httpx"])
def test_an_unknown_certificate_is_its_own_error_through_either_sender(
    tls_fake: Any, through: str
) -> None:
    fake, bundle = tls_fake
    settings = ClientSettings(
        base_url=fake.base_url,
        token=TOKEN,
        gate=RequestGate(TokenBucket(0), 1),
        retry=RetryPolicy(attempts=1, initial_wait=0),
        sleep=lambda seconds: None,
        transport=httpx.HTTPTransport() if through == "httpx" else None,
    )
    with SentryClient(settings) as client, pytest.raises(UntrustedCertificateError):
        client.get("organizations/acme/", {}, RequestCounter())
    trusted = replace(settings, ca_bundle=str(bundle), transport=None)
    with SentryClient(trusted) as client:  # the named bundle is trusted
        assert client.get("organizations/acme/", {}, RequestCounter()).body["slug"] == "acme"


def test_numbers_beyond_64_bits_are_read_exactly() -> None:
    body = b'[{"id": "1", "big": 123456789012345678901234567890}]'
    with client_answering(body, None) as client:
        [page] = list(client.paginate("organizations/acme/teams/", {}, RequestCounter()))
    assert page.rows == [{"id": "1", "big": 123456789012345678901234567890}]
    assert page.held_bytes >= len(body)


def client_answering(body: bytes, link: str | None) -> SentryClient:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"Link": link} if link else {}
        return httpx.Response(200, content=body, headers=headers)

    return SentryClient(
        ClientSettings(
            base_url="http://sentry.test",
            token="sntryu_test_x",
            gate=RequestGate(TokenBucket(0), 1),
            retry=RetryPolicy(attempts=2, initial_wait=0),
            sleep=lambda seconds: None,
            transport=httpx.MockTransport(answer),
        )
    )


json_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
links = st.none() | st.sampled_from(
    [
        '<http://x/>; rel="next"; results="true"; cursor="1:0:0"',
        '<http://x/>; rel="next"; results="false"; cursor="1:0:0"',
        '<http://x/>; rel="next"; results="true"',
        "garbage",
        '<http://x/>; rel="next"; results="true"; cursor=""',
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    body=json_bodies | st.binary(max_size=40).map(lambda raw: raw),
    link=links,
    raw_values=st.booleans(),
)
def test_any_body_gives_pages_of_dicts_or_a_source_error(
    body: Any, link: str | None, raw_values: bool
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with client_answering(content, link) as client:
        pages = client.paginate("organizations/acme/teams/", {}, RequestCounter(), raw_values)
        try:
            for index, page in enumerate(pages):
                assert all(isinstance(row, dict) for row in page.rows)
                if isinstance(body, list):
                    rows = [row for row in body if isinstance(row, dict)]
                    assert [{k: decoded(v) for k, v in row.items()} for row in page.rows] == rows
                if index > 3:
                    break
        except SourceError:
            pass  # ours, with a message; never anything else


@pytest.mark.parametrize("raw_values", [False, True])
def test_a_body_that_is_not_utf8_is_refused_not_stored(raw_values: bool) -> None:
    body = b'[{"eventID": "1", "message": "caf\xe9"}]'
    with client_answering(body, None) as client:
        pages = client.paginate("projects/acme/p/events/", {}, RequestCounter(), raw_values)
        with pytest.raises(SourceError, match="not complete JSON"):
            list(pages)


def test_the_environment_names_the_proxy_as_for_any_http_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert environment_proxy("https://sentry.io") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert environment_proxy("https://sentry.io") == "http://proxy.test:3128"
    assert environment_proxy("http://sentry.internal") is None  # https only
    monkeypatch.setenv("NO_PROXY", "sentry.io,localhost")
    assert environment_proxy("https://de.sentry.io") is None
    assert environment_proxy("https://sentry.example.com") == "http://proxy.test:3128"
