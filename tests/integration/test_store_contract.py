"""The store contract (support.store_contract) against every store, through the Store protocol
only: the OCI store, Docker Engine, Podman and containerd, each empty at the start of a case."""

from __future__ import annotations

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._stores import StoreOptions, open_store
from ansible_collections.dockyard.images.plugins.module_utils._transport import RegistryOptions
from support.store_contract import CASES, Pushed


@pytest.fixture(params=["oci", "docker", "podman", "containerd"])
def store(request, tmp_path):
    if request.param == "oci":
        return open_store("oci", StoreOptions(path=str(tmp_path / "oci")))
    if request.param == "containerd":
        service = request.getfixturevalue("containerd_service")
        service.remove_all()
        return open_store("containerd", StoreOptions(containerd_address=service.socket_path))
    engine = request.getfixturevalue(f"{request.param}_engine")
    engine.remove_all_images()
    return open_store(request.param, StoreOptions(docker_host=engine.docker_host))


@pytest.mark.parametrize("case", CASES, ids=[case.__name__[len("case_") :] for case in CASES])
def test_every_store_keeps_the_contract(case, store, registry, corpus, tmp_path):
    client = RegistryClient(CredentialStore([]), RegistryOptions())
    app, worker = Pushed(f"{registry.host}/team/app:1", corpus.app), Pushed(f"{registry.host}/team/worker:1", corpus.worker)
    case(store, client, app, worker, tmp_path)
