"""Image archives between OCI stores, against an in-process registry serving real images.

What a user of image_export and image_load sees: both formats carry a layer several images share once,
an archive that already holds the images is not written again, a store gets only the blobs it lacks,
`docker save`'s older shape (plain `<id>/layer.tar` files, no manifests) loads with the engine's image
ids, and a corrupt, truncated or hostile archive fails with a reason and tags nothing.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.dockyard.images.plugins.module_utils._archive import (
    DOCKER_ARCHIVE,
    LAYOUT,
    OCI_ARCHIVE,
    ArchivePlan,
    ArchiveReader,
    archive_chunks,
    export_archive,
    load_archive,
)
from ansible_collections.dockyard.images.plugins.module_utils._blob import sha256_digest
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import Descriptor
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import ALREADY_EXISTS, PULL_COMPLETE, PullRequest
from ansible_collections.dockyard.images.plugins.module_utils._stores._oci import OciStore
from support.images import OCI_MANIFEST, Image, Index, make_layer, random_layer
from unit.support_inprocess import InProcessRegistry

AMD64 = parse_platform("linux/amd64")
BASE = random_layer(40 * 1024, "archive-base")
APP = Image([BASE, random_layer(12 * 1024, "archive-app")], labels={"name": "app"})
WORKER = Image([BASE, random_layer(20 * 1024, "archive-worker")], labels={"name": "worker"})
ARM = Image([make_layer({"arch": b"arm64\n"})], architecture="arm64", media_type=OCI_MANIFEST)
MULTI = Index([Image([make_layer({"arch": b"amd64\n"})], media_type=OCI_MANIFEST), ARM])  # OCI-typed, as most official images


@pytest.fixture(scope="module")
def registry():
    server = InProcessRegistry().start()
    server.push_image("team/app", "1", APP)
    server.push_image("team/worker", "1", WORKER)
    server.push_index("team/multi", "1", MULTI)
    yield server
    server.stop()


@pytest.fixture
def filled(tmp_path, registry, client):
    store = OciStore(str(tmp_path / "source"), lock_timeout=5)
    names = [f"{registry.netloc}/team/{repo}:1" for repo in ("app", "worker", "multi")]
    results = store.puller(client(), 3, False).pull([PullRequest(parse_reference(name), AMD64) for name in names])
    assert all(result.error is None for result in results)
    return store, names


def members(path) -> list:
    with tarfile.open(path) as tar:
        return [member.name for member in tar.getmembers() if member.isfile()]


def held(store: OciStore) -> dict:
    return {record.reference.familiar: record.id for record in store.images()}


@pytest.mark.parametrize("archive_format", [OCI_ARCHIVE, DOCKER_ARCHIVE])
def test_an_archive_carries_shared_layers_once_and_loads_into_another_store_with_the_same_ids(tmp_path, filled, archive_format):
    source, names = filled
    path = str(tmp_path / "images.tar")
    written = export_archive(source, names, path, archive_format, check_mode=False)
    assert written["changed"] and sorted(written["diff"]["after"]["images"]) == sorted(parse_reference(name).familiar for name in names)
    blobs = [name for name in members(path) if name.startswith("blobs/")]
    assert len(blobs) == len(set(blobs)) and f"blobs/sha256/{BASE.digest.split(':')[1]}" in blobs, "the shared base is in the archive once"
    assert ("manifest.json" in members(path)) == (archive_format == DOCKER_ARCHIVE)

    target = OciStore(str(tmp_path / "target"), lock_timeout=5)
    loaded_format, results = load_archive(target, path, AMD64, False, None, 3, check_mode=False)
    assert loaded_format == OCI_ARCHIVE, "ours always carries the OCI layout, which is what is read when it is there"
    assert [result.error for result in results if result.error is not None] == [] and all(result.changed for result in results)
    assert held(target) == held(source)
    digests = {record.reference.familiar: record.digest for record in target.images()}
    assert digests == {record.reference.familiar: record.digest for record in source.images()}, "each keeps the registry's digest"
    assert digests[parse_reference(names[2]).familiar] == MULTI.digest, "a multi-platform image keeps its index's"
    app = next(result for result in results if result.request.reference.path == "team/app")
    worker = next(result for result in results if result.request.reference.path == "team/worker")
    statuses = [layer.status for layer in app.layers] + [layer.status for layer in worker.layers]
    assert statuses.count(PULL_COMPLETE) == 3 and statuses.count(ALREADY_EXISTS) == 1, "the base is copied once"

    _format, again = load_archive(target, path, AMD64, False, None, 3, check_mode=False)
    assert not any(result.changed for result in again), "a second load changes nothing"
    assert all(layer.status == ALREADY_EXISTS for result in again for layer in result.layers)


def test_an_archive_that_already_holds_the_images_is_not_written_again(tmp_path, filled):
    source, names = filled
    path = str(tmp_path / "images.tar")
    export_archive(source, names, path, DOCKER_ARCHIVE, check_mode=False)
    stamp = os.stat(path).st_mtime_ns
    again = export_archive(source, list(reversed(names)), path, DOCKER_ARCHIVE, check_mode=False)
    assert not again["changed"] and os.stat(path).st_mtime_ns == stamp
    fewer = export_archive(source, names[:1], path, DOCKER_ARCHIVE, check_mode=True)
    assert fewer["changed"] and os.stat(path).st_mtime_ns == stamp, "check mode writes nothing"
    assert fewer["diff"]["before"]["images"] != fewer["diff"]["after"]["images"]
    assert [name for name in os.listdir(tmp_path) if name.startswith(".images.tar")] == []


def test_exporting_a_name_the_store_lacks_fails_before_anything_is_written(tmp_path, filled):
    source, names = filled
    path = tmp_path / "images.tar"
    with pytest.raises(DockyardError) as failure:
        export_archive(source, [*names, "team/none:1"], str(path), OCI_ARCHIVE, check_mode=False)
    assert failure.value.reason == "not_found" and "team/none:1" in failure.value.message
    assert not path.exists()


def legacy_archive(path, images: dict, compress: bool = False) -> None:
    """A tar shaped as `docker save` before Docker 25 writes it: `<id>.json`, `<layer>/layer.tar` (plain
    tars; gzip when `compress`), manifest.json and repositories; a layer two images share is a symlink."""
    written = {}
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        manifest = []
        for tag, image in images.items():
            paths = []
            for layer in image.layers:
                folder = layer.diff_id.split(":")[1]
                if folder in written:
                    link = tarfile.TarInfo(f"{folder}-again/layer.tar")
                    link.type, link.linkname = tarfile.SYMTYPE, f"../{folder}/layer.tar"
                    tar.addfile(link)
                    paths.append(link.name)
                    continue
                add(f"{folder}/layer.tar", layer.blob if compress else layer.tar)
                written[folder] = True
                paths.append(f"{folder}/layer.tar")
            add(f"{image.id.split(':')[1]}.json", image.config)
            manifest.append({"Config": f"{image.id.split(':')[1]}.json", "RepoTags": [tag], "Layers": paths})
        add("manifest.json", json.dumps(manifest).encode())
        add("repositories", b"{}")


@pytest.mark.parametrize("compress", [False, True], ids=["plain layers", "gzip layers"])
def test_docker_saves_older_shape_loads_with_the_engines_image_ids(tmp_path, compress):
    path = tmp_path / "saved.tar"
    legacy_archive(path, {"team/app:1": APP, "localhost:5000/team/worker:2": WORKER}, compress)
    store = OciStore(str(tmp_path / "store"), lock_timeout=5)
    archive_format, results = load_archive(store, str(path), AMD64, False, None, 3, check_mode=False)
    assert archive_format == DOCKER_ARCHIVE and all(result.error is None for result in results)
    assert held(store) == {"team/app:1": APP.id, "localhost:5000/team/worker:2": WORKER.id}
    app = next(result for result in results if result.request.reference.path == "team/app")
    expected = [(layer.blob if compress else layer.tar) for layer in APP.layers]
    assert [layer.size for layer in app.layers] == [len(data) for data in expected]
    if not compress:
        assert [layer.digest for layer in app.layers] == [layer.diff_id for layer in APP.layers], "a plain layer is its DiffID"


def test_a_layer_whose_bytes_are_not_its_diff_id_fails_its_image_and_tags_nothing(tmp_path):
    path = tmp_path / "saved.tar"
    legacy_archive(path, {"team/app:1": APP, "team/worker:1": WORKER})
    data = bytearray(path.read_bytes())
    marker = APP.layers[1].tar[600:640]
    at = data.index(marker)
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    store = OciStore(str(tmp_path / "store"), lock_timeout=5)
    _format, results = load_archive(store, str(path), AMD64, False, None, 3, check_mode=False)
    app, worker = sorted(results, key=lambda result: result.request.reference.path)
    assert app.error is not None and app.error.reason == "digest_mismatch"
    assert worker.error is None
    assert held(store) == {"team/worker:1": WORKER.id}


def test_a_truncated_archive_fails_with_a_reason_and_leaves_the_store_as_it_was(tmp_path, filled):
    source, names = filled
    path = tmp_path / "images.tar"
    export_archive(source, names, str(path), DOCKER_ARCHIVE, check_mode=False)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    store = OciStore(str(tmp_path / "store"), lock_timeout=5)
    with pytest.raises(DockyardError) as failure:
        load_archive(store, str(path), AMD64, False, None, 3, check_mode=False)
    assert failure.value.reason == "invalid_archive"
    assert not os.path.exists(store.root) or held(store) == {}


def test_an_image_named_by_a_bare_tag_needs_a_repository(tmp_path, filled):
    source, names = filled
    path = tmp_path / "images.tar"
    export_archive(source, names[:1], str(path), OCI_ARCHIVE, check_mode=False)
    bare = tmp_path / "bare.tar"

    def bare_tag(name, data):
        if name != "index.json":
            return data
        index = json.loads(data)
        index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
        return json.dumps(index).encode()

    rewritten(path, bare, bare_tag)
    store = OciStore(str(tmp_path / "store"), lock_timeout=5)
    with pytest.raises(DockyardError) as failure:
        load_archive(store, str(bare), AMD64, False, None, 3, check_mode=False)
    assert failure.value.reason == "invalid_argument" and "repository" in failure.value.message
    load_archive(store, str(bare), AMD64, False, "registry.example/team/app", 3, check_mode=False)
    assert held(store) == {"registry.example/team/app:v1": APP.id}


def hostile(tmp_path, entries: dict, links: Optional[dict] = None) -> str:
    path = tmp_path / "hostile.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return str(path)


@pytest.mark.parametrize(
    ("entries", "links"),
    [
        ({"manifest.json": b"{}"}, {}),
        ({"manifest.json": b'[{"Config": "a.json", "Layers": ["x/layer.tar"]}]', "a.json": APP.config}, {}),
        ({"manifest.json": b'[{"Config": "loop.json", "Layers": []}]'}, {"loop.json": "loop2.json", "loop2.json": "loop.json"}),
        ({"manifest.json": b'[{"Config": "escape.json", "Layers": []}]'}, {"escape.json": "../../../etc/passwd"}),
        ({"oci-layout": b'{"imageLayoutVersion": "2.0.0"}', "index.json": b'{"manifests": []}'}, {}),
        ({"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": b'{"manifests": [{"digest": "sha256:../../x", "size": 1}]}'}, {}),
        ({"just-a-file": b"hello"}, {}),
    ],
    ids=["not a list", "layer count", "link loop", "link out", "layout version", "bad digest", "no catalog"],
)
def test_a_hostile_archive_fails_with_a_reason(tmp_path, entries, links):
    path = hostile(tmp_path, entries, links)
    with pytest.raises(DockyardError) as failure:
        ArchiveReader(path, AMD64)
    assert failure.value.reason in ("invalid_archive", "unsupported_media_type")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_any_manifest_json_is_read_or_refused_with_a_reason(tmp_path_factory, body):
    path = hostile(tmp_path_factory.mktemp("fuzz"), {"manifest.json": body, "a.json": APP.config})
    try:
        ArchiveReader(path, AMD64).close()
    except DockyardError as exc:
        assert exc.reason in ("invalid_archive", "unsupported_media_type", "digest_mismatch", "invalid_reference")


def rewritten(source, target, change) -> None:
    """A copy of the tar `source` with `change(name, data)` applied to each file (None drops it)."""
    with tarfile.open(source) as tar, tarfile.open(target, "w") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isfile() else None
            if data is not None:
                data = change(member.name, data)
                if data is None:
                    continue
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)


def test_a_name_pinned_to_another_digest_than_its_images_is_refused(tmp_path, filled):
    source, names = filled
    path = tmp_path / "images.tar"
    export_archive(source, names[:1], str(path), OCI_ARCHIVE, check_mode=False)
    forged = tmp_path / "forged.tar"

    def pin(name, data):
        if name != "index.json":
            return data
        index = json.loads(data)
        index["manifests"][0]["annotations"]["io.containerd.image.name"] = "docker.io/library/alpine@sha256:" + "a" * 64
        return json.dumps(index).encode()

    rewritten(path, forged, pin)
    store = OciStore(str(tmp_path / "store"), lock_timeout=5)
    with pytest.raises(DockyardError) as failure:
        load_archive(store, str(forged), AMD64, False, None, 3, check_mode=False)
    assert failure.value.reason == "digest_mismatch" and "alpine@sha256:" in failure.value.message
    assert not os.path.exists(store.root), "a pod asking for that digest must never find this image"


def test_an_archive_that_lacks_a_layer_fails_before_the_store_is_touched(tmp_path, filled):
    source, names = filled
    path = tmp_path / "images.tar"
    export_archive(source, names[:1], str(path), DOCKER_ARCHIVE, check_mode=False)
    lacking = tmp_path / "lacking.tar"
    rewritten(path, lacking, lambda name, data: None if name.endswith(APP.layers[1].digest.split(":")[1]) else data)
    store = OciStore(str(tmp_path / "store"), lock_timeout=5)
    with pytest.raises(DockyardError) as failure:
        load_archive(store, str(lacking), AMD64, False, None, 3, check_mode=True)
    assert failure.value.reason == "invalid_archive" and APP.layers[1].digest.split(":")[1] in failure.value.message
    assert not os.path.exists(store.root)


def test_what_is_not_an_archive_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as tar:
        info = tarfile.TarInfo("index.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    for path, reason in ((fifo, "invalid_argument"), (tmp_path, "invalid_archive"), (empty, "invalid_archive")):
        with pytest.raises(DockyardError) as failure:
            ArchiveReader(str(path), AMD64)
        assert failure.value.reason == reason, path


def test_an_export_to_a_path_it_cannot_write_fails_in_check_mode_too(tmp_path, filled):
    source, names = filled
    for path in (tmp_path / "missing" / "images.tar", tmp_path):
        with pytest.raises(DockyardError) as failure:
            export_archive(source, names, str(path), DOCKER_ARCHIVE, check_mode=True)
        assert failure.value.reason == "invalid_argument"


def test_an_archive_written_again_keeps_the_mode_of_the_one_it_replaces(tmp_path, filled):
    source, names = filled
    path = tmp_path / "images.tar"
    export_archive(source, names[:1], str(path), DOCKER_ARCHIVE, check_mode=False)
    os.chmod(path, 0o600)
    export_archive(source, names, str(path), DOCKER_ARCHIVE, check_mode=False)
    assert os.stat(path).st_mode & 0o777 == 0o600


def _tarfile_bytes(plan: ArchivePlan, blobs: dict) -> bytes:
    """The archive `plan` describes as Python's tarfile writes it (a stream, PAX headers), for comparison."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        folders = sorted({os.path.dirname(name) for name, _source in plan.members if "/" in name})
        for folder in dict.fromkeys(part for parent in folders for part in ("/".join(parent.split("/")[: n + 1]) for n in range(parent.count("/") + 1))):
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, source in plan.members:
            data = source if isinstance(source, bytes) else blobs[source.digest]
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.size = 0o644, 0, len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _blob(data: bytes) -> Descriptor:
    return Descriptor("application/octet-stream", sha256_digest(data), len(data))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=3 * 1024 * 1024)), min_size=1, max_size=6))
def test_an_archive_is_the_very_tar_stream_tarfile_writes(members):
    """Every size around a 512-byte block, a 10 KiB record and a 1 MiB chunk: the same bytes as tarfile's, so
    an archive written before is recognised (not written again), and any tar reader reads it."""
    blobs, plan_members = {}, [("oci-layout", LAYOUT)]
    for number, (in_memory, size) in enumerate(members):
        data = bytes([number % 251]) * (size % 9000 if in_memory else size)
        if in_memory:
            plan_members.append((f"top/{number}.json", data))
        else:
            descriptor = _blob(data)
            blobs[descriptor.digest] = data
            plan_members.append((f"blobs/sha256/{number}", descriptor))
    plan = ArchivePlan(plan_members)
    streamed = b"".join(archive_chunks(plan, lambda descriptor: io.BytesIO(blobs[descriptor.digest])))
    assert streamed == _tarfile_bytes(plan, blobs)
    with tarfile.open(fileobj=io.BytesIO(streamed), mode="r:") as tar:
        assert [member.name for member in tar.getmembers() if member.isfile()] == [name for name, _source in plan.members]


def test_a_blob_of_other_bytes_or_cut_short_stops_the_archive_before_its_end():
    """The reader (an engine's load) sees a cut-off archive: the blob's last chunk and the end of the archive never come."""
    good, bad = b"g" * (2 * 1024 * 1024 + 7), b"b" * (1024 * 1024 + 3)
    named_bad = Descriptor("application/octet-stream", sha256_digest(b"other bytes"), len(bad))
    plan = ArchivePlan([("blobs/sha256/good", _blob(good)), ("blobs/sha256/bad", named_bad)])
    handed = {named_bad.digest: bad, sha256_digest(good): good}
    sent = []
    with pytest.raises(DockyardError) as failed:
        sent.extend(archive_chunks(plan, lambda descriptor: io.BytesIO(handed[descriptor.digest])))
    assert failed.value.reason == "store_corrupt"
    assert good in b"".join(sent) and bad not in b"".join(sent)  # the bad blob's last chunk never went
    short = _blob(b"s" * 5000)
    with pytest.raises(OSError, match="5000"):
        b"".join(archive_chunks(ArchivePlan([("blobs/sha256/short", short)]), lambda descriptor: io.BytesIO(b"s" * 4000)))
