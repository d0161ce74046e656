"""remote_facts over many names: inspected at once, each image read once per repository, reported in the
order given, and failing as a one-by-one inspection would, with the first name in the list that fails."""

from __future__ import annotations

import json
import threading
import time

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._batch import RESOLVE_WORKERS
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._facts import remote_facts
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from support.images import Image, Index, make_layer
from unit.support_inprocess import InProcessRegistry

APP = Image([make_layer({"app": b"app\n" * 100})])
WORKER = Image([make_layer({"worker": b"worker\n" * 100})])
MULTI = Index([Image([make_layer({"m": arch.encode()})], architecture=arch) for arch in ("amd64", "arm64")])
AMD64 = parse_platform("linux/amd64")
UNKNOWN = (404, {"Content-Type": "application/json"}, json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}).encode())


class HookedRegistry(InProcessRegistry):
    """An in-process registry that first runs `hooks[(method, path)]`, if any, for a request: it may wait,
    and what it returns, if anything, is the answer instead."""

    def __init__(self):
        super().__init__()
        self.hooks = {}

    def answer(self, request):
        hook = self.hooks.get((request.method, request.path))
        return (hook() if hook else None) or super().answer(request)

    def count(self, method: str, path: str) -> int:
        return len(self.requests(method, path))

    def manifest_heads(self) -> int:
        return sum(1 for request in self.requests("HEAD") if "/manifests/" in request.path)


@pytest.fixture
def registry():
    server = HookedRegistry().start()
    yield server
    server.stop()


def held_until(event: threading.Event):
    """A hook that answers once `event` is set, and as unknown if it is not within two seconds."""
    return lambda: None if event.wait(2) else UNKNOWN


def test_names_are_inspected_at_once_and_reported_in_the_order_given(registry, client):
    registry.push_image("team/app", "1", APP)
    registry.push_image("team/worker", "1", WORKER)
    worker_asked = threading.Event()
    registry.hooks[("HEAD", "/v2/team/app/manifests/1")] = held_until(worker_asked)  # one by one, app:1 would wait in vain
    registry.hooks[("HEAD", "/v2/team/worker/manifests/1")] = worker_asked.set
    names = [f"{registry.netloc}/team/app:1", f"{registry.netloc}/team/worker:1"]

    app, worker = remote_facts(client(), names, AMD64, False)
    assert (app["reference"], app["id"]) == (names[0], APP.id)
    assert (worker["reference"], worker["id"]) == (names[1], WORKER.id)
    worker_asked.clear()
    assert [image["digest"] for image in remote_facts(client(), names, AMD64, True)] == [APP.digest, WORKER.digest]


def test_tags_naming_one_image_read_it_once_per_repository(registry, client):
    for tag in ("1", "2", "3"):
        registry.push_index("team/multi", tag, MULTI)
    registry.push_index("team/again", "1", MULTI)  # the same image in another repository: read there again
    registry.push_image("team/app", "1", APP)
    names = [f"{registry.netloc}/team/multi:1", f"{registry.netloc}/team/app:1", f"{registry.netloc}/team/again:1"]
    names += [f"{registry.netloc}/team/multi:2", f"{registry.netloc}/team/multi:3", f"{registry.netloc}/team/multi@{MULTI.digest}"]

    images = remote_facts(client(), names, AMD64, False)
    assert [image["reference"] for image in images] == names
    assert [image["tag"] for image in images] == ["1", "1", "1", "2", "3", None]
    assert {image["id"] for image in images if image["repository"].endswith("multi")} == {MULTI.images[0].id}
    assert registry.manifest_heads() == 5, "a HEAD for each tag, none for the name pinned to a digest"
    amd64 = MULTI.images[0]
    for repository in ("team/multi", "team/again"):
        assert registry.count("GET", f"/v2/{repository}/manifests/{MULTI.digest}") == 1, "the index once, by the digest the HEADs found"
        assert registry.count("GET", f"/v2/{repository}/manifests/{amd64.digest}") == 1
        assert registry.count("GET", f"/v2/{repository}/blobs/{amd64.id}") == 1
    assert registry.count("GET", f"/v2/team/app/blobs/{APP.id}") == 1
    assert registry.blob_gets(amd64.id) == 2, "the config once through each repository that names it, never assumed from another"


def test_the_first_name_in_the_list_that_fails_is_the_one_named(registry, client):
    registry.push_image("team/app", "1", APP)
    registry.put_manifest("team/broken", "1", WORKER.manifest, WORKER.media_type)  # its config is not in the repository
    registry.hooks[("HEAD", "/v2/team/slow/manifests/1")] = lambda: time.sleep(0.3) or UNKNOWN
    app, broken = f"{registry.netloc}/team/app:1", f"{registry.netloc}/team/broken:1"
    slow, gone = f"{registry.netloc}/team/slow:1", f"{registry.netloc}/team/gone:1"

    with pytest.raises(DockyardError) as failed:
        remote_facts(client(), [app, slow, app, gone], AMD64, False)
    assert failed.value.reason == "not_found" and failed.value.message.startswith(f"{slow}: "), "gone:1 failed sooner, but after slow:1 in the list"
    assert registry.requests("GET", "/v2/team/slow/manifests/1") == [], "a name whose HEAD failed is not asked about again"
    with pytest.raises(DockyardError) as failed:
        remote_facts(client(), [broken, gone], AMD64, False)
    assert failed.value.message.startswith(f"{broken}: "), "broken:1 fails only when its config is read, after gone:1's HEAD failed"
    with pytest.raises(DockyardError) as failed:
        remote_facts(client(), [app, slow, "Not A Reference"], AMD64, True)
    assert failed.value.message.startswith(f"{slow}: "), "a name that is no reference fails the call only if the names before it did not"
    with pytest.raises(DockyardError) as failed:
        remote_facts(client(), [app, "Not A Reference", gone], AMD64, True)
    assert failed.value.reason == "invalid_reference"


def test_no_name_after_a_failed_one_is_inspected(registry, client):
    registry.push_image("team/app", "1", APP)
    registry.hooks[("HEAD", "/v2/team/app/manifests/1")] = lambda: time.sleep(0.5)  # the names after gone:1 are still being asked
    names = [f"{registry.netloc}/team/gone:1"] + [f"{registry.netloc}/team/app:1"] * (2 * RESOLVE_WORKERS)

    with pytest.raises(DockyardError, match="team/gone:1: "):
        remote_facts(client(), names, AMD64, False)
    assert registry.manifest_heads() <= RESOLVE_WORKERS, "only the names already under way when gone:1 failed"
    assert registry.requests("GET", f"/v2/team/app/manifests/{APP.digest}") == [], "no image after the failed name is read"
