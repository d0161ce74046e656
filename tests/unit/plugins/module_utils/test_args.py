"""Task options are checked before anything is sent: each bad value is invalid_argument, saying what is allowed."""

from __future__ import annotations

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._args import registry_argument_spec, registry_client, transfer_settings
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError


def options(**given) -> dict:
    params = {name: spec.get("default") for name, spec in registry_argument_spec().items()}
    params.update(docker_config="/nonexistent/config.json", concurrency=3, platform=None)
    params.update(given)
    return params


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": 10_000_000_000}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"retries": 1_000_000}, "retries"),
        ({"ca_path": "/nonexistent/ca.pem"}, "ca_path"),
        ({"insecure_registries": ["http://[::1"]}, "insecure_registries"),
        ({"mirrors": {"docker.io": ["::::"]}}, "mirror"),
        ({"mirrors": {"docker.io": ["http://127.0.0.1:99999"]}}, "mirror"),
        ({"mirrors": {"docker.io": "http://user:pw@127.0.0.1:5000"}}, "credentials"),
        ({"registry_auth": [{"registry": "http://[::1", "username": "u", "password": "p"}]}, "registry"),
        ({"registry_auth": [{"registry": "https://u:p@registry.example.com", "username": "u", "password": "p"}]}, "registry"),
    ],
)
def test_a_bad_registry_option_is_refused_before_any_request(given, said):
    with pytest.raises(DockyardError) as caught:
        registry_client(options(**given))
    assert caught.value.reason == "invalid_argument" and said in caught.value.message


@pytest.mark.parametrize("concurrency", [0, -3, 65, 100_000_000])
def test_concurrency_outside_its_range_is_refused(concurrency):
    with pytest.raises(DockyardError) as caught:
        transfer_settings(options(concurrency=concurrency))
    assert caught.value.reason == "invalid_argument" and "concurrency" in caught.value.message
