"""Parsers of untrusted text, tried with Hypothesis: whatever a registry, a header or a config holds, the answer is a value or a DockyardError.

A DockyardError must carry a known reason other than `internal_error`; any other exception is a defect.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import json
import subprocess
from datetime import timedelta, timezone
from unittest import mock
from urllib.parse import urljoin, urlsplit

import pytest
import requests
import urllib3
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.dockyard.images.plugins.module_utils import _auth
from ansible_collections.dockyard.images.plugins.module_utils._auth import Credential, CredentialStore, redact_userinfo, registry_host
from ansible_collections.dockyard.images.plugins.module_utils._endpoints import parse_endpoint_address
from ansible_collections.dockyard.images.plugins.module_utils._errors import REASONS, DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import (
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    SCHEMA1_TYPES,
    Descriptor,
    ImageConfig,
    Manifest,
    image_blobs,
    index_entries,
    json_object,
    manifest_media_type,
    read_config,
)
from ansible_collections.dockyard.images.plugins.module_utils._platform import (
    Platform,
    PlatformChoice,
    available_platforms,
    choose_manifest,
    compatible_platforms,
    parse_platform,
    runs_on,
)
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, is_digest, is_registry_host, parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._transport import (
    Challenge,
    EndpointAddress,
    Origin,
    check_realm,
    is_loopback,
    may_carry_credentials,
    next_link,
    parse_challenges,
    retry_after,
)

# Random yet quick: a few hundred tries per property, no per-example deadline (CI machines stall).
TRIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WHAT = "registry.example/app:1"
DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha512:" + "b" * 128


def refused_or_returned(call, *args):
    """The value of `call(*args)`, or the DockyardError it raised; any other exception fails the test."""
    try:
        return call(*args)
    except DockyardError as exc:
        assert exc.reason in REASONS and exc.reason != "internal_error", exc.reason
        assert isinstance(exc.message, str) and exc.message
        return exc


# -- what untrusted input looks like --------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
FIELDS = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.lists(st.text(max_size=5), max_size=2) | st.just({"a": "b"})
HEX = "0123456789abcdefABCDEF"
DIGESTS = st.one_of(
    st.sampled_from([DIGEST, OTHER_DIGEST, "sha256:../../etc/passwd", "md5:" + "a" * 32, "sha256:" + "A" * 64, "sha256:", ""]),
    st.builds(lambda algorithm, hexa: f"{algorithm}:{hexa}", st.sampled_from(["sha256", "sha512", "SHA256", "sha384"]), st.text(HEX, max_size=130)),
)
MEDIA_TYPES = st.sampled_from([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST, OCI_CONFIG, DOCKER_CONFIG, *SCHEMA1_TYPES, "", "text/html"]) | st.text(
    max_size=20
)


ODD_VALUES = JSON | DIGESTS | MEDIA_TYPES | FIELDS


def _paths(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*path, index)
            yield from _paths(item, (*path, index))


@st.composite
def almost(draw, document):
    """`document` with up to three fields, at any depth, replaced by odd JSON or removed: a document that is nearly right."""
    result = copy.deepcopy(document)
    for path in draw(st.lists(st.sampled_from([*_paths(document), ()]), max_size=3)):
        if not path:
            result = copy.deepcopy(draw(ODD_VALUES))  # a value drawn again may be the same object: never nest it in itself
            continue
        parent = result
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()):
                parent[path[-1]] = copy.deepcopy(draw(ODD_VALUES))
            else:
                del parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change took this field away
    return result


def descriptor(media_type: str, digest: str = DIGEST, **fields) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": 1234, **fields}


INDEX = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [
        descriptor(OCI_MANIFEST, platform={"os": "linux", "architecture": "amd64"}),
        descriptor(OCI_MANIFEST, OTHER_DIGEST, platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
        descriptor(DOCKER_MANIFEST, platform={"os": "windows", "architecture": "amd64", "os.version": "10.0", "os.features": ["win32k"]}),
        descriptor(OCI_MANIFEST, platform={"os": "unknown", "architecture": "unknown"}, annotations={"vnd.docker.reference.type": "attestation-manifest"}),
        descriptor(OCI_MANIFEST),
    ],
}
MANIFEST = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": descriptor(OCI_CONFIG),
    "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip"), descriptor("application/vnd.oci.image.layer.v1.tar", urls=["https://x"])],
    "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
}
CONFIG = {
    "architecture": "arm",
    "os": "linux",
    "variant": "v7",
    "os.features": ["x"],
    "created": "2024-01-01T00:00:00Z",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
    "rootfs": {"type": "layers", "diff_ids": [DIGEST, OTHER_DIGEST]},
    "history": [{"created_by": "/bin/sh"}],
}


def encoded(documents):
    """JSON documents as bytes a registry could send: UTF-8 mostly, sometimes with a BOM or in UTF-16/32."""
    return st.builds(
        lambda document, encoding: json.dumps(document).encode(encoding),
        documents,
        st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-32"]),
    )


BODIES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"null", b"[]", b"{", b"[" * 100_000, b'{"a": ' * 5000, b"NaN", b"1" * 5000, b'"\xff"', b"\xef\xbb\xbf{}"]),
    encoded(JSON),
)
PLATFORM_WORDS = st.sampled_from(["linux", "windows", "amd64", "arm", "arm64", "x86_64", "aarch64", "unknown", ""]) | st.text(max_size=8)
VARIANTS = st.sampled_from(["v7", "v8", "8", "v9.1", "v3", "v99999999", "v²", "v" + "9" * 5000]) | st.text(max_size=8)
ENTRIES = st.builds(
    descriptor,
    st.sampled_from([OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, "text/plain"]),
    st.sampled_from([DIGEST, OTHER_DIGEST]),
    platform=st.fixed_dictionaries(
        {},
        optional={
            "os": PLATFORM_WORDS,
            "architecture": PLATFORM_WORDS,
            "variant": VARIANTS,
            "os.version": st.text(max_size=8),
            "os.features": st.lists(st.text(max_size=8), max_size=2),
        },
    ),
)
INDEX_BODIES = BODIES | encoded(almost(INDEX)) | encoded(st.lists(ENTRIES, max_size=5).map(lambda entries: {**INDEX, "manifests": entries}).flatmap(almost))
MANIFEST_BODIES = BODIES | encoded(almost(MANIFEST)) | encoded(almost(INDEX))
CONFIG_BODIES = BODIES | encoded(almost(CONFIG))
WANTED = [parse_platform(text) for text in ("linux/amd64", "linux/amd64/v3", "linux/arm64", "linux/arm/v7", "linux/arm64/v9.2", "windows/amd64", "linux/s390x")]

# -- references -----------------------------------------------------------------------------------

DOMAINS = st.sampled_from(
    [
        *("", "docker.io/", "index.docker.io/", "localhost/", "localhost:5000/", "Registry.Example:443/", "[::1]:5000/", "[fe80::1]/", "[::1/"),
        *("127.0.0.1:99999/", "a-b.c/", "a..b/", "-a.b/", "a.b:/", "a.b:x/", "UPPER/", "é.example/"),
    ]
)
COMPONENTS = st.text(alphabet="abz09._-A", max_size=10) | st.sampled_from(["library", "a__b", "a---b", "a._b", "x" * 256])
TAGS = st.none() | st.text(alphabet="aZ09_.-:", max_size=130) | st.sampled_from(["latest", "7", "_x", ".x", "-x", "x" * 129])
REFERENCE_TEXT = st.text() | st.builds(
    lambda domain, path, tag, digest: domain + "/".join(path) + (f":{tag}" if tag is not None else "") + (f"@{digest}" if digest is not None else ""),
    DOMAINS,
    st.lists(COMPONENTS, min_size=1, max_size=3),
    TAGS,
    st.none() | DIGESTS,
)


@TRIES
@given(REFERENCE_TEXT | JSON)
@example("a:" + "1" * 5000)
@example("a" * 64)
@example("[::1]:5000/app@" + DIGEST)
def test_reference_text_parses_or_is_refused_and_what_parses_renders_back_to_itself(text):
    reference = refused_or_returned(parse_reference, text)
    if isinstance(reference, DockyardError):
        assert reference.reason == "invalid_reference"
        return
    assert isinstance(reference, Reference)
    assert reference.tag is not None or reference.digest is not None
    assert parse_reference(reference.canonical) == reference
    assert parse_reference(reference.stored_name).name == reference.name


@TRIES
@given(JSON | DIGESTS | st.text(alphabet="[]:.-aZ09", max_size=20) | st.builds(lambda digits: "registry.example:" + digits, st.text("0123456789", min_size=1)))
@example("registry.example:" + "1" * 5000)
@example("registry.example:" + "0" * 5000 + "80")
def test_digest_and_host_predicates_answer_for_anything(value):
    assert is_digest(value) in (True, False)
    host = is_registry_host(value)
    assert host in (True, False)
    if host:
        assert isinstance(value, str)


# -- platforms ------------------------------------------------------------------------------------

PLATFORM_TEXT = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="linuxamd64rv78._/-", max_size=30),
    st.builds(
        lambda os_name, arch, variant: f"{os_name}/{arch}/{variant}",
        st.sampled_from(["linux", "windows", "Linux"]),
        st.sampled_from(["arm", "arm64", "amd64", "aarch64", "armhf", "x86_64", "386"]),
        st.builds(lambda number, minor: f"v{number}{minor}", st.integers(0, 10**12), st.sampled_from(["", ".0", ".5", ".99999999", "." + "9" * 5000]))
        | st.builds(lambda digits: "v" + digits, st.text("0123456789", min_size=1, max_size=5000)),
    ),
)


@TRIES
@given(PLATFORM_TEXT | JSON)
@example("linux/arm/v99999999999")
@example("linux/amd64/v" + "9" * 5000)
@example("linux/arm64/v9.99999999999")
@example("linux/arm64/v" + "8" * 5000)
def test_platform_text_parses_to_a_short_list_of_compatible_platforms(text):
    wanted = refused_or_returned(parse_platform, text)
    if isinstance(wanted, DockyardError):
        assert wanted.reason == "invalid_argument"
        return
    compatible = compatible_platforms(wanted)
    assert compatible[0].matches(wanted)
    assert len(compatible) <= 64  # a typo such as v99999999 must not list a hundred million platforms
    assert runs_on(wanted, wanted)


PLATFORM_OBJECTS = JSON | almost(INDEX["manifests"][2]["platform"]) | almost(CONFIG) | ENTRIES.map(lambda entry: entry["platform"])


@TRIES
@given(PLATFORM_OBJECTS)
@example({"architecture": "arm", "variant": "v" + "9" * 5000})
@example({"architecture": "arm", "variant": "v²"})  # a digit to str.isdigit, not to int()
def test_a_platform_object_is_read_or_refused(data):
    found = refused_or_returned(Platform.from_descriptor, data)
    if isinstance(found, DockyardError):
        assert found.reason == "unsupported_media_type"
        return
    if found is not None:
        assert isinstance(found, Platform) and len(compatible_platforms(found)) <= 64
        assert all(runs_on(found, wanted) in (True, False) for wanted in WANTED)


# -- manifests, indexes and configs ---------------------------------------------------------------


@TRIES
@given(BODIES | MANIFEST_BODIES)
def test_a_body_is_a_json_object_or_unsupported(body):
    data = refused_or_returned(json_object, body, WHAT)
    assert isinstance(data, dict) or data.reason == "unsupported_media_type"


@TRIES
@given(JSON | almost(MANIFEST["config"]) | almost(INDEX["manifests"][0]))
def test_a_descriptor_is_checked_or_refused(data):
    found = refused_or_returned(Descriptor.from_json, data, WHAT)
    if isinstance(found, DockyardError):
        assert found.reason == "unsupported_media_type"
        return
    assert is_digest(found.digest) and isinstance(found.size, int) and found.size >= 0
    assert isinstance(found.media_type, str) and all(isinstance(url, str) for url in found.urls)


@TRIES
@given(MANIFEST_BODIES, MEDIA_TYPES)
def test_a_manifest_is_read_as_an_index_or_an_image_or_refused(body, header_type):
    media_type = refused_or_returned(manifest_media_type, body, header_type, WHAT)
    if isinstance(media_type, DockyardError):
        assert media_type.reason == "unsupported_media_type"
        return
    assert isinstance(media_type, str)
    manifest = Manifest(body, media_type, DIGEST)
    if manifest.is_index:
        entries = refused_or_returned(index_entries, body, WHAT)
        assert isinstance(entries, (list, DockyardError))
        return
    blobs = refused_or_returned(image_blobs, manifest, WHAT)
    if not isinstance(blobs, DockyardError):
        config, layers = blobs
        assert all(isinstance(blob, Descriptor) for blob in (config, *layers))


@TRIES
@given(INDEX_BODIES)
@example(json.dumps({"manifests": [{"mediaType": OCI_MANIFEST, "size": 1}]}).encode())  # no digest
@example(json.dumps({"manifests": [descriptor(OCI_MANIFEST, platform="linux/amd64")]}).encode())
@example(json.dumps({"manifests": [descriptor(OCI_MANIFEST, annotations=[])]}).encode())
def test_index_entries_always_feed_the_platform_chooser(body):
    entries = refused_or_returned(index_entries, body, WHAT)
    if isinstance(entries, DockyardError):
        assert entries.reason == "unsupported_media_type"
        return
    assert isinstance(entries, list) and all(isinstance(entry, dict) for entry in entries)
    names = available_platforms(entries)
    assert all(isinstance(name, str) for name in names)
    for wanted in WANTED:
        choice = refused_or_returned(choose_manifest, entries, wanted, MANIFEST_TYPES)
        if isinstance(choice, DockyardError):
            assert choice.reason == "platform_not_found"
        else:
            assert isinstance(choice, PlatformChoice) and any(choice.descriptor is entry for entry in entries)
            assert Descriptor.from_json(choice.descriptor, WHAT).media_type in MANIFEST_TYPES


@TRIES
@given(CONFIG_BODIES)
@example(b"[]")  # a config that is a JSON list
@example(json.dumps({"architecture": 64, "os": "linux"}).encode())
def test_an_image_config_is_read_or_refused(body):
    config = refused_or_returned(read_config, body, WHAT)
    if isinstance(config, DockyardError):
        assert config.reason == "unsupported_media_type"
        return
    assert isinstance(config, ImageConfig)
    assert config.created is None or isinstance(config.created, str)
    assert all(is_digest(diff_id) for diff_id in config.diff_ids)


# -- headers a registry sends ---------------------------------------------------------------------

TOKENS = st.text(alphabet="abcXYZ019-_.~+!#$%&'*^`|", min_size=1, max_size=8)
HEADER_TEXT = st.text(max_size=60) | st.text(alphabet=' ,="\\abcXYZ:/;<>', max_size=60)


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


CHALLENGES = st.lists(st.tuples(TOKENS, st.dictionaries(TOKENS.map(str.lower), st.text(max_size=20), max_size=4)), min_size=1, max_size=3)


@TRIES
@given(HEADER_TEXT)
@example('Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"')
@example('Bearer realm="unterminated\\')
@example("=,=, =")
def test_challenges_never_raise(header):
    challenges = parse_challenges(header)
    assert all(isinstance(c, Challenge) and c.scheme and all(isinstance(v, str) for v in c.params.values()) for c in challenges)
    assert all(isinstance(c.realm, str) for c in challenges)


@TRIES
@given(CHALLENGES)
def test_well_formed_challenges_read_back_exactly(challenges):
    header = ", ".join(" ".join([scheme, ", ".join(f"{key}={quoted(value)}" for key, value in params.items())]).strip() for scheme, params in challenges)
    assert parse_challenges(header) == [Challenge(scheme.lower(), params) for scheme, params in challenges]


BASES = st.sampled_from(["https://registry.example/v2/_catalog?n=100", "http://127.0.0.1:5000/v2/a/tags/list"])
LINKS = st.builds(
    lambda target, rel: f"<{target}>; rel={rel}",
    st.text(max_size=30) | st.sampled_from(["/v2/_catalog?last=b", "https://other.example/v2/", "http://[::1", "//x", "http://a:99999/"]),
    st.sampled_from(['"next"', "next", '"prev"', " next ", '"NEXT"']) | st.text(max_size=6),
)


@TRIES
@given(HEADER_TEXT | LINKS | st.lists(LINKS, max_size=3).map(", ".join) | st.none(), BASES)
@example('<http://[::1>; rel="next"', "https://registry.example/")
def test_a_link_header_gives_a_url_or_none(header, base):
    found = next_link(header, base)
    assert found is None or isinstance(found, str)


@TRIES
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz/?=&._-", max_size=30), BASES)
def test_a_well_formed_next_link_is_joined_to_the_page_it_came_from(target, base):
    assert next_link(f'<{target}>; rel="next"', base) == urljoin(base, target)


HTTP_DATES = st.one_of(
    st.datetimes(timezones=st.none() | st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-1439, 1439))).map(
        email.utils.format_datetime
    ),
    st.builds(
        lambda day, year, hour, zone: f"Mon, {day} Jan {year} {hour}:00:00 {zone}",
        st.integers(-1, 40),
        st.integers(-1, 100_000),
        st.integers(-1, 99),
        st.sampled_from(["GMT", "-0000", "+2359", "-2359", "+9999", "UTC", "XYZ", ""]),
    ),
)


@TRIES
@given(st.none() | HEADER_TEXT | HTTP_DATES | st.text("0123456789 ", max_size=400))
@example("Mon, 01 Jan 0001 00:00:00 -0000")
@example("Fri, 31 Dec 9999 23:59:59 -2359")
@example("9" * 5000)
def test_retry_after_is_a_wait_or_nothing(value):
    wait = retry_after(value)
    assert wait is None or (isinstance(wait, float) and wait >= 0)


# -- origins, realms and who gets credentials -----------------------------------------------------

OWNERS = st.sampled_from(
    ["https://registry.example", "https://registry.example:5000", "http://127.0.0.1:5000", "http://registry.lan:5000", "https://[::1]:5000", "http://localhost"]
)
INSECURE = st.sampled_from([(), ("registry.lan:5000",), ("other.example:80", "127.0.0.2:5202")])
HOSTS = st.sampled_from(["registry.example", "REGISTRY.example", "127.0.0.1", "127.0.0.2", "[::1]", "localhost", "registry.lan", "other.example", "10.0.0.1"])
PORTS = st.sampled_from(["", ":443", ":80", ":5000", ":5202", ":065535"])
USERINFO = st.sampled_from(["", "user@", "user:pw@", "registry.example@", "a%40b:c@"])
PATHS = st.text(alphabet="abc/?#@:.%=&", max_size=20).map(lambda path: "/" + path)


@TRIES
@given(st.sampled_from(["http", "https", "HTTPS", "ftp"]), USERINFO, HOSTS, PORTS, PATHS, OWNERS, INSECURE)
def test_credentials_go_only_to_their_own_origin(scheme, userinfo, host, port, path, owner_url, insecure):
    owner = Origin.of(owner_url)
    url = f"{scheme}://{userinfo}{host}{port}{path}"
    destination = (scheme.lower(), host.strip("[]").lower(), int(port[1:]) if port else {"http": 80, "https": 443}.get(scheme.lower(), 80))
    if may_carry_credentials(url, owner, insecure):
        assert destination == tuple(owner)
        assert scheme.lower() == "https" or is_loopback(f"{host}{port}") or f"{host}{port}" in insecure
    assert not may_carry_credentials(url, None, insecure)


def test_an_explicit_port_zero_is_another_origin():
    assert not may_carry_credentials("https://registry.example:0/v2/", Origin.of("https://registry.example"), ())


def where_requests_connects(url: str):
    """(scheme, host, port) that requests would open a connection to for `url`, or None if it would not send it."""
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
        parts = urllib3.util.parse_url(prepared.url)
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ValueError):
        return None
    scheme = (parts.scheme or "").lower()
    return scheme, (parts.host or "").strip("[]").lower(), parts.port or {"http": 80, "https": 443}.get(scheme, 80)


TRICKY_URLS = st.builds(
    lambda scheme, before, host, after, port, path: f"{scheme}://{before}{host}{after}{port}{path}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(["", "evil.example", "evil.example\\", "evil.example#", "evil.example?", "a:b", "127.0.0.2:5202"]).map(lambda text: text and text + "@"),
    HOSTS,
    st.sampled_from(["", "\\@evil.example", "#@evil.example", "?@evil.example", ".", "%2e", "\t", "\\"]),
    PORTS,
    PATHS,
)


@TRIES
@given(TRICKY_URLS, OWNERS, INSECURE)
@example("https://evil.example\\@registry.example/v2/", "https://registry.example", ())
@example("http://127.0.0.2:5202\\@127.0.0.1:5000/v2/", "http://127.0.0.1:5000", ())
def test_credentials_go_only_where_requests_actually_connects(url, owner_url, insecure):
    owner = Origin.of(owner_url)
    if may_carry_credentials(url, owner, insecure):
        assert where_requests_connects(url) in (None, tuple(owner))


@TRIES
@given(HEADER_TEXT | TRICKY_URLS, OWNERS, INSECURE)
@example("http://[::1", "https://registry.example", ())
def test_the_credential_rule_answers_for_any_url(url, owner_url, insecure):
    assert may_carry_credentials(url, Origin.of(owner_url), insecure) in (True, False)


REALMS = st.one_of(
    HEADER_TEXT,
    TRICKY_URLS,
    st.builds(lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}", st.sampled_from(["http", "https", "ftp", ""]), HOSTS, PORTS, PATHS),
    st.sampled_from(
        ["", "https://", "http://[::1", "https://auth.example:99999/token", "https://auth.example:abc/", "https://[fe80::1%25eth0]/t", "http://0.0.0.0/t"]
    ),
)


@TRIES
@given(REALMS, OWNERS, INSECURE)
def test_a_realm_is_trusted_or_refused(realm, registry_url, insecure):
    registry = Origin.of(registry_url)
    origin = refused_or_returned(check_realm, realm, registry, insecure)
    if isinstance(origin, DockyardError):
        assert origin.reason in ("unauthorized", "tls")
        return
    assert origin == Origin.of(realm)
    if origin.scheme == "http" and origin != registry:
        assert is_loopback(urlsplit(realm).netloc) or urlsplit(realm).netloc in insecure


SECRET = "qqqq"  # the rest of each text below is drawn without the letter q
NO_Q = st.text(alphabet="abcxyz019.:/@[]%?#\\-_ ", max_size=30)


@TRIES
@given(NO_Q | HEADER_TEXT | REALMS | JSON)
@example("http://[::1")
@example("127.0.0.1:abc")
@example("registry.example:" + "1" * 5000)
def test_an_endpoint_address_is_read_or_refused(text):
    address = refused_or_returned(parse_endpoint_address, text, "mirror")
    if isinstance(address, DockyardError):
        assert address.reason == "invalid_argument"
        return
    assert isinstance(address, EndpointAddress) and is_registry_host(address.netloc)
    assert address.scheme in (None, "http", "https")


@TRIES
@given(st.sampled_from(["http://", "https://", ""]), NO_Q, NO_Q)
@example("", "user", "registry.example")
@example("", "", "://")
def test_an_endpoint_address_never_repeats_a_password(scheme, user, rest):
    refused = refused_or_returned(parse_endpoint_address, f"{scheme}{user}:{SECRET}@{rest}", "mirror")
    assert isinstance(refused, DockyardError) and SECRET not in refused.message


@TRIES
@given(NO_Q | HEADER_TEXT, st.sampled_from(["http", "https", "ftp", "x"]), st.text(alphabet="abcxyz019.:@[]%?#\\-_ ", max_size=30), NO_Q)
def test_redacted_urls_lose_their_userinfo(text, scheme, user, rest):
    # `user` has no '/': a '/' would end the authority, and what follows would be a path, not a password
    assert redact_userinfo(redact_userinfo(text)) == redact_userinfo(text)
    redacted = redact_userinfo(f"{scheme}://{user}:{SECRET}@{rest}")
    assert SECRET not in redacted and redacted.startswith(f"{scheme}://***@")


# -- credentials ----------------------------------------------------------------------------------

REGISTRY_TEXT = HEADER_TEXT | REALMS | st.sampled_from(["http://[::1", "https://index.docker.io/v1/", "docker.io", " Registry.Example:5000/v2/ "])


@TRIES
@given(
    st.lists(st.fixed_dictionaries({"registry": REGISTRY_TEXT, "username": st.text(max_size=10), "password": st.text(max_size=10)}), max_size=3), REGISTRY_TEXT
)
@example([{"registry": "http://[::1", "username": "u", "password": "p"}], "docker.io")
def test_task_credentials_are_kept_or_refused(entries, domain):
    store = refused_or_returned(CredentialStore, entries, "/nonexistent/dockyard/config.json")
    if isinstance(store, DockyardError):
        assert store.reason == "invalid_argument"
        return
    found = refused_or_returned(store.lookup, domain)
    assert found is None or isinstance(found, (Credential, DockyardError))
    host = refused_or_returned(registry_host, domain)
    assert isinstance(host, (str, DockyardError))


AUTH_FIELDS = (
    FIELDS
    | st.binary(max_size=20).map(lambda raw: base64.b64encode(raw).decode())
    | st.text(max_size=20).map(lambda text: base64.b64encode(text.encode()).decode())
)


def all_text(credential: Credential) -> bool:
    return all(isinstance(value, str) for value in (credential.username, credential.password, credential.identity_token, credential.registry_token))


@TRIES
@given(st.fixed_dictionaries({}, optional={"auth": AUTH_FIELDS, "username": FIELDS, "password": FIELDS, "identitytoken": FIELDS, "registrytoken": FIELDS}))
@example({"auth": 5})
@example({"auth": ["dXNlcjpwdw=="]})
@example({"auth": "not base64!"})
@example({"auth": base64.b64encode(b"\xff:pw").decode()})
@example({"username": 5, "password": "p"})
def test_a_docker_config_entry_is_read_or_refused(entry):
    found = refused_or_returned(_auth._decode_auth_entry, entry, "registry.example")
    if isinstance(found, DockyardError):
        assert found.reason == "invalid_argument"
        return
    assert found is None or all_text(found)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return tmp_path_factory.mktemp("docker") / "config.json"


DOCKER_CONFIGS = JSON | almost(
    {"auths": {"registry.example": {"auth": base64.b64encode(b"u:p").decode()}}, "credHelpers": {"registry.example": "none"}, "credsStore": "none"}
)
HELPER_OUTPUT = st.binary(max_size=20) | encoded(JSON | almost({"ServerURL": "registry.example", "Username": "u", "Secret": "p"}))


@TRIES
@given(encoded(DOCKER_CONFIGS) | BODIES, HELPER_OUTPUT, st.sampled_from([0, 1]))
@example(b"[" * 100_000, b"", 0)
@example(json.dumps({"credHelpers": []}).encode(), b"", 0)
@example(json.dumps({"auths": ["registry.example"]}).encode(), b"", 0)
@example(json.dumps({"credsStore": "none"}).encode(), b"[]", 0)
def test_a_docker_config_and_its_helpers_are_read_or_refused(config_path, body, helper_output, helper_status):
    config_path.write_bytes(body)
    helper = subprocess.CompletedProcess([], helper_status, stdout=helper_output, stderr=b"")
    # a helper never runs here: whatever the config names, the "helper" prints helper_output
    with mock.patch.object(_auth.subprocess, "run", return_value=helper):
        found = refused_or_returned(CredentialStore([], str(config_path)).lookup, "registry.example")
    if isinstance(found, DockyardError):
        assert found.reason in ("invalid_argument", "unauthorized")
        return
    assert found is None or all_text(found)
