"""The fetching puller into a temporary OCI store, against an in-process registry serving real images.

What a user of image_pull sees: each layer's status (pull_complete, already_exists, or missing for an
image that failed), bytes downloaded and reused, a layer several images share fetched once (the
registry counts every GET), check mode that predicts exactly what the real pull then does and writes
nothing, room on the disk reserved image by image, one image's failure left to that image, and how
few requests `policy: missing` and `policy: always` cost.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import ALREADY_EXISTS, MISSING, PULL_COMPLETE, PullRequest
from ansible_collections.dockyard.images.plugins.module_utils._stores._oci import OciStore
from support.images import OCI_MANIFEST, Image, Index, make_layer, random_layer
from unit.support_inprocess import InProcessRegistry, sha256

BASE = random_layer(48 * 1024, "pull-base")
APP = Image([BASE, random_layer(16 * 1024, "pull-app")], labels={"name": "app"})
WORKER = Image([BASE, random_layer(24 * 1024, "pull-worker")], labels={"name": "worker"})
TOOLS = Image([random_layer(20 * 1024, "pull-tools")], labels={"name": "tools"})
BIG = Image([random_layer(160 * 1024, "pull-big")], labels={"name": "big"})
APP_2 = Image([BASE, random_layer(12 * 1024, "pull-app-2")], labels={"name": "app", "release": "2"})
AMD64 = Image([BASE, make_layer({"arch": b"amd64\n"})], architecture="amd64", media_type=OCI_MANIFEST)
ARM64 = Image([random_layer(8 * 1024, "pull-arm64"), make_layer({"arch": b"arm64\n"})], architecture="arm64", media_type=OCI_MANIFEST)
MULTI = Index([AMD64, ARM64])
SERVED = {"team/app": APP, "team/worker": WORKER, "team/tools": TOOLS, "team/big": BIG}


def blobs_of(image: Image) -> dict:
    """digest: size of everything a pull of `image` stores besides its manifest: config and layers."""
    return {image.id: len(image.config), **{layer.digest: layer.size for layer in image.layers}}


@pytest.fixture
def registry():
    server = InProcessRegistry().start()
    for repo, image in SERVED.items():
        server.push_image(repo, "1", image)
    server.push_index("team/multi", "1", MULTI)
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path) -> OciStore:
    return OciStore(str(tmp_path / "store"), lock_timeout=5)


def pull(store, client, registry, names, check_mode=False, policy="missing", platform: Optional[str] = None, concurrency=3) -> list:
    requests = [
        PullRequest(parse_reference(f"{registry.netloc}/{name}"), parse_platform(platform or "linux/amd64"), platform is not None, policy) for name in names
    ]
    return store.puller(client(), concurrency, check_mode).pull(requests)


def layers(result) -> list:
    return [(layer.digest, layer.size, layer.status) for layer in result.layers]


def expected(image: Image, *statuses: str) -> list:
    return [(layer.digest, layer.size, status) for layer, status in zip(image.layers, statuses)]


def outcome(result) -> tuple:
    """Everything a result reports that check mode must predict."""
    return (layers(result), result.downloaded_bytes, result.reused_bytes, result.changed, result.digest, result.manifest_digest, result.id)


def tagged(store: OciStore, registry, name: str) -> Optional[dict]:
    return store.find_entry(parse_reference(f"{registry.netloc}/{name}"), None)


def snapshot(root: str) -> dict:
    """Every file under `root`, with a hash of its bytes."""
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return found


# -- statuses and the store ----------------------------------------------------------------------


def test_a_fresh_pull_fetches_each_blob_once_verifies_it_and_tags_the_image(store, client, registry):
    (result,) = pull(store, client, registry, ["team/app:1"])

    assert result.error is None and result.changed is True and result.before is None
    assert layers(result) == expected(APP, PULL_COMPLETE, PULL_COMPLETE)
    assert (result.downloaded_bytes, result.reused_bytes) == (sum(layer.size for layer in APP.layers), 0)
    assert (result.id, result.digest, result.manifest_digest, result.platform) == (APP.id, APP.digest, APP.digest, "linux/amd64")
    for data in (APP.config, *(layer.blob for layer in APP.layers)):
        assert store.read_blob(sha256(data)) == data
        assert registry.blob_gets(sha256(data)) == 1
    assert registry.image_requests()[0] == ("GET", "/v2/team/app/manifests/1"), "a tag the store lacks is fetched at once, without a HEAD"
    entry = tagged(store, registry, "team/app:1")
    assert entry is not None and store.is_complete(entry)
    (record,) = store.images()
    assert (record.reference.familiar, record.id, record.digest, str(record.platform)) == (f"{registry.netloc}/team/app:1", APP.id, APP.digest, "linux/amd64")
    assert [layer.digest for layer in record.layers] == [layer.digest for layer in APP.layers]


def test_policy_missing_reports_a_held_image_without_asking_the_registry_anything(store, client, registry):
    pull(store, client, registry, ["team/app:1"])
    registry.log.clear()
    before = snapshot(store.root)

    (result,) = pull(store, client, registry, ["team/app:1"])

    assert registry.log == [], "not even the version check"
    assert result.error is None and result.changed is False and result.before == APP.digest
    assert layers(result) == expected(APP, ALREADY_EXISTS, ALREADY_EXISTS)
    assert (result.downloaded_bytes, result.reused_bytes) == (0, sum(layer.size for layer in APP.layers))
    assert (result.id, result.digest, result.platform) == (APP.id, APP.digest, "linux/amd64")
    assert snapshot(store.root) == before


def test_policy_always_with_an_unmoved_tag_sends_one_head_and_nothing_else(store, client, registry):
    pull(store, client, registry, ["team/app:1"])
    registry.log.clear()

    (result,) = pull(store, client, registry, ["team/app:1"], policy="always")

    assert registry.image_requests() == [("HEAD", "/v2/team/app/manifests/1")]
    assert result.error is None and result.changed is False
    assert layers(result) == expected(APP, ALREADY_EXISTS, ALREADY_EXISTS)


def test_a_head_leaves_its_connection_to_the_next_request(client, registry):
    """Over a network, a new connection costs two round trips (TCP, TLS): a HEAD must not drop its own."""
    reference = parse_reference(f"{registry.netloc}/team/app:1")
    remote = client().for_reference(reference)
    registry.peers.clear()

    for _attempt in range(3):
        assert remote.head_manifest(reference) == APP.digest
        assert remote.get_manifest(reference, "1").digest == APP.digest

    assert len(registry.peers) == 1, registry.peers


def test_policy_always_with_a_moved_tag_fetches_only_the_new_blobs_and_moves_the_tag(store, client, registry):
    pull(store, client, registry, ["team/app:1"])
    registry.push_image("team/app", "1", APP_2)
    registry.log.clear()

    (result,) = pull(store, client, registry, ["team/app:1"], policy="always")

    assert result.error is None and result.changed is True
    assert (result.before, result.digest, result.id) == (APP.digest, APP_2.digest, APP_2.id)
    assert layers(result) == expected(APP_2, ALREADY_EXISTS, PULL_COMPLETE)
    assert registry.image_requests()[0] == ("HEAD", "/v2/team/app/manifests/1")
    assert registry.blob_gets(BASE.digest) == 0 and registry.blob_gets(APP_2.layers[1].digest) == 1
    assert [record.digest for record in store.images()] == [APP_2.digest], "the tag names the new image, once"


# -- sharing -------------------------------------------------------------------------------------


def test_a_layer_two_images_of_one_task_share_is_downloaded_once_and_counted_reused_by_the_second(store, client, registry):
    app, worker = pull(store, client, registry, ["team/app:1", "team/worker:1"])

    assert (app.error, worker.error) == (None, None)
    assert layers(app) == expected(APP, PULL_COMPLETE, PULL_COMPLETE)
    assert layers(worker) == expected(WORKER, ALREADY_EXISTS, PULL_COMPLETE)
    assert worker.reused_bytes == BASE.size
    assert app.downloaded_bytes + worker.downloaded_bytes == BASE.size + APP.layers[1].size + WORKER.layers[1].size
    for digest in {**blobs_of(APP), **blobs_of(WORKER)}:
        assert registry.blob_gets(digest) == 1, digest
    assert tagged(store, registry, "team/app:1") and tagged(store, registry, "team/worker:1")


def test_the_same_content_under_several_names_is_fetched_once_and_what_the_store_holds_not_at_all(store, client, registry):
    registry.push_image("team/app", "latest", APP)
    registry.push_image("other/app", "1", APP)
    pull(store, client, registry, ["team/worker:1"])  # the store now holds the base layer
    registry.log.clear()

    first, latest, other = pull(store, client, registry, ["team/app:1", "team/app:latest", "other/app:1"])

    assert [r.error for r in (first, latest, other)] == [None, None, None]
    assert layers(first) == expected(APP, ALREADY_EXISTS, PULL_COMPLETE)
    assert layers(latest) == layers(other) == expected(APP, ALREADY_EXISTS, ALREADY_EXISTS)
    assert registry.blob_gets(BASE.digest) == 0
    assert registry.blob_gets(APP.layers[1].digest) == registry.blob_gets(APP.id) == 1
    assert sum(r.downloaded_bytes for r in (first, latest, other)) == APP.layers[1].size
    assert all(tagged(store, registry, name) for name in ("team/app:1", "team/app:latest", "other/app:1"))


# -- check mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("held", [[], ["team/worker:1"]], ids=["empty-store", "base-held"])
def test_check_mode_predicts_exactly_what_the_real_pull_then_does_and_writes_nothing(store, client, registry, held):
    names = ["team/app:1", "team/tools:1", "team/multi:1", "team/worker:1"]
    if held:
        pull(store, client, registry, held)
    before = snapshot(store.root) if held else None
    registry.log.clear()

    predicted = pull(store, client, registry, names, check_mode=True)

    assert registry.blob_requests() == [], "a plan fetches no blob"
    if held:
        assert snapshot(store.root) == before
    else:
        assert not os.path.exists(store.root), "check mode created the store"
    real = pull(store, client, registry, names)
    assert [r.error for r in predicted + real] == [None] * 2 * len(names)
    assert [outcome(r) for r in predicted] == [outcome(r) for r in real]
    # a single-platform image names its platform only in its config, which a plan does not fetch
    assert [r.platform for r in predicted] == [None, None, "linux/amd64", "linux/amd64" if held else None]
    assert {r.platform for r in real} == {"linux/amd64"}
    assert layers(real[3]) == expected(WORKER, ALREADY_EXISTS, ALREADY_EXISTS if held else PULL_COMPLETE)


# -- room on the disk ----------------------------------------------------------------------------


@pytest.mark.parametrize("order", [["team/big:1", "team/app:1"], ["team/app:1", "team/big:1"]], ids=["big-first", "big-last"])
@pytest.mark.parametrize("check_mode", [False, True], ids=["real", "check"])
def test_an_image_the_disk_has_no_room_for_fails_disk_full_before_any_download_and_the_others_are_pulled(
    store, client, registry, monkeypatch, order, check_mode
):
    free = sum(blobs_of(APP).values()) + 100  # room for app, not for big
    monkeypatch.setattr(store, "free_bytes", lambda: free)

    results = dict(zip(order, pull(store, client, registry, order, check_mode=check_mode)))

    big, app = results["team/big:1"], results["team/app:1"]
    assert big.error is not None and big.error.reason == "disk_full"
    # room is counted image by image in list order: what app reserved first counts against big
    layers_needed = sum(layer.size for layer in BIG.layers) + (sum(layer.size for layer in APP.layers) if order[0] == "team/app:1" else 0)
    assert big.error.details["bytes_free"] == free and big.error.details["bytes_needed"] >= layers_needed > free
    assert store.root in big.error.message and big.error.message.startswith(f"{registry.netloc}/team/big:1: ")
    assert layers(big) == expected(BIG, MISSING) and big.changed is False
    assert registry.blob_gets(BIG.layers[0].digest) == 0 and not store.has_blob(BIG.layers[0].digest), "its layer was not downloaded"
    assert app.error is None and layers(app) == expected(APP, PULL_COMPLETE, PULL_COMPLETE)
    assert tagged(store, registry, "team/big:1") is None
    assert (tagged(store, registry, "team/app:1") is not None) is not check_mode


def test_an_image_refused_for_room_fetches_nothing_and_reports_the_bytes_check_mode_predicted(store, client, registry, monkeypatch):
    free = sum(blobs_of(APP).values()) + 100
    monkeypatch.setattr(store, "free_bytes", lambda: free)
    names = ["team/app:1", "team/big:1"]

    predicted = pull(store, client, registry, names, check_mode=True)[1]
    real = pull(store, client, registry, names)[1]

    assert predicted.error.details == {"bytes_needed": sum(blobs_of(APP).values()) + sum(blobs_of(BIG).values()), "bytes_free": free}
    assert registry.blob_gets(BIG.id) == 0 and not store.has_blob(BIG.id), "the refused image's config was downloaded"
    assert real.error.details == predicted.error.details


def test_a_layer_two_images_share_is_reserved_once(store, client, registry, monkeypatch):
    free = sum({**blobs_of(APP), **blobs_of(WORKER)}.values())  # exactly: counting the shared base twice would not fit
    monkeypatch.setattr(store, "free_bytes", lambda: free)

    app, worker = pull(store, client, registry, ["team/app:1", "team/worker:1"])

    assert (app.error, worker.error) == (None, None)
    assert layers(worker) == expected(WORKER, ALREADY_EXISTS, PULL_COMPLETE)


# -- failures stay with their image --------------------------------------------------------------


def test_an_image_whose_blob_is_corrupt_fails_digest_mismatch_and_the_other_is_pulled_and_tagged(store, client, registry):
    bad = WORKER.layers[1]
    registry.corrupt(bad.digest)

    worker, app = pull(store, client, registry, ["team/worker:1", "team/app:1"])

    assert worker.error is not None and worker.error.reason == "digest_mismatch"
    assert worker.error.message.startswith(f"{registry.netloc}/team/worker:1: ") and bad.digest in worker.error.message
    assert layers(worker) == expected(WORKER, PULL_COMPLETE, MISSING), "the base it brought stays; the corrupt layer is missing"
    assert worker.to_dict("worker")["failed"] is True and worker.to_dict("worker")["reason"] == "digest_mismatch"
    assert not store.has_blob(bad.digest) and tagged(store, registry, "team/worker:1") is None
    assert app.error is None and layers(app) == expected(APP, ALREADY_EXISTS, PULL_COMPLETE)
    entry = tagged(store, registry, "team/app:1")
    assert entry is not None and store.is_complete(entry)
    with open(os.path.join(store.root, "index.json"), encoding="utf-8") as handle:
        assert len(json.load(handle)["manifests"]) == 1


def test_once_a_blob_of_an_image_fails_its_blobs_not_yet_started_are_given_up(store, client, registry):
    """A registry that fails an image's blobs (each at its deadline, in life) costs the pull one failure, not one per layer."""
    many = Image([random_layer(2048 + index, f"many-{index}") for index in range(12)], labels={"name": "many"})
    registry.push_image("team/many", "1", many)
    for layer in many.layers:
        registry.corrupt(layer.digest)

    bad, app = pull(store, client, registry, ["team/many:1", "team/app:1"], concurrency=1)

    assert bad.error is not None and bad.error.reason == "digest_mismatch"
    assert sum(registry.blob_gets(layer.digest) for layer in many.layers) == 1, "the first layer failed; the other eleven were not fetched"
    assert layers(bad) == expected(many, *[MISSING] * 12)
    assert app.error is None and tagged(store, registry, "team/app:1") is not None, "the other image of the pull is pulled and tagged"


def test_a_blob_one_registry_fails_is_fetched_through_the_other_registry_whose_image_shares_it(store, client, registry):
    """A registry cannot fail another registry's image by serving a blob they share wrong (or not at all)."""
    other = InProcessRegistry().start()
    try:
        other.push_image("team/worker", "1", WORKER)
        shared = WORKER.layers[0]
        assert shared.digest == APP.layers[0].digest
        registry.corrupt(shared.digest)
        requests = [
            PullRequest(parse_reference(name), parse_platform("linux/amd64")) for name in (f"{registry.netloc}/team/app:1", f"{other.netloc}/team/worker:1")
        ]

        app, worker = store.puller(client(), 1, False).pull(requests)

        assert app.error is not None and app.error.reason == "digest_mismatch"
        assert worker.error is None, worker.error
        assert other.blob_gets(shared.digest) == 1, "fetched again through the worker's own registry"
        assert tagged(store, other, "team/worker:1") is not None and store.has_blob(shared.digest)
    finally:
        other.stop()


def test_a_tag_the_registry_lacks_fails_not_found_alone(store, client, registry):
    missing, app = pull(store, client, registry, ["team/app:nope", "team/app:1"])

    assert missing.error is not None and missing.error.reason == "not_found" and "team/app:nope" in missing.error.message
    assert missing.layers == [] and missing.changed is False
    assert app.error is None and tagged(store, registry, "team/app:1") is not None


# -- platforms -----------------------------------------------------------------------------------


def test_an_explicit_platform_takes_its_manifest_from_the_index_and_only_its_blobs(store, client, registry):
    (result,) = pull(store, client, registry, ["team/multi:1"], platform="linux/arm64")

    assert result.error is None
    assert (result.digest, result.manifest_digest, result.id, result.platform) == (MULTI.digest, ARM64.digest, ARM64.id, "linux/arm64")
    assert layers(result) == expected(ARM64, PULL_COMPLETE, PULL_COMPLETE)
    assert [registry.blob_gets(digest) for digest in blobs_of(AMD64) if digest not in blobs_of(ARM64)] == [0, 0, 0]
    (record,) = store.images()
    assert (str(record.platform), record.digest, record.manifest_digest) == ("linux/arm64", MULTI.digest, ARM64.digest)


@pytest.mark.parametrize("check_mode", [False, True], ids=["real", "check"])
def test_an_explicit_platform_a_single_platform_image_lacks_fails_platform_not_found(store, client, registry, check_mode):
    (result,) = pull(store, client, registry, ["team/app:1"], platform="linux/arm64", check_mode=check_mode)

    assert result.error is not None and result.error.reason == "platform_not_found"
    assert "linux/amd64" in result.error.message and result.error.details == {"platforms_available": ["linux/amd64"]}
    assert tagged(store, registry, "team/app:1") is None
