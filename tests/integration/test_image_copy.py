"""image_copy against real registries: each blob leaves the source once, the destination ends up
holding exactly the platform's image, re-runs cost only HEADs, and pull-through caches refuse."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import requests
import yaml

from support.ansible import run_module, run_playbook
from support.images import Pusher
from support.proxy import Fault, FaultProxy
from support.registry import PASSWORD, USER, RegistryServer


@pytest.fixture
def destination(tmp_path):
    server = RegistryServer(str(tmp_path / "destination")).start()
    yield server
    server.stop()


def blob_gets(requests_seen) -> Counter:
    return Counter(path.rsplit("/", 1)[1] for method, path, status in requests_seen if method == "GET" and "/blobs/" in path)


def manifest_at(server, repository: str, ref: str) -> requests.Response:
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    return requests.get(f"{server.url}/v2/{repository}/manifests/{ref}", headers={"Accept": accept}, timeout=10)


def test_a_copy_fetches_each_blob_once_and_a_second_copy_fetches_nothing(registry, corpus, destination):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1", f"{registry.host}/team/multi:1"]
    args = {"name": names, "destination": destination.url, "platform": "linux/amd64"}
    images = [corpus.app, corpus.worker, corpus.amd64]
    unique = {layer.digest: layer.size for image in images for layer in image.layers} | {image.id: len(image.config) for image in images}

    mark = registry.mark()
    done = run_module("image_copy", args)
    assert done["changed"] is True, done
    assert blob_gets(registry.requests_since(mark)) == Counter(dict.fromkeys(unique, 1)), "every blob left the source exactly once"
    assert done["copied_bytes"] == sum(unique.values())
    statuses = {image["reference"]: {blob["digest"]: blob["status"] for blob in image["blobs"]} for image in done["images"]}
    # the base layer is uploaded into one repository and mounted into the other two
    assert sorted(statuses[name][corpus.base.digest] for name in names) == ["copied", "mounted", "mounted"]
    for name, image in zip(names, images):
        served = manifest_at(destination, name.split("/", 1)[1].rsplit(":", 1)[0], "1")
        assert served.status_code == 200
        assert served.headers["Docker-Content-Digest"] == image.digest, "the tag names the platform's manifest"
    multi = done["images"][2]
    assert (multi["digest"], multi["manifest_digest"], multi["platform"]) == (corpus.multi.digest, corpus.amd64.digest, "linux/amd64")
    assert multi["destination"] == f"{destination.host}/team/multi"
    arm = requests.head(f"{destination.url}/v2/team/multi/blobs/{corpus.arm64.layers[1].digest}", timeout=10)
    assert arm.status_code == 404, "other platforms stay behind"

    mark = registry.mark()
    again = run_module("image_copy", args)
    assert again["changed"] is False, again
    assert again["copied_bytes"] == 0
    assert all(blob["status"] == "exists" for image in again["images"] for blob in image["blobs"])
    seen = [(method, path) for method, path, status in registry.image_requests_since(mark)]
    # one HEAD per tag; the index of the multi-platform image is read again, as this destination
    # holds only the platform's manifest (a mirror's cache that shares its storage holds the index too)
    heads = sorted(("HEAD", f"/v2/team/{name}/manifests/1") for name in ("app", "multi", "worker"))
    assert sorted(seen) == [("GET", f"/v2/team/multi/manifests/{corpus.multi.digest}"), *heads]


def test_every_platform_is_copied_as_the_source_has_it_and_a_second_copy_pushes_nothing(registry, corpus, destination):
    images = [*corpus.multi.images, corpus.attestation]
    unique = {layer.digest: layer.size for image in images for layer in image.layers} | {image.id: len(image.config) for image in images}
    args = {"name": [f"{registry.host}/team/multi:1", f"{registry.host}/team/oci:1"], "destination": destination.url, "platform": "all"}

    predicted = run_module("image_copy", args, check=True, diff=True)
    assert predicted["changed"] is True, predicted
    assert predicted["diff"]["after"] == {f"{destination.host}/team/multi:1": corpus.multi.digest, f"{destination.host}/team/oci:1": corpus.oci.digest}
    assert requests.get(f"{destination.url}/v2/_catalog", timeout=10).json()["repositories"] == []

    mark, pushed = registry.mark(), destination.mark()
    done = run_module("image_copy", args)
    assert done["changed"] is True, done
    assert blob_gets(registry.requests_since(mark)) == Counter(dict.fromkeys([*unique, corpus.oci.id, *(layer.digest for layer in corpus.oci.layers)], 1))
    puts = [path.rsplit("/", 1)[1] for method, path, status in destination.requests_since(pushed) if method == "PUT" and "/team/multi/manifests/" in path]
    assert sorted(puts[:-1]) == sorted(image.digest for image in images) and puts[-1] == "1", "the index is pushed once, by its tag, after what it names"
    multi, single = done["images"]
    assert (multi["digest"], multi["manifest_digest"], multi["platform"]) == (corpus.multi.digest, None, None)
    assert multi["platforms"] == ["linux/amd64", "linux/arm64", "linux/arm/v7"], "attestations are copied but are no platform"
    assert multi["copied_bytes"] == sum(unique.values()) == predicted["images"][0]["copied_bytes"]
    assert (single["digest"], single["manifest_digest"], single["platforms"]) == (corpus.oci.digest, corpus.oci.digest, None)
    index = requests.get(f"{destination.url}/v2/team/multi/manifests/1", headers={"Accept": corpus.multi.media_type}, timeout=10)
    assert index.content == corpus.multi.manifest, "the tag names the source's index, byte for byte"
    for image in images:
        assert manifest_at(destination, "team/multi", image.digest).content == image.manifest

    mark = registry.mark()
    again = run_module("image_copy", args)
    assert again["changed"] is False, again
    assert again["copied_bytes"] == 0
    # the destination holds the index and what it names: the source answers one HEAD per tag
    seen = sorted((method, path) for method, path, status in registry.image_requests_since(mark))
    assert seen == [("HEAD", "/v2/team/multi/manifests/1"), ("HEAD", "/v2/team/oci/manifests/1")]


def test_a_copy_of_every_platform_completes_what_a_one_platform_copy_left(registry, corpus, destination):
    name = f"{registry.host}/team/multi:1"
    run_module("image_copy", {"name": [name], "destination": destination.url, "platform": "linux/arm64"})
    mark = registry.mark()
    done = run_module("image_copy", {"name": [name], "destination": destination.url, "platform": "all"}, diff=True)
    key = f"{destination.host}/team/multi:1"
    assert done["diff"] == {"before": {key: corpus.arm64.digest}, "after": {key: corpus.multi.digest}}, "the tag moves to the index"
    statuses = {blob["digest"]: blob["status"] for blob in done["images"][0]["blobs"]}
    arm64_blobs = [corpus.arm64.id, *(layer.digest for layer in corpus.arm64.layers)]
    assert [statuses[digest] for digest in arm64_blobs] == ["exists"] * len(arm64_blobs)
    assert statuses[corpus.amd64.layers[1].digest] == statuses[corpus.armv7.layers[0].digest] == "copied"
    fetched = blob_gets(registry.requests_since(mark))
    assert not fetched.keys() & set(arm64_blobs), "what the destination held is not fetched again"
    assert sum(fetched.values()) == len(fetched) == sum(status == "copied" for status in statuses.values())


def test_an_index_inside_an_index_is_refused_with_a_reason_and_nothing_is_pushed(registry, corpus, destination):
    pusher = Pusher(registry.url)
    pusher.image("team/nested", corpus.amd64.digest, corpus.amd64)
    pusher.index("team/nested", corpus.arm_only.digest, corpus.arm_only)
    amd64, arm_only = corpus.amd64, corpus.arm_only
    nested = {
        "schemaVersion": 2,
        "mediaType": arm_only.media_type,
        "manifests": [
            {"mediaType": amd64.media_type, "digest": amd64.digest, "size": len(amd64.manifest), "platform": amd64.platform},
            {"mediaType": arm_only.media_type, "digest": arm_only.digest, "size": len(arm_only.manifest)},
        ],
    }
    pusher.manifest("team/nested", "1", json.dumps(nested).encode(), arm_only.media_type)

    failed = run_module("image_copy", {"name": [f"{registry.host}/team/nested:1"], "destination": destination.url, "platform": "all"})
    assert failed["failed"] is True
    assert failed["images"][0]["reason"] == "unsupported_media_type", failed
    assert corpus.arm_only.digest in failed["images"][0]["msg"] and "one at a time" in failed["images"][0]["msg"]
    assert requests.get(f"{destination.url}/v2/_catalog", timeout=10).json()["repositories"] == []


def test_two_tags_of_one_repository_share_a_blob_without_mounting_it(registry, corpus, destination):
    Pusher(registry.url).image("team/pair", "a", corpus.app)
    Pusher(registry.url).image("team/pair", "b", corpus.worker)
    mark = registry.mark()
    done = run_module("image_copy", {"name": [f"{registry.host}/team/pair:a", f"{registry.host}/team/pair:b"], "destination": destination.url})
    assert done["changed"] is True, done
    assert [next(b["status"] for b in image["blobs"] if b["digest"] == corpus.base.digest) for image in done["images"]] == ["copied", "exists"]
    assert blob_gets(registry.requests_since(mark))[corpus.base.digest] == 1
    assert manifest_at(destination, "team/pair", "b").headers["Docker-Content-Digest"] == corpus.worker.digest


def test_check_mode_predicts_the_copy_and_pushes_nothing(registry, corpus, destination):
    args = {"name": [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"], "destination": destination.url}
    mark = registry.mark()
    predicted = run_module("image_copy", args, check=True, diff=True)
    assert predicted["changed"] is True, predicted
    assert blob_gets(registry.requests_since(mark)) == Counter()
    layers = {layer.digest: layer.size for image in (corpus.app, corpus.worker) for layer in image.layers}
    assert predicted["copied_bytes"] == sum(layers.values()) + len(corpus.app.config) + len(corpus.worker.config)
    assert predicted["diff"]["after"][f"{destination.host}/team/app:1"] == corpus.app.digest
    assert predicted["diff"]["before"][f"{destination.host}/team/app:1"] is None
    assert requests.get(f"{destination.url}/v2/_catalog", timeout=10).json()["repositories"] == []

    done = run_module("image_copy", args)
    assert done["copied_bytes"] == predicted["copied_bytes"]
    assert [image["blobs"] for image in done["images"]] == [image["blobs"] for image in predicted["images"]]


def test_a_moved_tag_is_copied_again_and_the_diff_shows_it(registry, corpus, destination):
    Pusher(registry.url).image("team/moving", "1", corpus.app)
    # a bare host:port on loopback is found to speak plain HTTP, as a registry there is
    args = {"name": [f"{registry.host}/team/moving:1"], "destination": destination.host}
    assert run_module("image_copy", args)["changed"] is True
    Pusher(registry.url).image("team/moving", "1", corpus.worker)
    moved = run_module("image_copy", args, diff=True)
    assert moved["changed"] is True
    key = f"{destination.host}/team/moving:1"
    assert moved["diff"] == {"before": {key: corpus.app.digest}, "after": {key: corpus.worker.digest}}
    statuses = {blob["digest"]: blob["status"] for blob in moved["images"][0]["blobs"]}
    assert statuses == {corpus.worker.id: "copied", corpus.base.digest: "exists", corpus.worker.layers[1].digest: "copied"}


def test_a_pull_through_cache_refuses_the_copy_with_a_reason(registry, corpus, destination, tmp_path):
    cache = RegistryServer(str(tmp_path / "cache"), proxy={"remoteurl": destination.url}).start()  # a cache of an empty registry
    try:
        failed = run_module("image_copy", {"name": [f"{registry.host}/team/oci:1"], "destination": cache.url, "retries": 1})
    finally:
        cache.stop()
    assert failed["failed"] is True
    assert failed["reason"] == "denied", failed["msg"]
    assert "does not accept pushes" in failed["msg"] and "team/oci" in failed["msg"]


def test_a_corrupted_blob_is_never_pushed(registry, corpus, destination):
    proxy = FaultProxy(registry.url).start()
    try:
        layer = corpus.oci.layers[0].digest
        proxy.add(Fault(layer, "corrupt", times=10))
        failed = run_module("image_copy", {"name": [f"{proxy.host}/team/oci:1"], "destination": destination.url, "retries": 1})
    finally:
        proxy.stop()
    assert failed["failed"] is True and failed["reason"] == "digest_mismatch", failed
    assert requests.head(f"{destination.url}/v2/team/oci/blobs/{layer}", timeout=10).status_code == 404
    assert manifest_at(destination, "team/oci", "1").status_code == 404, "no manifest names a blob that is not there"
    config = requests.head(f"{destination.url}/v2/team/oci/blobs/{corpus.oci.id}", timeout=10)
    assert config.status_code == 200 and failed["changed"] is True, "the config that did arrive is reported as a change"


def test_an_upload_the_destination_fails_once_is_retried(registry, corpus, destination):
    front = FaultProxy(destination.url).start()
    try:
        front.add(Fault("/blobs/uploads/", "status", status=503, method="POST"))
        front.add(Fault("/blobs/uploads/", "status", status=503, method="PUT"))
        done = run_module("image_copy", {"name": [f"{registry.host}/team/oci:1"], "destination": front.url})
    finally:
        front.stop()
    assert done["changed"] is True, done
    assert [status for method, path, _range, status in front.log if method in ("POST", "PUT") and "/blobs/" in path][:2] == [503, 202]
    assert manifest_at(destination, "team/oci", "1").headers["Docker-Content-Digest"] == corpus.oci.digest


def test_a_destination_with_basic_auth_takes_credentials_from_registry_auth(registry, corpus, tls_registry, ca_file):
    args = {"name": [f"{registry.host}/team/oci:1"], "destination": f"https://{tls_registry.host}", "ca_path": ca_file}
    refused = run_module("image_copy", args)
    assert refused["failed"] is True and refused["reason"] == "unauthorized", refused
    done = run_module("image_copy", dict(args, registry_auth=[{"registry": tls_registry.host, "username": USER, "password": PASSWORD}]))
    assert done["changed"] is True, done
    assert PASSWORD not in done["_stdout"]
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    served = requests.get(f"{tls_registry.url}/v2/team/oci/manifests/1", auth=(USER, PASSWORD), verify=ca_file, timeout=10, headers=accept)
    assert served.headers["Docker-Content-Digest"] == corpus.oci.digest


def test_one_module_defaults_group_serves_the_copy_and_the_pull(registry, corpus, destination, tmp_path):
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "module_defaults": {"group/dockyard.images.images": {"store_path": str(tmp_path / "store"), "timeout": 30}},
        "tasks": [
            {"dockyard.images.image_copy": {"name": [f"{registry.host}/team/oci:1"], "destination": destination.url}},
            {"dockyard.images.image_pull": {"name": [f"{destination.host}/team/oci:1"]}},
        ],
    }
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([play]))
    done, results = run_playbook(str(playbook), args=["-i", "localhost,"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["result"]["changed"] for r in results] == [True, True]
    assert results[1]["result"]["images"][0]["digest"] == corpus.oci.digest
