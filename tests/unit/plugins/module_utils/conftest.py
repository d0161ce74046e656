"""What the tests of module_utils share: a registry client for the in-process registries, and name lookups
that never leave the machine."""

from __future__ import annotations

import socket

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


_GETADDRINFO = socket.getaddrinfo


def _names_in_etc_hosts() -> set:
    with open("/etc/hosts", encoding="utf-8") as hosts:
        return {name for line in hosts for name in line.split("#", 1)[0].split()[1:]}


@pytest.fixture(autouse=True)
def names_resolve_only_on_this_machine(monkeypatch):
    """Addresses (in any form the C library reads) and the names of /etc/hosts resolve; any other name fails as
    unknown, without asking the network's DNS server (the tests use names such as registry.example.com)."""
    local = _names_in_etc_hosts()

    def getaddrinfo(host, port=None, family=0, type=0, proto=0, flags=0):
        text = host.decode() if isinstance(host, bytes) else host
        if text is None or text in local:
            return _GETADDRINFO(host, port, family, type, proto, flags)
        try:
            return _GETADDRINFO(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise socket.gaierror(socket.EAI_NONAME, f"{text}: no such name on this machine") from None

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
