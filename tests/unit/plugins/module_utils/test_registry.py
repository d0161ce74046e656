"""Pure parts of the registry client: status mapping, Retry-After, Content-Range, manifest types."""

from __future__ import annotations

import json

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import DOCKER_MANIFEST, OCI_INDEX, manifest_media_type
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._registry import _range_matches


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
    assert manifest_media_type(body, DOCKER_MANIFEST, REF.familiar) == DOCKER_MANIFEST
    assert manifest_media_type(json.dumps({"schemaVersion": 2, "manifests": []}).encode(), "", REF.familiar) == OCI_INDEX
    with pytest.raises(DockyardError, match="labelled"):
        manifest_media_type(body, OCI_INDEX, REF.familiar)


def test_schema1_is_refused_with_advice():
    with pytest.raises(DockyardError) as caught:
        manifest_media_type(
            json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "application/vnd.docker.distribution.manifest.v1+prettyjws", REF.familiar
        )
    assert caught.value.reason == "unsupported_media_type" and "schema1" in caught.value.message
