"""The store contract (support.store_contract) against the OCI store, in seconds: an in-process
registry and a temporary store. The integration tests run it against every store."""

from __future__ import annotations

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._stores import StoreOptions, open_store
from ansible_collections.dockyard.images.plugins.module_utils._transport import RegistryOptions
from support.images import Image, make_layer
from support.store_contract import CASES, Pushed
from unit.support_inprocess import InProcessRegistry

BASE = make_layer({"etc/os-release": b"ID=contract\n"})
APP = Image([BASE, make_layer({"app": b"app\n" * 100})])
WORKER = Image([BASE, make_layer({"worker": b"worker\n" * 100})])


@pytest.fixture(scope="module")
def registry():
    server = InProcessRegistry().start()
    server.push_image("team/app", "1", APP)
    server.push_image("team/worker", "1", WORKER)
    yield server
    server.stop()


@pytest.mark.parametrize("case", CASES, ids=[case.__name__[len("case_") :] for case in CASES])
def test_the_oci_store_keeps_the_contract(case, registry, tmp_path):
    store = open_store("oci", StoreOptions(path=str(tmp_path / "oci")))
    client = RegistryClient(CredentialStore([], docker_config=str(tmp_path / "no-config.json")), RegistryOptions())
    case(store, client, Pushed(f"{registry.netloc}/team/app:1", APP), Pushed(f"{registry.netloc}/team/worker:1", WORKER), tmp_path)


def test_an_unknown_store_is_an_invalid_argument_that_names_the_stores():
    with pytest.raises(DockyardError, match="store must be auto or one of oci, docker, podman, containerd, not 'dockr'") as failed:
        open_store("dockr")
    assert failed.value.reason == "invalid_argument"


def test_auto_with_a_store_path_is_the_oci_store_without_asking_any_engine(tmp_path):
    store = open_store("auto", StoreOptions(path=str(tmp_path / "oci"), docker_host="unix:///nonexistent/docker.sock"))
    assert store.name == "oci" and store.describe()["path"] == str(tmp_path / "oci")
