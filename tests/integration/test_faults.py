"""Bad input and registry faults: each fails with a reason, and nothing half-written is left."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess

import pytest

from support.ansible import run_module
from support.images import Image, Pusher
from support.proxy import Fault, FaultProxy
from support.registry import PASSWORD, USER, free_port


def pull(store, names, **options):
    args = {"name": names if isinstance(names, list) else [names], "store_path": store}
    args.update(options)
    return run_module("image_pull", args)


def stored_blobs(store):
    folder = os.path.join(store, "blobs", "sha256")
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


def test_an_invalid_reference_is_refused_before_anything_happens(store):
    result = pull(store, "Team/App:1")
    assert result["failed"] and result["reason"] == "invalid_reference"
    assert "'Team/App:1'" in result["msg"] and "lowercase" in result["msg"]
    assert not os.path.exists(store)


def test_an_unknown_repository_or_tag_is_not_found(registry, corpus, store):
    for name in (f"{registry.host}/team/nope:1", f"{registry.host}/team/app:nope"):
        result = pull(store, name)
        assert result["failed"] and result["reason"] == "not_found", result
        assert name.split("/", 1)[1] in result["msg"]


def test_a_registry_that_is_down_is_unreachable_after_the_retries(store):
    result = pull(store, f"127.0.0.1:{free_port()}/team/app:1", retries=1)
    assert result["failed"] and result["reason"] == "unreachable"
    assert "after 2 attempts" in result["msg"]


def test_corrupt_bytes_are_refused_and_nothing_is_stored(registry, corpus, proxy, store):
    layer = corpus.app.layers[1].digest
    proxy.add(Fault(path=f"/blobs/{layer}", kind="corrupt", times=100))
    result = pull(store, f"{proxy.host}/team/app:1")
    assert result["failed"] and result["reason"] == "digest_mismatch"
    assert layer in result["msg"]
    assert layer.split(":")[1] not in stored_blobs(store)
    with open(os.path.join(store, "index.json"), encoding="utf-8") as handle:
        assert json.load(handle)["manifests"] == []
    partial = os.path.join(store, ".dockyard", "partial")
    assert all(os.path.getsize(os.path.join(partial, name)) == 0 for name in os.listdir(partial))


def test_a_429_with_retry_after_is_waited_out(registry, corpus, proxy, store):
    proxy.add(Fault(path="/manifests/", kind="status", status=429, headers={"Retry-After": "1"}, times=2))
    result = pull(store, f"{proxy.host}/team/app:1")
    assert result["changed"] is True, result
    assert [entry[3] for entry in proxy.requests_for("/manifests/")][:3] == [429, 429, 200]


def test_a_429_asking_for_too_long_a_wait_fails_as_rate_limited(registry, corpus, proxy, store):
    proxy.add(Fault(path="/manifests/", kind="status", status=429, headers={"Retry-After": "3600"}, times=10))
    result = pull(store, f"{proxy.host}/team/app:1")
    assert result["failed"] and result["reason"] == "rate_limited"
    assert result["retry_after"] == "3600"


def test_an_interrupted_download_resumes_with_range(registry, big_image, proxy, store):
    layer = big_image.layers[0]
    proxy.add(Fault(path=f"/blobs/{layer.digest}", kind="reset", after_bytes=20 * 1024 * 1024))
    result = pull(store, f"{proxy.host}/team/big:1")
    assert result["changed"] is True, result
    gets = proxy.requests_for(f"/blobs/{layer.digest}")
    assert [entry[2] for entry in gets] == [None, f"bytes={20 * 1024 * 1024}-"]
    assert os.path.getsize(os.path.join(store, "blobs", "sha256", layer.digest.split(":")[1])) == layer.size


def test_a_download_interrupted_in_one_run_resumes_in_the_next(registry, big_image, proxy, store):
    layer = big_image.layers[0]
    proxy.add(Fault(path=f"/blobs/{layer.digest}", kind="reset", after_bytes=24 * 1024 * 1024, times=1))
    proxy.add(Fault(path=f"/blobs/{layer.digest}", kind="status", status=503, times=10))
    failed = pull(store, f"{proxy.host}/team/big:1", retries=1)
    assert failed["failed"] and failed["reason"] == "unreachable"
    partial = os.path.join(store, ".dockyard", "partial", "sha256-" + layer.digest.split(":")[1])
    assert os.path.getsize(partial) == 24 * 1024 * 1024
    proxy.faults.clear()
    resumed = pull(store, f"{proxy.host}/team/big:1")
    assert resumed["changed"] is True
    assert proxy.requests_for(f"/blobs/{layer.digest}")[-1][2:] == (f"bytes={24 * 1024 * 1024}-", 206)
    assert not os.path.exists(partial)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs, so that the store's disk really is too small."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=True)
    yield str(mount_point)
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_disk_too_small_fails_before_downloading_anything(registry, big_image, proxy, small_disk):
    store, name = os.path.join(small_disk, "store"), f"{proxy.host}/team/big:1"
    predicted = run_module("image_pull", {"name": [name], "store_path": store}, check=True)
    assert predicted["failed"] and predicted["reason"] == "disk_full"
    result = pull(store, name)
    assert result["failed"] and result["reason"] == "disk_full"
    assert result["bytes_needed"] > result["bytes_free"]
    assert "team/big" in result["msg"]
    assert result["changed"] is False and result["downloaded_bytes"] == 0
    assert result["images"][0]["layers"][0]["status"] == "missing"
    assert proxy.requests_for(big_image.layers[0].digest) == []
    assert stored_blobs(store) <= {big_image.id.split(":")[1]}


def test_on_a_small_disk_the_images_that_fit_are_pulled_and_the_others_fail_before_downloading(registry, corpus, big_image, proxy, small_disk):
    Pusher(registry.url).image("team/bigbase", "1", Image([corpus.base, big_image.layers[0]]))  # shares its base with app
    store = os.path.join(small_disk, "store")
    result = pull(store, [f"{proxy.host}/team/bigbase:1", f"{proxy.host}/team/app:1"])
    assert result["failed"] and result["reason"] == "disk_full" and "team/bigbase" in result["msg"]
    big, app = result["images"]
    assert big["failed"] and big["reason"] == "disk_full"
    assert [layer["status"] for layer in big["layers"]] == ["missing", "missing"]
    assert big["changed"] is False and big["downloaded_bytes"] == 0
    assert not app.get("failed") and app["changed"] is True
    assert [layer["status"] for layer in app["layers"]] == ["pull_complete", "pull_complete"]
    assert result["downloaded_bytes"] == app["downloaded_bytes"] == sum(layer.size for layer in corpus.app.layers)
    assert proxy.requests_for(big_image.layers[0].digest) == []
    held = run_module("image_facts", {"store_path": store})["images"]
    assert [image["reference"] for image in held] == [f"{proxy.host}/team/app:1"]


def test_authorization_is_not_forwarded_when_a_blob_redirects_to_another_host(registry, token_registry, corpus, store):
    front, cdn = FaultProxy(token_registry.url).start(), FaultProxy(registry.url, bind="127.0.0.2").start()
    try:
        front.add(Fault(path="/blobs/", kind="redirect", headers={"Location": cdn.url}, times=100))
        auth = [{"registry": front.host, "username": USER, "password": PASSWORD}]
        result = pull(store, f"{front.host}/team/app:1", registry_auth=auth)
        assert result["changed"] is True, result
        assert [path for path, header in cdn.authorization if "/blobs/" in path], "the blobs came from the other host"
        assert all(header is None for path, header in cdn.authorization)
        assert any(header and header.startswith("Bearer ") for path, header in front.authorization)
    finally:
        front.stop()
        cdn.stop()


def test_rate_limit_figures_are_reported(registry, corpus, proxy, store):
    figures = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600", "docker-ratelimit-source": "192.0.2.1"}
    proxy.add(Fault(path="/manifests/", kind="headers", headers=figures, times=100))
    result = pull(store, f"{proxy.host}/team/app:1")
    assert result["rate_limit"] == {"limit": "100;w=21600", "remaining": "76;w=21600", "source": "192.0.2.1"}


def test_a_store_locked_by_another_task_fails_as_store_locked(registry, corpus, store):
    os.makedirs(os.path.join(store, ".dockyard"))
    with open(os.path.join(store, ".dockyard", "gc.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = pull(store, f"{registry.host}/team/app:1", timeout=1)
    assert result["failed"] and result["reason"] == "store_locked", result
    assert stored_blobs(store) == set()


def fill(folder: str) -> None:
    """Write a file into `folder` until its disk has no byte left."""
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 512)
        except OSError:
            pass


def test_a_full_disk_while_the_config_arrives_fails_disk_full_and_leaves_nothing_half_written(registry, corpus, small_disk):
    """A single-manifest image names its platform only in its config, which is fetched before room is counted;
    a small config waits in a buffer, so the disk's refusal comes when it is flushed."""
    store = os.path.join(small_disk, "store")
    assert not pull(store, f"{registry.host}/team/oci:1")["failed"]  # the layout exists; then the disk fills up
    fill(small_disk)
    result = pull(store, f"{registry.host}/team/app:1")
    assert result["failed"] and result["reason"] == "disk_full", result
    assert "team/app" in result["msg"] and "Traceback" not in result["_stdout"]
    with open(os.path.join(store, "index.json"), encoding="utf-8") as handle:
        held = json.load(handle)["manifests"]
    assert [entry["annotations"]["org.opencontainers.image.ref.name"] for entry in held] == [f"{registry.host}/team/oci:1"]
