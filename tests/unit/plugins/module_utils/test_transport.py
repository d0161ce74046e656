"""The transport's rules: who gets credentials, which realms are trusted, challenges, links, deadlines, tokens."""

from __future__ import annotations

import email.utils
import time

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._auth import redact_userinfo
from ansible_collections.dockyard.images.plugins.module_utils._endpoints import parse_endpoint_address
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._transport import (
    MIN_RATE,
    Origin,
    Pace,
    TokenCache,
    check_realm,
    may_carry_credentials,
    next_link,
    parse_challenges,
    reason_for,
    retry_after,
)


@pytest.mark.parametrize(
    ("url", "owner", "insecure", "carries"),
    [
        ("https://registry.example.com/v2/a/manifests/1", "https://registry.example.com", (), True),
        ("https://registry.example.com:443/v2/", "https://registry.example.com", (), True),
        ("https://other.example.com/v2/_catalog?last=x", "https://registry.example.com", (), False),  # a Link elsewhere
        ("https://registry.example.com:5001/upload", "https://registry.example.com", (), False),  # another port
        ("http://registry.example.com/v2/", "https://registry.example.com", (), False),  # a downgrade is another origin
        ("http://127.0.0.1:5000/v2/", "http://127.0.0.1:5000", (), True),  # loopback never leaves the machine
        ("http://127.0.0.2:5202/v2/_catalog", "http://127.0.0.1:5000", (), False),  # another loopback host is another origin
        ("http://registry.lan:5000/v2/", "http://registry.lan:5000", (), False),  # clear text on the network
        ("http://registry.lan:5000/v2/", "http://registry.lan:5000", ("registry.lan:5000",), True),
        ("http://vm:5204/v2/", "http://127.0.0.1:5000", ("127.0.0.1:5000",), False),
        ("https://cdn.example.net/blob?sig=x", "https://registry.example.com", (), False),  # a blob redirect
        ("https://registry.example.com/v2/", None, (), False),  # nothing to carry
    ],
)
def test_credentials_go_only_to_their_own_origin_and_never_in_clear_text_off_the_machine(url, owner, insecure, carries):
    assert may_carry_credentials(url, Origin.of(owner) if owner else None, insecure) is carries


@pytest.mark.parametrize(
    ("realm", "registry", "insecure", "allowed"),
    [
        ("https://auth.docker.io/token", "https://registry-1.docker.io", (), True),
        ("http://auth.example.com/token", "https://registry.example.com", (), False),
        ("http://auth.example.com/token", "https://registry.example.com", ("registry.example.com",), False),  # the realm is not listed
        ("http://auth.example.com/token", "https://registry.example.com", ("auth.example.com",), True),
        ("http://vm:5204/token", "http://127.0.0.1:5000", (), False),  # a loopback registry cannot send credentials off the machine
        ("https://169.254.169.254/latest", "https://registry.example.com", (), False),
        ("https://127.0.0.1:9000/token", "https://registry.example.com", (), False),
        ("https://10.0.0.5/token", "https://registry.example.com", (), False),
        ("http://127.0.0.1:9000/token", "http://127.0.0.1:5000", (), True),
        ("https://10.0.0.5/token", "https://10.0.0.4:5000", (), True),
        ("https://100.64.0.1/token", "https://registry.example.com", (), False),  # a provider's shared address space
        ("https://[2606:4700::1111]/token", "https://registry.example.com", (), True),
        ("ftp://auth.example.com/", "https://registry.example.com", (), False),
        ("http://127.0.0.1:5000/token", "http://127.0.0.1:5000", (), True),
        ("http://[::1", "https://registry.example.com", (), False),
        ("", "https://registry.example.com", (), False),
        # loopback and the cloud's metadata address, however they are written
        *(
            (realm, registry, (), False)
            for registry in ("https://registry.example.com", "https://10.0.0.5")
            for realm in (
                "https://localhost:8443/token",
                "https://127.1:8443/token",
                "https://2130706433:8443/token",
                "https://0x7f000001:8443/token",
                "https://0:8443/token",
                "https://[::ffff:127.0.0.1]:8443/token",
                "https://[::ffff:169.254.169.254]/token",
                "https://169.254.43518/token",
                "https://[::127.0.0.1]:8443/token",
                "https://[64:ff9b::7f00:1]:8443/token",
                "https://[2002:7f00:1::]:8443/token",
                "https://[::1]:8443/token",
            )
        ),
    ],
)
def test_token_realms_are_checked_before_credentials_go_there(realm, registry, insecure, allowed):
    if allowed:
        assert check_realm(realm, Origin.of(registry), insecure) == Origin.of(realm)
    else:
        with pytest.raises(DockyardError) as caught:
            check_realm(realm, Origin.of(registry), insecure)
        assert caught.value.reason in ("tls", "unauthorized")


def test_a_plain_http_realm_off_the_machine_is_a_tls_failure_that_says_what_to_do():
    with pytest.raises(DockyardError) as caught:
        check_realm("http://vm:5204/token", Origin.of("http://127.0.0.1:5000"), ())
    assert caught.value.reason == "tls" and "insecure_registries" in caught.value.message


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull"',
            [("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/redis:pull"})],
        ),
        ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
        (
            'Basic realm="x, y", Bearer realm="https://a/token",scope="repository:a:pull,push"',
            [("basic", {"realm": "x, y"}), ("bearer", {"realm": "https://a/token", "scope": "repository:a:pull,push"})],
        ),
        ('Bearer realm="a\\"b",error=insufficient_scope', [("bearer", {"realm": 'a"b', "error": "insufficient_scope"})]),
        ("Negotiate", [("negotiate", {})]),
        ("", []),
    ],
)
def test_challenges_are_parsed_with_quoted_commas(header, expected):
    assert [(c.scheme, c.params) for c in parse_challenges(header)] == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('</v2/_catalog?last=b&n=2>; rel="next"', "http://r:5000/v2/_catalog?last=b&n=2"),
        ('<http://127.0.0.2:5202/v2/_catalog?last=b>; rel="next"', "http://127.0.0.2:5202/v2/_catalog?last=b"),
        ('<https://a/x>; rel="prev", </v2/t?last=z>; rel=next', "http://r:5000/v2/t?last=z"),
        ('</v2/x>; rel="last"', None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_the_next_link_is_resolved_against_the_page_that_named_it(header, expected):
    assert next_link(header, "http://r:5000/v2/_catalog?n=2") == expected


@pytest.mark.parametrize(
    ("text", "netloc", "scheme"),
    [
        ("http://mirror:5000", "mirror:5000", "http"),
        ("https://mirror:5000/", "mirror:5000", "https"),
        ("mirror.example.com", "mirror.example.com", None),
        ("127.0.0.1:5000", "127.0.0.1:5000", None),
        ("http://[::1]:5000", "[::1]:5000", "http"),
    ],
)
def test_an_endpoint_gives_its_host_and_scheme(text, netloc, scheme):
    address = parse_endpoint_address(text, "destination")
    assert (address.netloc, address.scheme) == (netloc, scheme)


@pytest.mark.parametrize(
    "text",
    ["ftp://mirror", "http://mirror:5000/v2/library", "http://", "http://[::1", "::::", "http://127.0.0.1:99999", "127.0.0.1:abc", "host:0", "", "a b"],
)
def test_an_endpoint_that_cannot_be_reached_as_written_is_refused(text):
    with pytest.raises(DockyardError) as caught:
        parse_endpoint_address(text, "destination")
    assert caught.value.reason == "invalid_argument"


def test_an_endpoint_with_credentials_in_it_is_refused_without_repeating_them():
    with pytest.raises(DockyardError) as caught:
        parse_endpoint_address("http://user:s3cr3t@127.0.0.1:5000", "mirror")
    assert caught.value.reason == "invalid_argument" and "s3cr3t" not in caught.value.message
    assert redact_userinfo("https://u:p@h:1/x") == "https://***@h:1/x" and redact_userinfo("h:1") == "h:1"


def test_a_body_slower_than_the_minimum_rate_over_a_window_is_stopped():
    now = [0.0]
    pace = Pace(5, "fetching blob x", clock=lambda: now[0])
    for _second in range(4):
        now[0] += 1
        pace.advance(10)  # within the first window nothing is judged
    now[0] += 1.5
    with pytest.raises(DockyardError) as caught:
        pace.advance(1)
    assert caught.value.reason == "unreachable" and "bytes a second" in caught.value.message


def test_a_body_at_the_minimum_rate_goes_on():
    now = [0.0]
    pace = Pace(5, "fetching blob x", clock=lambda: now[0])
    for _second in range(30):
        now[0] += 1
        pace.advance(MIN_RATE)


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
        (410, [], "not_found"),
    ],
)
def test_statuses_and_codes_map_to_one_reason(status, codes, reason):
    assert reason_for(status, codes) == reason


def test_retry_after_takes_seconds_or_a_date_and_ignores_the_past():
    assert retry_after("7") == 7.0
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after(soon) <= 31
    assert retry_after(email.utils.formatdate(time.time() - 300, usegmt=True)) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None and retry_after("٣") is None


def test_tokens_are_reused_until_shortly_before_they_expire():
    now = [1000.0]
    cache = TokenCache(clock=lambda: now[0])
    cache.put("key", "tok", 300)
    now[0] += 289
    assert cache.get("key") == "tok"
    now[0] += 2
    assert cache.get("key") is None
    cache.put("short", "tok", None)  # no expires_in: 60 s
    now[0] += 49
    assert cache.get("short") == "tok"
    now[0] += 2
    assert cache.get("short") is None
