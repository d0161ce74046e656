"""What the tests of module_utils share: a registry client for the in-process registries."""

from __future__ import annotations

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._transport import RegistryOptions

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def client(tmp_path, monkeypatch):
    """A new registry client each call (so that nothing, not even the scheme, is remembered between pulls)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    made = []

    def make() -> RegistryClient:
        options = RegistryOptions(timeout=5, retries=1, backoff_base=0.01, backoff_cap=0.05)
        made.append(RegistryClient(CredentialStore([], str(tmp_path / "no-docker-config.json")), options))
        return made[-1]

    yield make
    for made_client in made:
        made_client.transport.session.close()
