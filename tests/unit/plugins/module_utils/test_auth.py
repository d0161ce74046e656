"""Credentials from tasks and docker config.json."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore, registry_host
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("docker.io", "docker.io"),
        ("http://Registry.Example.com:5000/v2/", "registry.example.com:5000"),
        ("ghcr.io", "ghcr.io"),
    ],
)
def test_registry_keys_normalise_like_docker_cli(text, host):
    assert registry_host(text) == host


def write_config(tmp_path, data):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return str(path)


def auth(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_task_credentials_win_over_the_docker_config(tmp_path):
    config = write_config(tmp_path, {"auths": {"ghcr.io": {"auth": auth("cfg", "cfgpass")}}})
    store = CredentialStore([{"registry": "https://ghcr.io", "username": "task", "password": "taskpass"}], config)
    assert store.lookup("ghcr.io").username == "task"


def test_docker_config_auths_decode_and_hub_uses_its_legacy_key(tmp_path):
    config = write_config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": auth("hubuser", "pa:ss\x00\x00")},
                "http://registry.example.com:5000/v1/": {"username": "u", "password": "p"},
                "token.example.com": {"identitytoken": "refresh-me"},
            }
        },
    )
    store = CredentialStore([], config)
    hub = store.lookup("docker.io")
    assert (hub.username, hub.password) == ("hubuser", "pa:ss")
    assert store.lookup("registry.example.com:5000").basic == ("u", "p")
    assert store.lookup("token.example.com").identity_token == "refresh-me"
    assert store.lookup("elsewhere.example.com") is None


def test_a_missing_config_means_anonymous(tmp_path):
    assert CredentialStore([], str(tmp_path / "absent.json")).lookup("ghcr.io") is None


def test_a_broken_config_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(DockyardError) as caught:
        CredentialStore([], str(path)).lookup("ghcr.io")
    assert str(path) in caught.value.message


def test_an_auth_field_without_user_is_refused(tmp_path):
    config = write_config(tmp_path, {"auths": {"ghcr.io": {"auth": base64.b64encode(b":secret").decode()}}})
    with pytest.raises(DockyardError) as caught:
        CredentialStore([], config).lookup("ghcr.io")
    assert "secret" not in caught.value.message


def install_helper(tmp_path, monkeypatch, name, script):
    helper = tmp_path / f"docker-credential-{name}"
    helper.write_text("#!/bin/sh\n" + script)
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_cred_helpers_then_creds_store_are_asked_with_the_server_on_stdin(tmp_path, monkeypatch):
    install_helper(tmp_path, monkeypatch, "pass", 'read server; printf \'{"ServerURL":"%s","Username":"helped","Secret":"s3"}\' "$server"\n')
    install_helper(tmp_path, monkeypatch, "token", 'read server; echo \'{"Username":"<token>","Secret":"idtok"}\'\n')
    install_helper(tmp_path, monkeypatch, "none", "echo 'credentials not found in native keychain'; exit 1\n")
    config = write_config(tmp_path, {"credHelpers": {"ghcr.io": "pass", "quay.io": "token"}, "credsStore": "none"})
    store = CredentialStore([], config)
    assert store.lookup("ghcr.io").basic == ("helped", "s3")
    assert store.lookup("quay.io").identity_token == "idtok"
    assert store.lookup("docker.io") is None


def test_credentials_never_show_their_secrets_in_repr():
    store = CredentialStore([{"registry": "ghcr.io", "username": "u", "password": "hunter2"}])
    assert "hunter2" not in repr(store.lookup("ghcr.io"))


@pytest.mark.parametrize("text", ["http://[::1", "https://[zz"])
def test_a_registry_that_is_not_a_url_is_refused_with_a_reason(text):
    with pytest.raises(DockyardError) as caught:
        CredentialStore([{"registry": text, "username": "u", "password": "p"}])
    assert caught.value.reason == "invalid_argument"
