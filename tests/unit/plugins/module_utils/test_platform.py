"""Platform normalisation, containerd's fallbacks, and choosing from an index."""

from __future__ import annotations

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import (
    choose_manifest,
    compatible_platforms,
    parse_platform,
)

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("linux/amd64", "linux/amd64"),
        ("x86_64", "linux/amd64"),
        ("linux/x86-64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/arm64/8", "linux/arm64"),
        ("linux/arm64/v9.0", "linux/arm64/v9"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("Linux/AMD64", "linux/amd64"),
        ("windows/amd64", "windows/amd64"),
    ],
)
def test_platforms_normalise_like_containerd(text, normal):
    assert str(parse_platform(text)) == normal


@pytest.mark.parametrize("text", ["", "linux//amd64", "a/b/c/d", "linux/amd 64", None])
def test_invalid_platforms_are_refused(text):
    with pytest.raises(DockyardError) as caught:
        parse_platform(text)
    assert caught.value.reason == "invalid_argument"


@pytest.mark.parametrize(
    ("text", "order"),
    [
        ("linux/amd64", ["linux/amd64", "linux/386"]),
        ("linux/amd64/v3", ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"]),
        ("linux/arm/v7", ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/arm64", ["linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/arm64/v8.2", ["linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/riscv64", ["linux/riscv64"]),
    ],
)
def test_fallbacks_are_ordered_best_first(text, order):
    assert [str(p) for p in compatible_platforms(parse_platform(text))] == order


def test_arm64_v9_accepts_earlier_v9_and_v8_variants():
    order = [str(p) for p in compatible_platforms(parse_platform("linux/arm64/v9.1"))]
    assert order[:3] == ["linux/arm64/v9.1", "linux/arm64/v9", "linux/arm64/v8.6"]
    assert order.index("linux/arm64") < order.index("linux/arm/v8")


def entry(platform, digest, **extra):
    return dict({"mediaType": MANIFEST, "digest": digest, "size": 1, "platform": platform}, **extra)


INDEX = [
    entry({"os": "linux", "architecture": "amd64"}, "amd"),
    entry({"os": "linux", "architecture": "arm", "variant": "v6"}, "v6"),
    entry({"os": "linux", "architecture": "arm", "variant": "v7"}, "v7"),
    entry({"os": "linux", "architecture": "arm64", "variant": "v8"}, "arm64"),
    entry({"os": "unknown", "architecture": "unknown"}, "att", annotations={"vnd.docker.reference.type": "attestation-manifest"}),
    dict(entry({"os": "linux", "architecture": "s390x"}, "odd"), mediaType="application/vnd.example.unknown"),
]


@pytest.mark.parametrize(
    ("wanted", "digest", "fallback"),
    [
        ("linux/amd64", "amd", False),
        ("linux/arm/v7", "v7", False),
        ("linux/arm/v8", "v7", True),
        ("linux/arm64", "arm64", False),
        ("linux/aarch64", "arm64", False),
        ("linux/arm64/v8.1", "arm64", True),
    ],
)
def test_choose_picks_the_best_compatible_entry(wanted, digest, fallback):
    choice = choose_manifest(INDEX, parse_platform(wanted), (MANIFEST,))
    assert (choice.descriptor["digest"], choice.fallback) == (digest, fallback)


def test_no_match_names_the_platforms_available_without_attestations():
    with pytest.raises(DockyardError) as caught:
        choose_manifest(INDEX, parse_platform("linux/s390x"), (MANIFEST,))
    assert caught.value.reason == "platform_not_found"
    assert caught.value.details["platforms_available"] == ["linux/amd64", "linux/arm/v6", "linux/arm/v7", "linux/arm64", "linux/s390x"]


def test_first_of_equal_entries_wins_and_an_entry_without_platform_comes_last():
    index = [
        {"mediaType": MANIFEST, "digest": "any", "size": 1},
        entry({"os": "linux", "architecture": "amd64"}, "a1"),
        entry({"os": "linux", "architecture": "amd64"}, "a2"),
    ]
    assert choose_manifest(index, parse_platform("linux/amd64"), (MANIFEST,)).descriptor["digest"] == "a1"
    assert choose_manifest(index, parse_platform("linux/ppc64le"), (MANIFEST,)).descriptor["digest"] == "any"
