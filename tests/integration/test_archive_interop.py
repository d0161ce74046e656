"""Image archives cross between us and the real tools. What image_export writes from the OCI store,
`docker load`, `podman load`, skopeo and `ctr images import` read, with our ids and names; what
`docker save`, `podman save` and skopeo write, image_load reads into the OCI store with the ids those
archives carry, and a second load changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest

from support.ansible import run_module
from support.images import OCI_MANIFEST, Image, Pusher, make_layer, random_layer

REF_NAME = "org.opencontainers.image.ref.name"


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed: {done.stderr}"
    return done.stdout


def docker(engine, *args: str) -> str:
    return run("docker", "-H", engine.docker_host, *args)


def podman(engine, *args: str) -> str:
    return run("podman", "--remote", "--url", engine.docker_host, *args)


def skopeo(*args: str) -> str:
    return run("skopeo", *args)


def members(path: str) -> list:
    with tarfile.open(path) as tar:
        return [member.name for member in tar.getmembers() if member.isfile()]


def store_ids(store: str) -> dict:
    """name: image id of every image the OCI store's index.json tags, read as any OCI tool reads a layout."""
    with open(os.path.join(store, "index.json"), "rb") as handle:
        entries = json.load(handle)["manifests"]
    found = {}
    for entry in entries:
        algorithm, encoded = entry["digest"].split(":")
        with open(os.path.join(store, "blobs", algorithm, encoded), "rb") as handle:
            found[entry["annotations"][REF_NAME]] = json.load(handle)["config"]["digest"]
    return found


def load(path: str, store: str, check: bool = False, **options) -> dict:
    return run_module("image_load", {"path": path, "store": "oci", "store_path": store, **options}, check=check)


# -- our archives, read by the tools ---------------------------------------------------------------------


class Exported:
    """Three images sharing a base (two Docker, one OCI), pulled into an OCI store and exported in both formats."""

    def __init__(self, registry, corpus, work):
        self.tool = Image([corpus.base, make_layer({"app/tool.py": b"print('tool')\n" * 100})], labels={"name": "tool"}, media_type=OCI_MANIFEST)
        Pusher(registry.url).image("team/tool", "2", self.tool)
        self.images = {f"{registry.host}/team/app:1": corpus.app, f"{registry.host}/team/worker:1": corpus.worker, f"{registry.host}/team/tool:2": self.tool}
        self.base = corpus.base
        self.store = str(work / "store")
        pulled = run_module("image_pull", {"name": list(self.images), "store": "oci", "store_path": self.store})
        assert not pulled["failed"], pulled
        self.paths = {archive_format: str(work / f"{archive_format}.tar") for archive_format in ("docker-archive", "oci-archive")}
        self.results = {archive_format: self.export(archive_format) for archive_format in self.paths}

    def export(self, archive_format: str, check: bool = False) -> dict:
        args = {"name": list(self.images), "path": self.paths[archive_format], "format": archive_format, "store": "oci", "store_path": self.store}
        result = run_module("image_export", args, check=check)
        assert not result["failed"], result
        return result


@pytest.fixture(scope="module")
def exported(registry, corpus, tmp_path_factory):
    return Exported(registry, corpus, tmp_path_factory.mktemp("exported"))


def test_our_archive_carries_the_shared_base_once_and_is_not_rewritten(exported):
    archive = exported.paths["docker-archive"]
    base = f"blobs/sha256/{exported.base.digest.split(':')[1]}"
    assert members(archive).count(base) == 1, "the base the three images share is in the archive once"
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert sorted(tag for entry in manifest for tag in entry["RepoTags"]) == sorted(exported.images)
    assert all(entry["Layers"][0] == base for entry in manifest)
    reported = {name: image["id"] for image in exported.results["docker-archive"]["images"] for name in image["names"]}
    assert reported == {name: image.id for name, image in exported.images.items()}

    stamp = os.stat(archive).st_mtime_ns
    predicted = exported.export("docker-archive", check=True)
    again = exported.export("docker-archive")
    assert predicted["changed"] is again["changed"] is False, "the archive already holds these images"
    assert os.stat(archive).st_mtime_ns == stamp


def test_our_docker_archive_loads_into_the_engines_with_our_ids_and_names(engine, exported):
    cli = docker if engine.kind == "docker" else podman
    cli(engine, "load", "--input", exported.paths["docker-archive"])
    for name, image in exported.images.items():
        found = engine.inspect(name)
        assert found is not None, f"{engine.kind} load gave no image named {name}"
        assert found["Id"] == image.id and name in found["RepoTags"]


def test_our_oci_archive_is_read_by_skopeo(exported, tmp_path):
    archive = exported.paths["oci-archive"]
    inspected = json.loads(skopeo("inspect", f"oci-archive:{archive}:2"))
    assert inspected["Layers"] == [layer.digest for layer in exported.tool.layers]

    skopeo("copy", f"oci-archive:{archive}:2", f"dir:{tmp_path / 'copy'}")
    copied = json.loads((tmp_path / "copy" / "manifest.json").read_bytes())
    assert copied["config"]["digest"] == exported.tool.id
    for layer in exported.tool.layers:
        assert (tmp_path / "copy" / layer.digest.split(":")[1]).read_bytes() == layer.blob


def test_our_oci_archive_is_imported_by_ctr_under_our_names(exported, containerd_service):
    namespace = "archive-interop"
    try:
        containerd_service.ok("images", "import", exported.paths["oci-archive"], namespace=namespace)
        reported = {name: image["digest"] for image in exported.results["oci-archive"]["images"] for name in image["names"]}
        assert containerd_service.image_names(namespace) == reported and len(reported) == 3
    finally:
        containerd_service.remove_all(namespace)


# -- the tools' archives, read by image_load -------------------------------------------------------------


def archived_id(path: str) -> str:
    """The id of the one image of an oci-archive, as skopeo reads it. Writing an oci-archive of a Docker
    image, podman and skopeo rewrite its config in the OCI form, so its id is not the one the engine reports."""
    return json.loads(skopeo("inspect", "--raw", f"oci-archive:{path}"))["config"]["digest"]


class Saved:
    """The three images as the engines pulled them, and the archives docker save, podman save and skopeo
    write of them: writer → (path, {name: image id} the archive carries, image_load options)."""

    def __init__(self, docker_engine, podman_engine, names: list, work):
        ids = {}
        for kind, engine, cli in (("docker", docker_engine, docker), ("podman", podman_engine, podman)):
            engine.remove_all_images()
            for name in names:
                cli(engine, "pull", name)
            ids[kind] = {name: engine.inspect(name)["Id"] for name in names}
        app = names[0]
        self.archives = {}

        path = str(work / "docker-save.tar")
        docker(docker_engine, "save", "--output", path, *names)
        self.archives["docker save"] = (path, ids["docker"], {})

        path = str(work / "podman-save.tar")
        podman(podman_engine, "save", "--format", "docker-archive", "--multi-image-archive", "--output", path, *names)
        self.archives["podman save --format docker-archive"] = (path, ids["podman"], {})
        path = str(work / "podman-save-oci.tar")
        podman(podman_engine, "save", "--format", "oci-archive", "--output", path, app)
        self.archives["podman save --format oci-archive"] = (path, {app: archived_id(path)}, {})

        path = str(work / "skopeo.tar")
        skopeo("copy", "--src-tls-verify=false", f"docker://{app}", f"docker-archive:{path}:{app}")
        self.archives["skopeo docker-archive"] = (path, {app: ids["docker"][app]}, {})
        path = str(work / "skopeo-oci.tar")
        skopeo("copy", "--src-tls-verify=false", f"docker://{app}", f"oci-archive:{path}:1")
        self.archives["skopeo oci-archive"] = (path, {"example.test/team/app:1": archived_id(path)}, {"repository": "example.test/team/app"})


@pytest.fixture(scope="module")
def saved(docker_engine, podman_engine, exported, tmp_path_factory):
    return Saved(docker_engine, podman_engine, list(exported.images), tmp_path_factory.mktemp("saved"))


@pytest.mark.parametrize(
    "writer", ["docker save", "podman save --format docker-archive", "podman save --format oci-archive", "skopeo docker-archive", "skopeo oci-archive"]
)
def test_archives_the_tools_write_load_into_our_store_with_the_ids_they_carry(saved, writer, tmp_path):
    path, expected, options = saved.archives[writer]
    store = str(tmp_path / "store")
    loaded = load(path, store, **options)
    assert not loaded["failed"] and loaded["changed"] is True, loaded
    assert {image["reference"]: image["id"] for image in loaded["images"]} == expected
    assert store_ids(store) == expected

    again = load(path, store, **options)
    assert not again["failed"] and again["changed"] is False, again
    assert all(layer["status"] == "already_exists" for image in again["images"] for layer in image["layers"])


def test_docker_saves_older_shape_loads_in_check_mode_as_for_real_and_check_mode_writes_nothing(saved, tmp_path):
    path, expected, _options = saved.archives["docker save"]
    assert any(name.endswith("/layer.tar") for name in members(path)) and "index.json" not in members(path), "Docker 20.10's shape"
    store = str(tmp_path / "store")
    predicted = load(path, store, check=True)
    assert not os.path.exists(store), "check mode writes nothing"
    loaded = load(path, store)
    assert predicted["changed"] is loaded["changed"] is True
    summary = [(image["reference"], image["id"], image["loaded_bytes"]) for image in loaded["images"]]
    assert [(image["reference"], image["id"], image["loaded_bytes"]) for image in predicted["images"]] == summary
    assert predicted["loaded_bytes"] == loaded["loaded_bytes"] > 0 and store_ids(store) == expected


def test_a_truncated_archive_fails_with_invalid_archive_and_writes_nothing(saved, tmp_path):
    path, _expected, _options = saved.archives["docker save"]
    truncated = tmp_path / "truncated.tar"
    with open(path, "rb") as handle:
        truncated.write_bytes(handle.read(os.path.getsize(path) // 2))
    store = str(tmp_path / "store")
    failed = load(str(truncated), store)
    assert failed["failed"] and failed["reason"] == "invalid_archive", failed
    assert not os.path.exists(store)


def test_a_gzipped_docker_save_of_megabyte_layers_loads_every_time(docker_engine, registry, tmp_path):
    name = f"{registry.host}/team/layers:1"
    image = Image([random_layer(2 * 1024 * 1024, f"archive-interop-{n}") for n in range(4)])
    Pusher(registry.url).image("team/layers", "1", image)
    docker(docker_engine, "pull", name)
    path = tmp_path / "layers.tar.gz"
    with open(path, "wb") as out:
        save = subprocess.Popen(["docker", "-H", docker_engine.docker_host, "save", name], stdout=subprocess.PIPE)
        subprocess.run(["gzip"], stdin=save.stdout, stdout=out, check=True)
        save.stdout.close()
        assert save.wait() == 0
    for attempt in range(2):
        store = str(tmp_path / f"store-{attempt}")
        loaded = load(str(path), store)
        assert not loaded["failed"], loaded.get("msg")
        assert store_ids(store) == {name: docker_engine.inspect(name)["Id"]} == {name: image.id}
