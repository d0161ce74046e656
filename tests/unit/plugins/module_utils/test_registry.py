"""Pure parts of the registry client: status mapping, Retry-After, Content-Range, manifest types."""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._registry import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    RegistryOptions,
    _manifest_media_type,
    _range_matches,
    _reason_for,
    _retry_after,
    endpoint_for_url,
)


@pytest.mark.parametrize(
    ("status", "codes", "reason"),
    [
        (401, ["UNAUTHORIZED"], "unauthorized"),
        (403, [], "denied"),
        (404, ["MANIFEST_UNKNOWN"], "not_found"),
        (404, ["NAME_UNKNOWN"], "not_found"),
        (429, ["TOOMANYREQUESTS"], "rate_limited"),
        (400, ["DENIED"], "denied"),
        (503, [], "unreachable"),
        (500, ["UNKNOWN"], "unreachable"),
        (500, ["UNKNOWN", "MANIFEST_UNKNOWN"], "not_found"),  # a pull-through cache wrapping its upstream's answer
    ],
)
def test_statuses_and_codes_map_to_one_reason(status, codes, reason):
    assert _reason_for(status, codes) == reason


def test_retry_after_takes_seconds_or_a_date_and_ignores_the_past():
    assert _retry_after("7") == 7.0
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= _retry_after(soon) <= 31
    assert _retry_after(email.utils.formatdate(time.time() - 300, usegmt=True)) == 0.0
    assert _retry_after("soon") is None and _retry_after(None) is None


@pytest.mark.parametrize(
    ("header", "offset", "total", "ok"),
    [
        ("bytes 100-999/1000", 100, 1000, True),
        ("bytes 0-999/1000", 100, 1000, False),
        ("bytes 100-999/2000", 100, 1000, False),
        ("bytes 100-999/*", 100, 1000, False),
        (None, 100, 1000, False),
    ],
)
def test_only_a_content_range_that_continues_the_partial_is_accepted(header, offset, total, ok):
    assert _range_matches(header, offset, total) is ok


REF = parse_reference("example.com/app:1")


def test_manifest_type_comes_from_the_body_and_must_agree_with_the_header():
    body = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": {}}).encode()
    assert _manifest_media_type(body, DOCKER_MANIFEST, REF) == DOCKER_MANIFEST
    assert _manifest_media_type(json.dumps({"schemaVersion": 2, "manifests": []}).encode(), "", REF) == OCI_INDEX
    with pytest.raises(DockyardError, match="labelled"):
        _manifest_media_type(body, OCI_INDEX, REF)


def test_schema1_is_refused_with_advice():
    with pytest.raises(DockyardError) as caught:
        _manifest_media_type(json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "application/vnd.docker.distribution.manifest.v1+prettyjws", REF)
    assert caught.value.reason == "unsupported_media_type" and "schema1" in caught.value.message


@pytest.mark.parametrize(
    ("url", "base", "plain"),
    [
        ("http://mirror:5000", "http://mirror:5000", True),
        ("https://mirror:5000/", "https://mirror:5000", False),
        ("mirror.example.com", "https://mirror.example.com", False),
    ],
)
def test_an_endpoint_url_gives_its_scheme_and_host(url, base, plain):
    """(A bare loopback host:port is probed like a registry on loopback; the integration tests cover it.)"""
    endpoint = endpoint_for_url(None, url, None, RegistryOptions())
    assert (endpoint.base_url(), endpoint.plain_http) == (base, plain)


@pytest.mark.parametrize("url", ["ftp://mirror", "http://mirror:5000/v2/library", "http://"])
def test_an_endpoint_url_with_a_path_or_another_scheme_is_refused(url):
    with pytest.raises(DockyardError) as caught:
        endpoint_for_url(None, url, None, RegistryOptions())
    assert caught.value.reason == "invalid_argument"
