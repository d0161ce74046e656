"""The distribution/reference grammar, normalised as docker does."""

from __future__ import annotations

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "canonical", "familiar"),
    [
        ("redis", "docker.io/library/redis:latest", "redis:latest"),
        ("redis:7", "docker.io/library/redis:7", "redis:7"),
        ("library/redis:7", "docker.io/library/redis:7", "redis:7"),
        ("docker.io/redis", "docker.io/library/redis:latest", "redis:latest"),
        ("index.docker.io/library/redis:7", "docker.io/library/redis:7", "redis:7"),
        ("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2", "bitnami/redis:7.2"),
        ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/team/app:1", "localhost:5000/team/app:1", "localhost:5000/team/app:1"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000/app:latest"),
        ("[::1]:5000/app:v1", "[::1]:5000/app:v1", "[::1]:5000/app:v1"),
        ("ghcr.io/org/app", "ghcr.io/org/app:latest", "ghcr.io/org/app:latest"),
        (f"redis@{DIGEST}", f"docker.io/library/redis@{DIGEST}", f"redis@{DIGEST}"),
        (f"redis:7@{DIGEST}", f"docker.io/library/redis:7@{DIGEST}", f"redis:7@{DIGEST}"),
        ("docker.io/a.b__c-d--e/f_g:T_1.x-y", "docker.io/a.b__c-d--e/f_g:T_1.x-y", "a.b__c-d--e/f_g:T_1.x-y"),
        ("Registry.Example.com/app", "Registry.Example.com/app:latest", "Registry.Example.com/app:latest"),
        ("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000"),
    ],
)
def test_references_normalise_like_docker(text, canonical, familiar):
    reference = parse_reference(text)
    assert reference.canonical == canonical
    assert reference.familiar == familiar


def test_parts_are_exposed():
    assert parse_reference(f"localhost:5000/team/app:1@{DIGEST}").to_dict() == {
        "domain": "localhost:5000",
        "path": "team/app",
        "tag": "1",
        "digest": DIGEST,
        "name": "localhost:5000/team/app",
        "canonical": f"localhost:5000/team/app:1@{DIGEST}",
        "familiar": f"localhost:5000/team/app:1@{DIGEST}",
    }
    assert parse_reference(f"redis@{DIGEST}").tag is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Redis", "must be lowercase"),
        ("team/App", "must be lowercase"),
        ("redis:", "tag ''"),
        ("redis:-x", "tag '-x'"),
        ("redis:" + "t" * 129, "1 to 128"),
        ("redis@sha256:abc", "not a digest"),
        ("redis@md5:" + "a" * 32, "not a digest"),
        ("ab" * 32, "image id"),
        ("https://ghcr.io/org/app", "no URL scheme"),
        ("redis 7", "white space"),
        ("a//b", "path component ''"),
        ("a/b_/c", "path component 'b_'"),
        ("a/-b", "path component '-b'"),
        ("a/b___c", "path component"),
        ("-bad.example.com/app", "not a valid registry"),
        ("a_b.example.com/app", "not a valid registry"),
        ("example.com:port/app", "not a valid registry"),
        ("x/" + "a" * 255, "255"),
    ],
)
def test_invalid_references_say_which_rule_they_break(text, why):
    with pytest.raises(DockyardError) as caught:
        parse_reference(text)
    assert caught.value.reason == "invalid_reference"
    assert why in caught.value.message
    assert repr(text) in caught.value.message
