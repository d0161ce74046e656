"""image_facts' logic without Ansible: what a store holds with its sharing, what a registry says
references are, and the fleet-wide arithmetic of the layer report built from those facts."""

from __future__ import annotations

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._facts import remote_facts, store_facts
from ansible_collections.dockyard.images.plugins.module_utils._layers import fleet_layer_report
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._stores import StoreOptions, open_store
from ansible_collections.dockyard.images.plugins.module_utils._transport import RegistryOptions
from support.images import Image, Index, make_layer
from support.store_contract import Pushed, pull
from unit.support_inprocess import InProcessRegistry

BASE = make_layer({"etc/os-release": b"ID=facts\n" * 50})
APP = Image([BASE, make_layer({"app": b"app\n" * 100})])
WORKER = Image([BASE, make_layer({"worker": b"worker\n" * 100})])
MULTI = Index([Image([make_layer({"m": arch.encode()})], architecture=arch) for arch in ("amd64", "arm64")])
AMD64 = parse_platform("linux/amd64")


@pytest.fixture(scope="module")
def registry():
    server = InProcessRegistry().start()
    server.push_image("team/app", "1", APP)
    server.push_image("team/worker", "1", WORKER)
    server.push_index("team/multi", "1", MULTI)
    yield server
    server.stop()


@pytest.fixture
def client(tmp_path):
    return RegistryClient(CredentialStore([], docker_config=str(tmp_path / "none.json")), RegistryOptions())


def test_store_facts_give_each_image_its_shared_and_unique_bytes_and_name_what_is_missing(registry, client, tmp_path):
    store = open_store("oci", StoreOptions(path=str(tmp_path / "oci")))
    app, worker = Pushed(f"{registry.netloc}/team/app:1", APP), Pushed(f"{registry.netloc}/team/worker:1", WORKER)
    pull(store, client, [app, worker])
    facts, missing = store_facts(store, [app.name, worker.name, f"{registry.netloc}/team/nope:1"], None)
    assert missing == [f"{registry.netloc}/team/nope:1"]
    image = facts["images"][0]
    assert (image["id"], image["shared_size"], image["unique_size"]) == (APP.id, BASE.size, APP.layers[1].size + len(APP.config))
    (alone,) = store_facts(store, [app.name], None)[0]["images"]
    assert alone["shared_size"] == 0, "sharing is counted over the images reported"
    everything, _missing = store_facts(store, None, AMD64)
    assert everything["summary"]["saved_size"] == BASE.size
    assert store_facts(store, None, parse_platform("linux/arm64"))[0]["images"] == [], "a platform filter keeps only that platform"


def test_remote_facts_describe_an_image_as_the_store_would_and_list_every_platform(registry, client):
    (single, multi) = remote_facts(client, [f"{registry.netloc}/team/app:1", f"{registry.netloc}/team/multi:1"], AMD64, False)
    assert (single["id"], single["digest"], single["size"]) == (APP.id, APP.digest, len(APP.config) + sum(layer.size for layer in APP.layers))
    assert single["platforms"] == ["linux/amd64"] and single["containers"] == []
    assert multi["digest"] == MULTI.digest and sorted(multi["platforms"]) == ["linux/amd64", "linux/arm64"]
    assert multi["manifest_digest"] == MULTI.images[0].digest
    (digest_only,) = remote_facts(client, [f"{registry.netloc}/team/app:1"], AMD64, True)
    assert digest_only == {"reference": f"{registry.netloc}/team/app:1", "canonical": f"{registry.netloc}/team/app:1", "digest": APP.digest}


def test_remote_facts_need_names_and_name_the_reference_that_failed(registry, client):
    with pytest.raises(DockyardError, match="remote: true needs name"):
        remote_facts(client, [], AMD64, False)
    with pytest.raises(DockyardError) as failed:
        remote_facts(client, [f"{registry.netloc}/team/nope:1"], AMD64, False)
    assert failed.value.reason == "not_found" and "team/nope:1" in failed.value.message


def test_the_fleet_report_counts_each_layer_once_per_host_and_once_for_the_fleet():
    def image(name, layers, size_of_config=10):
        size = size_of_config + sum(size for _digest, size in layers)
        return {"reference": name, "id": f"sha256:{name}", "size": size, "layers": [{"digest": d, "size": s} for d, s in layers]}

    base, app, worker = ("sha256:base", 1000), ("sha256:app", 100), ("sha256:worker", 200)
    report = fleet_layer_report({"h1": {"images": [image("app", [base, app]), image("worker", [base, worker])]}, "h2": {"images": [image("app", [base, app])]}})
    assert report["hosts"]["h1"] == {
        "store": None, "images": 2, "layers": 3, "logical_bytes": 2320, "physical_bytes": 1320, "saved_bytes": 1000, "shared_layers": 1,
    }  # fmt: skip
    assert report["fleet"]["unique_bytes"] == 1300 and report["fleet"]["physical_bytes"] == 1320 + 1110
    assert [entry["missing_on"] for entry in report["images"]] == [[], ["h2"]]
    assert report["layers"][0] == {"digest": "sha256:base", "size": 1000, "images": ["app", "worker"], "hosts": ["h1", "h2"]}
