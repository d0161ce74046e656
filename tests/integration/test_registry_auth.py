"""Authentication against the real registry: TLS with htpasswd Basic auth, and the token flow."""

from __future__ import annotations

import base64
import json

from support.ansible import run_module
from support.registry import PASSWORD, USER


def pull(store, name, **options):
    return run_module("image_pull", dict({"name": [name], "store_path": store}, **options))


def assert_no_secret(result):
    text = json.dumps(result)
    assert PASSWORD not in text
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in text


def test_tls_with_basic_auth_pulls_with_task_credentials(tls_registry, corpus, ca_file, store):
    auth = [{"registry": tls_registry.host, "username": USER, "password": PASSWORD}]
    mark = tls_registry.mark()
    result = pull(store, f"{tls_registry.host}/team/app:1", registry_auth=auth, ca_path=ca_file)
    assert result["changed"] is True, result
    assert result["images"][0]["digest"] == corpus.app.digest
    assert_no_secret(result)
    # a loopback registry is asked over plain HTTP first; the 400 a TLS port answers settles it: no TLS probe follows
    assert ("GET", "/v2/") not in [(method, path) for method, path, _status in tls_registry.requests_since(mark)]


def test_credentials_come_from_a_docker_config_too(tls_registry, corpus, ca_file, store, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {f"https://{tls_registry.host}": {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    result = pull(store, f"{tls_registry.host}/team/app:1", docker_config=str(config), ca_path=ca_file)
    assert result["changed"] is True, result


def test_wrong_credentials_are_unauthorized_and_never_echoed(tls_registry, ca_file, store):
    auth = [{"registry": tls_registry.host, "username": USER, "password": "not-" + PASSWORD}]
    result = pull(store, f"{tls_registry.host}/team/app:1", registry_auth=auth, ca_path=ca_file)
    assert result["failed"] and result["reason"] == "unauthorized"
    assert "not-" + PASSWORD not in json.dumps(result) + result["_stdout"]
    assert "team/app" in result["msg"]


def test_an_untrusted_certificate_is_a_tls_failure_unless_told_otherwise(tls_registry, store):
    auth = [{"registry": tls_registry.host, "username": USER, "password": PASSWORD}]
    result = pull(store, f"{tls_registry.host}/team/app:1", registry_auth=auth)
    assert result["failed"] and result["reason"] == "tls", result
    assert "ca_path" in result["msg"]
    relaxed = pull(store, f"{tls_registry.host}/team/app:1", registry_auth=auth, validate_certs=False)
    assert relaxed["changed"] is True, relaxed


def test_the_token_flow_pulls_anonymously_where_allowed_and_reuses_tokens(token_registry, corpus, store):
    issuer = token_registry.issuer
    before = len(issuer.requests)
    result = pull(store, f"{token_registry.host}/team/public:1")
    assert result["changed"] is True, result
    asked = issuer.requests[before:]
    assert asked == [(None, ["repository:team/public:pull"])], "one anonymous token, reused for every request of the pull"


def test_the_token_flow_with_credentials_gets_a_scoped_token(token_registry, corpus, store):
    issuer = token_registry.issuer
    anonymous = pull(store, f"{token_registry.host}/team/app:1")
    assert anonymous["failed"] and anonymous["reason"] in ("unauthorized", "denied"), anonymous
    before = len(issuer.requests)
    auth = [{"registry": token_registry.host, "username": USER, "password": PASSWORD}]
    result = pull(store, f"{token_registry.host}/team/app:1", registry_auth=auth)
    assert result["changed"] is True, result
    assert issuer.requests[before:] == [(USER, ["repository:team/app:pull"])]
    assert_no_secret(result)
    wrong = pull(store, f"{token_registry.host}/team/app:1", registry_auth=[dict(auth[0], password="nope")], policy="always")
    assert wrong["failed"] and wrong["reason"] == "unauthorized"


def test_names_inspected_at_once_share_one_token(token_registry):
    """Eight HEADs sent together all meet the challenge; the first to answer it fetches the token, the others use it."""
    issuer = token_registry.issuer
    before = len(issuer.requests)
    name = f"{token_registry.host}/team/public:1"
    result = run_module("image_facts", {"name": [name] * 8, "remote": True, "digests_only": True})
    assert not result.get("failed"), result
    assert len(result["images"]) == 8
    assert issuer.requests[before:] == [(None, ["repository:team/public:pull"])], "one token for the eight"
