"""image_facts' `missing` names what a pull with policy missing would bring: an image whose blobs are gone
from the OCI store is missing too, though it is still listed."""

from __future__ import annotations

import os

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore
from ansible_collections.dockyard.images.plugins.module_utils._facts import store_facts
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._stores import StoreOptions, open_store
from ansible_collections.dockyard.images.plugins.module_utils._transport import RegistryOptions
from support.images import Image, make_layer
from support.store_contract import Pushed, pull
from unit.support_inprocess import InProcessRegistry

BASE = make_layer({"etc/os-release": b"ID=missing\n" * 50})
APP = Image([BASE, make_layer({"app": b"app\n" * 100})])
WORKER = Image([BASE, make_layer({"worker": b"worker\n" * 100})])


def test_an_image_lacking_a_blob_is_missing_as_a_pull_would_bring_it_again(tmp_path):
    server = InProcessRegistry().start()
    try:
        server.push_image("team/app", "1", APP)
        server.push_image("team/worker", "1", WORKER)
        client = RegistryClient(CredentialStore([], docker_config=str(tmp_path / "none.json")), RegistryOptions())
        store = open_store("oci", StoreOptions(path=str(tmp_path / "oci")))
        app, worker = Pushed(f"{server.netloc}/team/app:1", APP), Pushed(f"{server.netloc}/team/worker:1", WORKER)
        pull(store, client, [app, worker])
        assert store_facts(store, [app.name, worker.name], None)[1] == []

        os.remove(store.blob_path(APP.layers[1].digest))  # gone behind the store's back
        facts, missing = store_facts(store, [app.name, worker.name], None)
        assert missing == [app.name], "the pull would fetch app's layer again"
        assert [image["reference"] for image in facts["images"]] == [app.name, worker.name], "still listed"

        pull(store, client, [app])
        assert store_facts(store, [app.name, worker.name], None)[1] == []
    finally:
        server.stop()


def test_the_host_platforms_image_counts_not_another_platforms_under_the_same_tag(tmp_path):
    """The store holds a tag for amd64 and arm64; amd64's own layer is gone. A pull for the host (amd64)
    would fetch it again, so the name is missing, though arm64's image under the same tag is whole."""
    from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
    from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
    from ansible_collections.dockyard.images.plugins.module_utils._stores import PullRequest
    from support.images import Index

    multi = Index([Image([BASE, make_layer({"arch": arch.encode() * 64})], architecture=arch) for arch in ("amd64", "arm64")])
    server = InProcessRegistry().start()
    try:
        server.push_index("team/multi", "1", multi)
        client = RegistryClient(CredentialStore([], docker_config=str(tmp_path / "none.json")), RegistryOptions())
        store = open_store("oci", StoreOptions(path=str(tmp_path / "oci")))
        name = f"{server.netloc}/team/multi:1"
        for arch in ("amd64", "arm64"):
            (result,) = store.puller(client, 3, False).pull([PullRequest(parse_reference(name), parse_platform(f"linux/{arch}"), True)])
            assert result.error is None, result.error
        amd64 = parse_platform("linux/amd64")
        assert store_facts(store, [name], amd64)[1] == []
        os.remove(store.blob_path(multi.images[0].layers[1].digest))
        assert store_facts(store, [name], amd64)[1] == [name]
        assert store_facts(store, [name], None)[1] == [name], "no platform given: the host's (this machine is amd64), as the pull takes it"
        assert store_facts(store, [name], parse_platform("linux/arm64"))[1] == [], "arm64's image is whole"
    finally:
        server.stop()
