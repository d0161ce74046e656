"""image_deliver over a real Ansible connection (local): the controller's OCI store sends a host only
the blobs its store lacks, a second run sends nothing, a delivery cut short resumes, and a blob that
arrived wrong is refused on the host before the store takes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from support.ansible import ansible_command, ansible_env, kill_tree, run_module


def pull_into(path, registry, names) -> dict:
    result = run_module("image_pull", {"name": [f"{registry.host}/{name}" for name in names], "store": "oci", "store_path": str(path)})
    assert not result.get("failed"), result
    return result


def deliver(controller, host, registry, names, check=False, extra=None) -> dict:
    """Deliver to `host`: an OCI store's path, or a store's options."""
    store = host if isinstance(host, dict) else {"store": "oci", "store_path": str(host)}
    args = {"name": [f"{registry.host}/{name}" for name in names], "source_path": str(controller), **store}
    return run_module("image_deliver", dict(args, **(extra or {})), check=check)


def unique_bytes(*images) -> int:
    """What a host with nothing needs for these images: each manifest, config and layer once."""
    return sum(blob_sizes(*images).values())


@pytest.fixture
def controller(tmp_path, registry, corpus):
    path = tmp_path / "controller"
    pull_into(path, registry, ["team/app:1", "team/worker:1", "team/oci:1"])
    return path


def test_a_host_gets_each_blob_once_and_a_second_run_sends_nothing(tmp_path, controller, registry, corpus):
    host = tmp_path / "host"
    plan = deliver(controller, host, registry, ["team/app:1", "team/worker:1", "team/oci:1"], check=True)
    assert plan["changed"] and plan["sent_bytes"] == unique_bytes(corpus.app, corpus.worker, corpus.oci), plan
    assert not host.exists(), "check mode sends and loads nothing"

    first = deliver(controller, host, registry, ["team/app:1", "team/worker:1", "team/oci:1"])
    assert not first.get("failed"), first
    assert first["changed"] and first["sent_bytes"] == unique_bytes(corpus.app, corpus.worker, corpus.oci)
    assert {image["reference"]: image["id"] for image in first["images"]} == {
        f"{registry.host}/team/app:1": corpus.app.id,
        f"{registry.host}/team/worker:1": corpus.worker.id,
        f"{registry.host}/team/oci:1": corpus.oci.id,
    }
    facts = run_module("image_facts", {"store": "oci", "store_path": str(host)})
    held = {image["reference"]: image["digest"] for image in facts["images"]}
    assert held[f"{registry.host}/team/app:1"] == corpus.app.digest, "the host keeps the registry's digest"

    assert not os.path.exists(first["staging"]), "nothing is left on the host but the images"

    second = deliver(controller, host, registry, ["team/app:1", "team/worker:1", "team/oci:1"])
    assert not second["changed"] and second["sent_bytes"] == 0 and second["sent_blobs"] == 0


def test_a_host_that_holds_the_base_gets_only_the_rest(tmp_path, controller, registry, corpus):
    host = tmp_path / "host"
    pull_into(host, registry, ["team/app:1"])
    done = deliver(controller, host, registry, ["team/app:1", "team/worker:1"])
    assert not done.get("failed"), done
    worker_only = len(corpus.worker.manifest) + len(corpus.worker.config) + corpus.worker.layers[1].size
    assert done["sent_bytes"] == worker_only, "the base layer and everything of app stay home"
    assert done["held_bytes"] == sum(layer.size for layer in corpus.app.layers), "each layer the host held counted once"


def test_a_delivery_cut_short_resumes_without_sending_what_arrived(tmp_path, controller, registry, corpus):
    host = tmp_path / "host"
    staging = deliver(controller, host, registry, ["team/app:1"], check=True)["staging"]
    # what a lost connection leaves: the base arrived whole, the app layer half
    base, app = (layer.digest.split(":")[1] for layer in corpus.app.layers)
    os.makedirs(os.path.join(staging, "blobs", "sha256"))
    shutil.copy(controller / "blobs" / "sha256" / base, os.path.join(staging, "blobs", "sha256", base))
    with open(controller / "blobs" / "sha256" / app, "rb") as whole, open(os.path.join(staging, "blobs", "sha256", app), "wb") as half:
        half.write(whole.read()[: corpus.app.layers[1].size // 2])
    done = deliver(controller, host, registry, ["team/app:1"])
    assert not done.get("failed"), done
    assert done["resumed_bytes"] == corpus.app.layers[0].size, "the base is not sent again"
    assert done["sent_bytes"] == unique_bytes(corpus.app) - corpus.app.layers[0].size, "the half layer is sent again whole"
    assert not os.path.exists(staging), "the staging directory is gone once the images are in"
    assert [image["id"] for image in run_module("image_facts", {"store": "oci", "store_path": str(host)})["images"]] == [corpus.app.id]


def test_a_corrupt_blob_is_refused_on_the_host_and_the_staging_directory_removed(tmp_path, controller, registry, corpus):
    host = tmp_path / "host"
    staging = deliver(controller, host, registry, ["team/app:1"], check=True)["staging"]
    base = corpus.app.layers[0].digest.split(":")[1]
    os.makedirs(os.path.join(staging, "blobs", "sha256"))
    with open(os.path.join(staging, "blobs", "sha256", base), "wb") as wrong:
        wrong.write(b"x" * corpus.app.layers[0].size)  # the right size, other bytes: staged, then refused
    done = deliver(controller, host, registry, ["team/app:1"])
    assert done.get("failed") and done["reason"] == "digest_mismatch"
    assert not os.path.exists(staging)
    assert run_module("image_facts", {"store": "oci", "store_path": str(host)})["images"] == []
    again = deliver(controller, host, registry, ["team/app:1"])
    assert not again.get("failed") and again["resumed_bytes"] == 0, "the refused blob was not kept"
    assert corpus.app.layers[0].size <= again["sent_bytes"] <= unique_bytes(corpus.app), "the base is sent again"
    assert [image["id"] for image in run_module("image_facts", {"store": "oci", "store_path": str(host)})["images"]] == [corpus.app.id]


@pytest.fixture(params=["docker", "podman", "containerd"])
def host_store(request) -> dict:
    """Each real store but the OCI one, emptied, as a host's store options."""
    if request.param == "containerd":
        service = request.getfixturevalue("containerd_service")
        service.remove_all()
        return {"store": "containerd", "containerd_address": service.socket_path}
    engine = request.getfixturevalue(f"{request.param}_engine")
    engine.remove_all_images()
    return {"store": request.param, "docker_host": engine.docker_host}


def test_an_engine_or_containerd_host_gets_only_what_its_load_reads(controller, registry, corpus, host_store):
    """Docker, Podman and containerd are not sent a layer they hold (Docker knows it by its ChainID, Podman by its
    DiffID, containerd by its digest), and end with the image whole."""
    run_module("image_pull", {"name": [f"{registry.host}/team/app:1"], **host_store})
    names = ["team/app:1", "team/worker:1"]
    plan = deliver(controller, host_store, registry, names, check=True)
    done = deliver(controller, host_store, registry, names)
    assert not done.get("failed"), done
    worker = corpus.worker
    expected = len(worker.manifest) + len(worker.config) + worker.layers[1].size
    assert plan["sent_bytes"] == done["sent_bytes"] == expected, (plan, done)
    facts = run_module("image_facts", host_store)
    held = {image["reference"]: image["id"] for image in facts["images"]}
    assert held[f"{registry.host}/team/worker:1"] == worker.id and held[f"{registry.host}/team/app:1"] == corpus.app.id
    again = deliver(controller, host_store, registry, names)
    assert not again.get("failed") and not again["changed"] and again["sent_bytes"] == 0, again


def test_a_transfer_killed_halfway_resumes_without_sending_again_what_arrived(tmp_path, controller, registry, corpus):
    """The controller is killed while the connection (slowed down) carries the blobs: the next delivery sends
    only what had not arrived whole, and the host ends with every image."""
    host = tmp_path / "host"
    names = ["team/app:1", "team/worker:1", "team/oci:1"]
    args = {"name": [f"{registry.host}/{name}" for name in names], "source_path": str(controller), "store": "oci", "store_path": str(host)}
    staging = deliver(controller, host, registry, names, check=True)["staging"]
    sizes = blob_sizes(corpus.app, corpus.worker, corpus.oci)
    process = subprocess.Popen(
        ansible_command("image_deliver", args, connection="throttled"),
        env=ansible_env({"DOCKYARD_TEST_PIECE": "64", "DOCKYARD_TEST_PAUSE": "0.02"}),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not arrived(staging, sizes) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        kill_tree(process.pid)
        process.wait()
    whole = arrived(staging, sizes)
    assert whole and sum(whole.values()) < sum(sizes.values()), "killed after some blobs arrived, before all did"
    assert not host.exists() or run_module("image_facts", {"store": "oci", "store_path": str(host)})["images"] == [], "nothing loaded yet"

    done = deliver(controller, host, registry, names)
    assert not done.get("failed"), done
    assert done["resumed_bytes"] == sum(whole.values()), "what arrived whole is not sent again"
    assert done["sent_bytes"] == sum(sizes.values()) - sum(whole.values())
    assert not os.path.exists(staging)
    held = {image["reference"]: image["id"] for image in run_module("image_facts", {"store": "oci", "store_path": str(host)})["images"]}
    assert held == {f"{registry.host}/{name}": image.id for name, image in zip(names, (corpus.app, corpus.worker, corpus.oci))}


def blob_sizes(*images) -> dict:
    """digest: size of every blob a host with nothing is sent for these images."""
    sizes = {}
    for image in images:
        sizes[image.digest] = len(image.manifest)
        sizes[image.id] = len(image.config)
        sizes.update({layer.digest: layer.size for layer in image.layers})
    return sizes


def arrived(staging: str, sizes: dict) -> dict:
    """digest: size of the blobs staged whole."""
    found = {}
    for digest, size in sizes.items():
        path = os.path.join(staging, "blobs", *digest.split(":"))
        if os.path.isfile(path) and os.path.getsize(path) == size:
            found[digest] = size
    return found
