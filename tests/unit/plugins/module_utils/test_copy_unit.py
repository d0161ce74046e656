"""Copier between two in-process registries that serve and accept real images.

What a user of image_copy sees: only the blobs the destination lacks move, a blob another repository
of the destination holds is mounted (POST ?mount=&from=) instead of uploaded, a blob several images
lack is fetched from the source once, check mode predicts every blob's fate and pushes nothing, and
one image's failure is that image's alone. Against registries that answer late, as distant ones do:
a copy waits on no round trip it can overlap with another.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore
from ansible_collections.dockyard.images.plugins.module_utils._copy import COPIED, EXISTS, MOUNTED, Copier, CopyRequest
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._transport import RegistryOptions
from support.images import OCI_MANIFEST, Image, Index, make_layer, random_layer
from unit.support_inprocess import InProcessRegistry

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

BASE = random_layer(40 * 1024, "copy-base")
APP = Image([BASE, random_layer(12 * 1024, "copy-app")], labels={"name": "app"})
WORKER = Image([BASE, random_layer(16 * 1024, "copy-worker")], labels={"name": "worker"})
OLD = Image([BASE], labels={"name": "old"})
AMD64 = Image([BASE, make_layer({"arch": b"amd64\n"})], architecture="amd64", media_type=OCI_MANIFEST)
ARM64 = Image([random_layer(8 * 1024, "copy-arm64")], architecture="arm64", media_type=OCI_MANIFEST)
MULTI = Index([AMD64, ARM64])
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class LateRegistry(InProcessRegistry):
    """An InProcessRegistry that answers the requests `late(method, path)` names that many seconds late, each
    on its own (as a distant registry answers requests sent at once), noting when each was received and answered."""

    def __init__(self, late=lambda method, path: 0.0):
        super().__init__()
        self.late = late
        self.spans = []  # (method, path, received, answered)

    def respond(self, method, path, headers, body):
        received = time.monotonic()
        time.sleep(self.late(method, urlsplit(path).path))
        answer = super().respond(method, path, headers, body)
        self.spans.append((method, urlsplit(path).path, received, time.monotonic()))
        return answer

    def span(self, method: str, path: str) -> tuple:
        """(received, answered) of the only request `method path`."""
        (found,) = [(received, answered) for m, p, received, answered in self.spans if (m, p) == (method, path)]
        return found


@pytest.fixture
def source():
    server = LateRegistry().start()
    for repo, image in (("team/app", APP), ("team/worker", WORKER), ("team/old", OLD)):
        server.push_image(repo, "1", image)
    server.push_index("team/multi", "1", MULTI)
    yield server
    server.stop()


@pytest.fixture
def destination():
    server = LateRegistry().start()
    yield server
    server.stop()


@pytest.fixture
def copy(source, destination, tmp_path, monkeypatch):
    """copy(names, check_mode=False, platform="linux/amd64"): results of one Copier run, with a new client."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    clients = []

    def run(names: list, check_mode: bool = False, platform: str = "linux/amd64") -> list:
        options = RegistryOptions(timeout=5, retries=1, backoff_base=0.01, backoff_cap=0.05)
        client = RegistryClient(CredentialStore([], str(tmp_path / "no-docker-config.json")), options)
        clients.append(client)
        requests = [CopyRequest(parse_reference(f"{source.netloc}/{name}"), parse_platform(platform) if platform != "all" else None) for name in names]
        return Copier(client, client.destination(destination.url), concurrency=3, check_mode=check_mode).copy(requests)

    yield run
    for client in clients:
        client.transport.session.close()


def blobs(result) -> list:
    return [(blob.digest, blob.size, blob.status) for blob in result.blobs]


def expected(image: Image, config: str, *layers: str) -> list:
    return [(image.id, len(image.config), config)] + [(layer.digest, layer.size, status) for layer, status in zip(image.layers, layers)]


def uploads(registry: InProcessRegistry) -> list:
    """(repository, digest) of every blob uploaded whole (PUT), in order."""
    return [(r.path.split("/blobs/")[0][len("/v2/") :], r.query["digest"][0]) for r in registry.requests("PUT") if "/blobs/uploads/" in r.path]


def mounts(registry: InProcessRegistry) -> list:
    """(repository, digest, from) of every mount asked for."""
    return [(r.path.split("/blobs/")[0][len("/v2/") :], r.query["mount"][0], r.query["from"][0]) for r in registry.requests("POST") if "mount" in r.query]


def state(registry: InProcessRegistry) -> dict:
    return {repo: (dict(held.tags), sorted(held.manifests), sorted(held.blobs)) for repo, held in registry.repositories.items()}


def test_only_the_blobs_the_destination_lacks_move_and_the_tag_moves_to_the_copied_image(copy, source, destination):
    destination.push_image("team/app", "1", OLD)  # the repository holds the base already, and the tag names another image

    (result,) = copy(["team/app:1"])

    assert result.error is None and result.changed is True
    assert blobs(result) == expected(APP, COPIED, EXISTS, COPIED)
    assert (result.tag_before, result.tag_after, result.digest, result.manifest_digest) == (OLD.digest, APP.digest, APP.digest, APP.digest)
    assert sorted(uploads(destination)) == sorted([("team/app", APP.id), ("team/app", APP.layers[1].digest)])
    assert mounts(destination) == []
    assert source.blob_gets(BASE.digest) == 0 and source.blob_gets(APP.id) == source.blob_gets(APP.layers[1].digest) == 1
    assert destination.tag_digest("team/app", "1") == APP.digest
    assert destination.repositories["team/app"].manifests[APP.digest][0] == APP.manifest, "pushed byte for byte"
    outcome = result.to_dict("app", destination.netloc)
    assert (outcome["copied_bytes"], outcome["reused_bytes"]) == (len(APP.config) + APP.layers[1].size, BASE.size)


def test_a_second_copy_moves_nothing_and_asks_the_source_one_head(copy, source, destination):
    copy(["team/app:1"])
    source.log.clear()
    destination.log.clear()

    (again,) = copy(["team/app:1"])

    assert again.error is None and again.changed is False
    assert blobs(again) == expected(APP, EXISTS, EXISTS, EXISTS)
    assert again.tag_before == again.tag_after == APP.digest
    assert source.image_requests() == [("HEAD", "/v2/team/app/manifests/1")], "the manifest is read from the destination"
    assert [r for r in destination.log if r.method in WRITES] == []


def test_a_blob_another_repository_of_the_destination_holds_is_mounted_not_uploaded(copy, source, destination):
    destination.push_image("team/old", "1", OLD)

    old, app = copy(["team/old:1", "team/app:1"])

    assert (old.error, app.error) == (None, None)
    assert old.changed is False and blobs(old) == expected(OLD, EXISTS, EXISTS)
    assert app.changed is True and blobs(app) == expected(APP, COPIED, MOUNTED, COPIED)
    assert mounts(destination) == [("team/app", BASE.digest, "team/old")]
    assert ("team/app", BASE.digest) not in uploads(destination)
    assert source.blob_gets(BASE.digest) == 0
    assert destination.holds_blob("team/app", BASE.digest) and destination.tag_digest("team/app", "1") == APP.digest


def test_a_blob_two_images_lack_is_fetched_once_uploaded_once_and_mounted_into_the_second(copy, source, destination):
    app, worker = copy(["team/app:1", "team/worker:1"])

    assert (app.error, worker.error) == (None, None)
    assert blobs(app) == expected(APP, COPIED, COPIED, COPIED)
    assert blobs(worker) == expected(WORKER, COPIED, MOUNTED, COPIED)
    assert source.blob_gets(BASE.digest) == 1
    assert [digest for _repo, digest in uploads(destination)].count(BASE.digest) == 1
    assert mounts(destination) == [("team/worker", BASE.digest, "team/app")]
    assert destination.tag_digest("team/app", "1") == APP.digest and destination.tag_digest("team/worker", "1") == WORKER.digest


@pytest.mark.parametrize(
    ("held", "names"),
    [
        ({}, ["team/app:1", "team/worker:1"]),
        ({"team/old": OLD}, ["team/old:1", "team/app:1"]),
        ({"team/app": OLD}, ["team/app:1", "team/multi:1"]),
    ],
    ids=["empty-destination", "mount-from-held-repository", "retag-and-index"],
)
def test_check_mode_predicts_every_blob_and_tag_and_pushes_nothing(copy, source, destination, held, names):
    for repo, image in held.items():
        destination.push_image(repo, "1", image)
    before = state(destination)
    destination.log.clear()

    predicted = copy(names, check_mode=True)

    assert [r for r in destination.log if r.method in WRITES] == [], "check mode pushed"
    assert state(destination) == before and source.blob_requests() == []
    real = copy(names)
    assert [r.error for r in predicted + real] == [None] * 2 * len(names)
    assert [(blobs(r), r.tag_before, r.tag_after, r.changed, r.digest) for r in predicted] == [
        (blobs(r), r.tag_before, r.tag_after, r.changed, r.digest) for r in real
    ]
    assert state(destination) != before


@pytest.mark.parametrize("failure", ["corrupt-blob", "missing-tag"])
def test_one_image_that_fails_leaves_the_other_copied_and_tagged(copy, source, destination, failure):
    bad = WORKER.layers[1]
    if failure == "corrupt-blob":
        source.corrupt(bad.digest)
    name = "team/worker:1" if failure == "corrupt-blob" else "team/worker:nope"

    worker, app = copy([name, "team/app:1"])

    assert worker.error is not None and worker.error.reason == ("digest_mismatch" if failure == "corrupt-blob" else "not_found")
    assert worker.error.message.startswith(f"{source.netloc}/{name}: ")
    assert worker.to_dict(name, destination.netloc)["failed"] is True
    assert destination.tag_digest("team/worker", "1") is None and not destination.holds_blob("team/worker", bad.digest)
    assert not destination.holds_manifest("team/worker", WORKER.digest)
    assert app.error is None and app.changed is True and destination.tag_digest("team/app", "1") == APP.digest
    assert all(destination.holds_blob("team/app", digest) for digest in (APP.id, BASE.digest, APP.layers[1].digest))


def test_every_platform_copies_the_index_and_each_manifest_it_lists(copy, source, destination):
    (result,) = copy(["team/multi:1"], platform="all")

    assert result.error is None and result.changed is True
    assert (result.digest, result.tag_after) == (MULTI.digest, MULTI.digest)
    assert result.platforms == ["linux/amd64", "linux/arm64"]
    assert sorted(blob.digest for blob in result.blobs) == sorted({AMD64.id, ARM64.id, *(layer.digest for layer in AMD64.layers + ARM64.layers)})
    held = destination.repositories["team/multi"]
    assert {MULTI.digest, AMD64.digest, ARM64.digest} <= set(held.manifests) and held.tags == {"1": MULTI.digest}
    assert source.blob_gets(BASE.digest) == 1


def manifest_puts(registry: InProcessRegistry, repo: str) -> list:
    """The refs (digests or tags) manifests were pushed to in `repo`, in order."""
    return [r.path.rsplit("/", 1)[1] for r in registry.requests("PUT") if r.path.startswith(f"/v2/{repo}/manifests/")]


def test_the_manifests_an_index_lists_are_read_at_once_and_their_blobs_start_as_each_arrives(copy, source, destination):
    late = {f"/v2/team/multi/manifests/{AMD64.digest}": 0.2, f"/v2/team/multi/manifests/{ARM64.digest}": 0.6}
    source.late = lambda method, path: late.get(path, 0.0) if method == "GET" else 0.0

    (result,) = copy(["team/multi:1"], platform="all")

    assert result.error is None and result.changed is True
    amd64, arm64 = (source.span("GET", path) for path in late)
    assert arm64[0] < amd64[1], "the second manifest was asked for before the first was answered"
    assert source.span("GET", f"/v2/team/multi/blobs/{AMD64.layers[1].digest}")[0] < arm64[1], "amd64's blobs did not wait for arm64's manifest"
    assert manifest_puts(destination, "team/multi")[-1] == "1" and destination.tag_digest("team/multi", "1") == MULTI.digest


def test_the_destination_is_asked_about_the_tag_while_the_source_is_reached_and_a_tag_it_lacks_costs_one_get(copy, source, destination):
    source.late = lambda method, path: 0.3 if path == "/v2/" else 0.0  # a source far away, first found to speak plain HTTP

    (result,) = copy(["team/app:1"])

    assert result.error is None and result.tag_before is None and result.tag_after == APP.digest
    assert destination.span("HEAD", "/v2/team/app/manifests/1")[1] < source.span("HEAD", "/v2/")[1], "asked while the source was reached"
    assert source.image_requests()[0] == ("GET", "/v2/team/app/manifests/1"), "no HEAD first: the destination has nothing to compare with"
    assert ("HEAD", "/v2/team/app/manifests/1") not in source.image_requests()


def test_the_destination_is_asked_about_each_blob_at_once(copy, source, destination):
    destination.late = lambda method, path: 0.2 if method == "HEAD" and "/blobs/" in path else 0.0

    (result,) = copy(["team/app:1"])

    assert result.error is None and blobs(result) == expected(APP, COPIED, COPIED, COPIED)
    heads = sorted((received, answered) for method, path, received, answered in destination.spans if method == "HEAD" and "/blobs/" in path)
    assert len(heads) == 3 and heads[-1][0] < heads[0][1], "the three blobs were looked up at once, not one after another"


def test_the_tagged_manifest_is_pushed_once_by_its_tag_after_the_manifests_it_names(copy, source, destination):
    index, single = copy(["team/multi:1", "team/app:1"], platform="all")

    assert (index.error, single.error) == (None, None)
    assert sorted(manifest_puts(destination, "team/multi")[:-1]) == sorted([AMD64.digest, ARM64.digest])
    assert manifest_puts(destination, "team/multi")[-1] == "1" and manifest_puts(destination, "team/app") == ["1"]
    assert destination.holds_manifest("team/multi", MULTI.digest) and destination.holds_manifest("team/app", APP.digest)


def test_a_blob_two_images_lack_goes_to_the_first_listed_even_when_the_second_is_planned_first(copy, source, destination):
    source.late = lambda method, path: 0.3 if path.startswith("/v2/team/app/manifests/") else 0.0

    app, worker = copy(["team/app:1", "team/worker:1"])

    assert blobs(app) == expected(APP, COPIED, COPIED, COPIED) and blobs(worker) == expected(WORKER, COPIED, MOUNTED, COPIED)
    assert mounts(destination) == [("team/worker", BASE.digest, "team/app")] and source.blob_gets(BASE.digest) == 1
