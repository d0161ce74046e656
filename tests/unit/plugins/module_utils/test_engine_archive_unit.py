"""image_export and image_load on Docker Engine and Podman, against a scripted engine on a unix socket.

The scripted engine answers the Engine API requests these make as Docker 20.10 and Podman 4.3 answer them:
it saves images in `docker save`'s older shape (`<id>.json`, `<layer>/layer.tar`, manifest.json), loads a
docker-archive streamed to it (checking every layer against its DiffID, tagging the RepoTags), and reports
a failed load inside a 200 answer (Docker, and Podman at times) or as HTTP 500 (Podman). It keeps every
archive it was sent, and counts those cut off before their end, so that tests see what crossed the socket.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from email.message import Message
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from ansible_collections.dockyard.images.plugins.module_utils import _engine_archive
from ansible_collections.dockyard.images.plugins.module_utils._archive import (
    DOCKER_ARCHIVE,
    OCI_ARCHIVE,
    ArchiveImage,
    ArchiveReader,
    blob_member,
    export_archive,
    load_archive,
    load_result,
    plan_archive,
    write_archive,
)
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import Manifest, image_blobs
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import MISSING
from ansible_collections.dockyard.images.plugins.module_utils._stores._engine import EngineStore, chain_ids
from support.images import Image, digest_of, random_layer
from unit.support_inprocess import InProcessServer, _Handler

AMD64 = parse_platform("linux/amd64")
BASE = random_layer(24 * 1024, "engine-archive-base")
APP = Image([BASE, random_layer(8 * 1024, "engine-archive-app")], labels={"name": "app"})
WORKER = Image([BASE, random_layer(12 * 1024, "engine-archive-worker")], labels={"name": "worker"})
APP_NAME, WORKER_NAME = "registry.test/team/app:1", "registry.test/team/worker:1"
VERSIONS = {
    "docker": {"ApiVersion": "1.41", "Version": "20.10.24", "Components": [{"Name": "Engine"}]},
    "podman": {"ApiVersion": "1.41", "Version": "4.3.1", "Components": [{"Name": "Podman Engine"}]},
}


# -- the scripted engine --------------------------------------------------------------------------


@dataclass
class HeldImage:
    """An image the engine holds: its config and its layers, as plain tars."""

    config: bytes
    tars: list

    @property
    def diff_ids(self) -> list:
        return json.loads(self.config)["rootfs"]["diff_ids"]


class _ChunkedBodies(_Handler):
    """Also reads request bodies sent chunked, as a streamed load is; a body cut off before its end is counted, not answered."""

    def handle_one(self):
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            return super().handle_one()
        body = _dechunked(self.rfile)
        if body is None:
            self.service.cut_off += 1
            self.close_connection = True
            return None
        del self.headers["Transfer-Encoding"]
        self.headers["Content-Length"] = str(len(body))
        wire, self.rfile = self.rfile, io.BytesIO(body)
        try:
            return super().handle_one()
        finally:
            self.rfile = wire

    do_GET = do_POST = do_DELETE = handle_one


def _dechunked(stream) -> Optional[bytes]:
    data = bytearray()
    while True:
        line = stream.readline()
        if not line.strip():
            return None
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while stream.readline() not in (b"\r\n", b"\n", b""):
                pass
            return bytes(data)
        chunk = stream.read(size)
        if len(chunk) < size:
            return None
        data += chunk
        stream.read(2)


class ScriptedEngine(InProcessServer):
    """Docker (or Podman) as image_load and image_export talk to it; see the module's docstring."""

    def __init__(self, kind: str, directory: str):
        self.kind = kind
        self.images = {}  # id: HeldImage
        self.tags = {}  # full name: id
        self.calls = []  # (method, path, query)
        self.sent = []  # the archives POST /images/load received whole
        self.cut_off = 0  # loads whose body ended before the archive did
        self.load_failure = None  # what loads fail with: inside a 200 answer when it starts with "200:", else as HTTP 500
        self.save_failure = None  # what saves fail with, as HTTP 500
        self.tags_nothing = False  # a load that answers success but tags nothing
        self._lock = threading.Lock()
        self.socket_path = os.path.join(directory, f"{kind}.sock")
        super().__init__(self.socket_path)
        self.server.RequestHandlerClass = type("Handler", (_ChunkedBodies,), {"service": self})

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    def store(self) -> EngineStore:
        return EngineStore(self.docker_host, self.kind, timeout=5, pool_size=4)

    def hold(self, image: Image, *names: str) -> None:
        """Hold `image` (its layers unpacked) under `names`, as a pull would leave it."""
        self.images[image.id] = HeldImage(image.config, [layer.tar for layer in image.layers])
        self.tags.update(dict.fromkeys(names, image.id))

    def held(self) -> dict:
        return dict(self.tags)

    def posts(self) -> list:
        return [(method, path) for method, path, _query in self.calls if method != "GET"]

    def sent_images(self) -> list:
        """For each archive sent whole: the ids of its images, with the names it gives them."""
        found = []
        for body in self.sent:
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                entries = json.loads(tar.extractfile("manifest.json").read())
                found.append(sorted((digest_of(tar.extractfile(entry["Config"]).read()), tuple(entry["RepoTags"] or ())) for entry in entries))
        return found

    # -- the API ---------------------------------------------------------------------------------

    def respond(self, method: str, raw_path: str, headers: Message, body: bytes) -> tuple:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        if path.startswith("/v1.41/"):
            path = path[len("/v1.41") :]
        query = parse_qs(parts.query)
        with self._lock:
            self.calls.append((method, path, query))
            if path == "/version":
                return _json(VERSIONS[self.kind])
            if (method, path) == ("GET", "/images/json"):
                return _json([{"Id": image_id, "RepoTags": self._names_of(image_id) or ["<none>:<none>"]} for image_id in self.images])
            if (method, path) == ("GET", "/containers/json"):
                return _json([])
            if (method, path) == ("GET", "/images/get"):
                return _json({"message": self.save_failure}, 500) if self.save_failure else self._save(query["names"])
            if (method, path) == ("POST", "/images/load"):
                return self._load(body)
            if path.startswith("/images/"):
                name, _slash, action = path[len("/images/") :].rpartition("/")
                image_id = self._find(name)
                if image_id is None:
                    return _json({"message": f"No such image: {name}"}, 404)
                if (method, action) == ("GET", "json"):
                    return _json(self._inspect(image_id))
                if (method, action) == ("GET", "history"):
                    return _json([{"Size": len(data)} for data in reversed(self.images[image_id].tars)])
                if (method, action) == ("POST", "tag"):
                    self.tags[f"{query['repo'][0]}:{query['tag'][0]}"] = image_id
                    return 201, {}, b""
        return _json({"message": f"page not found: {method} {path}"}, 404)

    def _names_of(self, image_id: str) -> list:
        return sorted(name for name, held in self.tags.items() if held == image_id)

    def _find(self, name: str) -> Optional[str]:
        if name in self.tags:
            return self.tags[name]
        bare = name.split(":", 1)[1] if name.startswith("sha256:") else name
        found = [image_id for image_id in self.images if image_id.split(":", 1)[1].startswith(bare)] if len(bare) >= 12 else []
        return found[0] if len(found) == 1 else None

    def _inspect(self, image_id: str) -> dict:
        config = json.loads(self.images[image_id].config)
        return {
            "Id": image_id,
            "RepoTags": self._names_of(image_id),
            "RepoDigests": [],
            "Created": config["created"],
            "Os": config["os"],
            "Architecture": config["architecture"],
            "RootFS": {"Type": "layers", "Layers": self.images[image_id].diff_ids},
        }

    def _save(self, names: list) -> tuple:
        """`docker save` before Docker 25: `<id>.json`, `<diff id>/layer.tar`, manifest.json; RepoTags null for images asked for by id."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            entries, written = [], set()
            for name in names:
                image_id = self._find(name)
                if image_id is None:
                    return _json({"message": f"reference does not exist: {name}"}, 404)
                held = self.images[image_id]
                layers = [f"{diff_id.split(':')[1]}/layer.tar" for diff_id in held.diff_ids]
                for path, data in zip(layers, held.tars):
                    if path not in written:
                        written.add(path)
                        _add(tar, path, data)
                _add(tar, f"{image_id.split(':')[1]}.json", held.config)
                entries.append({"Config": f"{image_id.split(':')[1]}.json", "RepoTags": None, "Layers": layers})
            _add(tar, "manifest.json", json.dumps(entries).encode())
        data = buffer.getvalue()
        return 200, {"Content-Type": "application/x-tar"}, [data[start : start + 65536] for start in range(0, len(data), 65536)]

    def _load(self, body: bytes) -> tuple:
        """Take every image of the archive, each layer checked against its DiffID; tag the RepoTags. Docker reads
        no file of a layer whose ChainID it holds; Podman looks up every file the archive names (one missing fails
        the load), but reads none whose DiffID it holds, wherever it lies."""
        self.sent.append(body)
        if self.load_failure is not None:
            return self._failed(self.load_failure)
        loaded = []
        layers, by_diff_id = {}, {}  # what the engine holds, by ChainID and by DiffID
        for image in self.images.values():
            layers.update(zip(chain_ids(image.diff_ids), image.tars))
            by_diff_id.update(zip(image.diff_ids, image.tars))
        try:
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for entry in json.loads(tar.extractfile("manifest.json").read()):
                    config = tar.extractfile(entry["Config"]).read()
                    held = HeldImage(config, [])
                    for path, diff_id, chain in zip(entry["Layers"], held.diff_ids, chain_ids(held.diff_ids)):
                        if self.kind == "docker" and chain in layers:
                            held.tars.append(layers[chain])
                            continue
                        member = tar.getmember(path)
                        if self.kind == "podman" and diff_id in by_diff_id:
                            held.tars.append(by_diff_id[diff_id])
                            continue
                        data = tar.extractfile(member).read()
                        data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
                        if digest_of(data) != diff_id:
                            raise ValueError(f"layer {path} does not match its DiffID {diff_id}")
                        held.tars.append(data)
                    self.images[digest_of(config)] = held
                    if not self.tags_nothing:
                        self.tags.update(dict.fromkeys(entry["RepoTags"] or (), digest_of(config)))
                    loaded.extend(entry["RepoTags"] or [digest_of(config)])
        except (ValueError, KeyError, tarfile.TarError) as exc:
            return self._failed(str(exc))
        if self.kind == "podman":
            return _json({"stream": f"Loaded image: {','.join(loaded)}"})
        return _lines([{"stream": f"Loaded image: {name}\n"} for name in loaded])

    def _failed(self, message: str) -> tuple:
        if message.startswith("200:"):
            message = message[len("200:") :]
            return _lines([{"errorDetail": {"message": message}, "error": message}])
        if self.kind == "podman":
            return _json({"cause": message, "message": f"failed to load image: {message}", "response": 500}, 500)
        return _json({"message": message}, 500)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _json(data, status: int = 200) -> tuple:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


def _lines(events: list) -> tuple:
    return 200, {"Content-Type": "application/json"}, [json.dumps(event).encode() + b"\r\n" for event in events]


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def sockets():
    """A folder for the engines' sockets, short (a unix socket path has a length limit): named before `scratch`
    moves tempfile's folder under tmp_path."""
    directory = tempfile.mkdtemp(prefix="dy-engarch-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["docker", "podman"])
def engine(request, sockets):
    server = ScriptedEngine(request.param, sockets).start()
    yield server
    server.stop()


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The temporary directory the collection saves into, to see that it leaves nothing there."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def archive_of(path, images: list, archive_format: str = DOCKER_ARCHIVE) -> str:
    """An archive as image_export writes it, of (Image, names) pairs; gzip layers."""
    blobs, planned = {}, []
    for image, names in images:
        manifest = Manifest(image.manifest, image.media_type, image.digest)
        config, layers = image_blobs(manifest, "a test image")
        planned.append(ArchiveImage(tuple(parse_reference(name) for name in names), manifest, manifest, config, layers, AMD64))
        blobs[config.digest] = image.config
        blobs.update({layer.digest: layer.blob for layer in image.layers})
    with open(path, "wb") as out:
        write_archive(out, plan_archive(planned, archive_format), lambda descriptor: io.BytesIO(blobs[descriptor.digest]))
    return str(path)


def load(engine: ScriptedEngine, path: str, check_mode: bool = False) -> dict:
    """What image_load returns, by name."""
    _format, results = load_archive(engine.store(), path, AMD64, False, None, 3, check_mode)
    outcome = load_result(results)
    outcome["by_name"] = {image["reference"]: image for image in outcome["images"]}
    return outcome


def statuses(image: dict) -> list:
    return [layer["status"] for layer in image["layers"]]


# -- export ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("archive_format", [DOCKER_ARCHIVE, OCI_ARCHIVE])
def test_an_export_carries_the_engines_ids_under_the_names_asked_and_leaves_no_save_behind(engine, scratch, tmp_path, archive_format):
    engine.hold(APP, APP_NAME, "registry.test/team/app:latest")
    engine.hold(WORKER, WORKER_NAME)
    path = tmp_path / "images.tar"

    written = export_archive(engine.store(), [WORKER_NAME, APP_NAME], str(path), archive_format, check_mode=False)

    assert written["changed"] is True
    assert sorted((image["names"], image["id"]) for image in written["images"]) == [([APP_NAME], APP.id), ([WORKER_NAME], WORKER.id)]
    with ArchiveReader(str(path), AMD64) as reader:
        held = sorted((image.id, [name.familiar for name in image.names]) for image in reader.images)
        assert held == sorted([(APP.id, [APP_NAME]), (WORKER.id, [WORKER_NAME])])
        app = next(image for image in reader.images if image.id == APP.id)
        assert [layer.digest for layer in app.layers] == [layer.diff_id for layer in APP.layers], "the engine's layers, as it saves them: plain tars"
    (save,) = [query for method, path, query in engine.calls if path == "/images/get"]
    assert sorted(save["names"]) == sorted([APP.id, WORKER.id]), "each image once, by id"
    assert list(scratch.iterdir()) == []


def test_an_export_into_an_archive_that_holds_the_images_writes_nothing_and_check_mode_neither(engine, scratch, tmp_path):
    engine.hold(APP, APP_NAME)
    path = tmp_path / "images.tar"
    export_archive(engine.store(), [APP_NAME], str(path), DOCKER_ARCHIVE, check_mode=False)
    stamp = os.stat(path).st_mtime_ns

    again = export_archive(engine.store(), [APP_NAME], str(path), DOCKER_ARCHIVE, check_mode=False)
    engine.hold(WORKER, WORKER_NAME)
    predicted = export_archive(engine.store(), [APP_NAME, WORKER_NAME], str(path), DOCKER_ARCHIVE, check_mode=True)

    assert again["changed"] is False and predicted["changed"] is True
    assert os.stat(path).st_mtime_ns == stamp
    assert list(scratch.iterdir()) == []


def test_exporting_a_name_the_engine_lacks_fails_before_the_engine_saves_anything(engine, scratch, tmp_path):
    engine.hold(APP, APP_NAME)

    with pytest.raises(DockyardError) as failure:
        export_archive(engine.store(), [APP_NAME, "registry.test/team/none:1"], str(tmp_path / "images.tar"), DOCKER_ARCHIVE, check_mode=False)

    assert failure.value.reason == "not_found" and "registry.test/team/none:1" in failure.value.message
    assert [path for _method, path, _query in engine.calls if path == "/images/get"] == []
    assert not (tmp_path / "images.tar").exists()


def test_a_save_that_does_not_fit_fails_disk_full_before_the_engine_saves(engine, scratch, tmp_path, monkeypatch):
    engine.hold(APP, APP_NAME)
    monkeypatch.setattr(_engine_archive.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))

    with pytest.raises(DockyardError) as failure:
        export_archive(engine.store(), [APP_NAME], str(tmp_path / "images.tar"), DOCKER_ARCHIVE, check_mode=False)

    assert failure.value.reason == "disk_full" and failure.value.details["bytes_free"] == 100
    assert failure.value.details["bytes_needed"] == sum(len(layer.tar) for layer in APP.layers)
    assert [path for _method, path, _query in engine.calls if path == "/images/get"] == []
    assert list(scratch.iterdir()) == []


def test_a_disk_that_fills_up_during_the_save_fails_disk_full_and_the_save_is_removed(engine, scratch, tmp_path, monkeypatch):
    engine.hold(APP, APP_NAME)
    store = engine.store()

    def fills_up(path, out, params=None):
        out.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.client, "download", fills_up)

    with pytest.raises(DockyardError) as failure:
        export_archive(store, [APP_NAME], str(tmp_path / "images.tar"), DOCKER_ARCHIVE, check_mode=False)

    assert failure.value.reason == "disk_full" and str(scratch) in failure.value.message
    assert list(scratch.iterdir()) == []


def test_a_save_the_engine_refuses_fails_with_its_message_and_the_save_is_removed(engine, scratch):
    engine.hold(APP, APP_NAME)
    engine.save_failure = "open /var/lib/containers/storage/overlay/x: input/output error"

    with pytest.raises(DockyardError) as failure:
        engine.store().exporter([APP_NAME])

    assert failure.value.reason == "engine_error" and engine.save_failure in failure.value.message
    assert list(scratch.iterdir()) == []


# -- load -----------------------------------------------------------------------------------------


def test_a_load_sends_the_images_once_in_one_archive_and_the_engine_holds_them_with_the_archives_ids(engine, tmp_path):
    path = archive_of(tmp_path / "images.tar", [(APP, [APP_NAME]), (WORKER, [WORKER_NAME])])

    loaded = load(engine, path)

    assert loaded["changed"] is True and [image.get("msg") for image in loaded["images"]] == [None, None]
    app, worker = loaded["by_name"][APP_NAME], loaded["by_name"][WORKER_NAME]
    assert statuses(app) == ["loaded", "loaded"]
    assert statuses(worker) == ["already_exists", "loaded"], "the base is brought once, by the first image"
    assert (app["id"], app["digest"], app["platform"]) == (APP.id, APP.digest, "linux/amd64")
    assert loaded["diff"] == {"before": {APP_NAME: None, WORKER_NAME: None}, "after": {APP_NAME: APP.digest, WORKER_NAME: WORKER.digest}}
    assert engine.held() == {APP_NAME: APP.id, WORKER_NAME: WORKER.id}
    assert engine.sent_images() == [sorted([(APP.id, (APP_NAME,)), (WORKER.id, (WORKER_NAME,))])]
    assert loaded["loaded_bytes"] == sum(layer.size for layer in (*APP.layers, WORKER.layers[1]))


def test_a_second_load_changes_nothing_and_sends_nothing(engine, tmp_path):
    path = archive_of(tmp_path / "images.tar", [(APP, [APP_NAME]), (WORKER, [WORKER_NAME])])
    load(engine, path)
    posts = len(engine.posts())

    again = load(engine, path)

    assert again["changed"] is False
    assert [statuses(image) for image in again["images"]] == [["already_exists"] * 2] * 2
    assert again["diff"]["before"] == again["diff"]["after"] == {APP_NAME: APP.digest, WORKER_NAME: WORKER.digest}
    assert len(engine.posts()) == posts and len(engine.sent) == 1


def test_an_image_the_engine_holds_is_not_sent_and_the_others_reuse_its_layers(engine, tmp_path):
    engine.hold(APP, APP_NAME)
    path = archive_of(tmp_path / "images.tar", [(APP, [APP_NAME]), (WORKER, [WORKER_NAME])])

    loaded = load(engine, path)

    app, worker = loaded["by_name"][APP_NAME], loaded["by_name"][WORKER_NAME]
    assert (app["changed"], statuses(app)) == (False, ["already_exists", "already_exists"])
    assert (worker["changed"], statuses(worker)) == (True, ["already_exists", "loaded"]), "the base's ChainID is held"
    assert engine.sent_images() == [[(WORKER.id, (WORKER_NAME,))]]
    with tarfile.open(fileobj=io.BytesIO(engine.sent[0])) as tar:
        sent = {member.name: member.size for member in tar.getmembers()}
    base, top = (blob_member(layer.digest) for layer in WORKER.layers)
    assert sent[top] == WORKER.layers[1].size
    if engine.kind == "docker":
        assert base not in sent, "Docker opens no file of a layer whose ChainID it holds"
    else:
        assert sent[base] == 0, "Podman must find a file for every layer, but reads none whose DiffID it holds"
    assert loaded["diff"]["before"] == {APP_NAME: APP.digest, WORKER_NAME: None}


def test_an_image_the_engine_holds_under_another_name_is_tagged_not_sent(engine, tmp_path):
    engine.hold(APP, "registry.test/team/app:old")
    path = archive_of(tmp_path / "images.tar", [(APP, [APP_NAME])])

    loaded = load(engine, path)

    app = loaded["by_name"][APP_NAME]
    assert app["changed"] is True and statuses(app) == ["already_exists", "already_exists"]
    assert engine.sent == [] and ("POST", f"/images/{APP.id}/tag") in engine.posts()
    assert engine.held() == {"registry.test/team/app:old": APP.id, APP_NAME: APP.id}


def test_a_name_that_moves_to_the_archives_image_reports_the_image_it_held_before(engine, tmp_path):
    engine.hold(WORKER, APP_NAME)  # the name stands for another image
    path = archive_of(tmp_path / "images.tar", [(APP, [APP_NAME])])

    loaded = load(engine, path)

    app = loaded["by_name"][APP_NAME]
    assert app["changed"] is True and statuses(app) == ["already_exists", "loaded"]
    assert loaded["diff"] == {"before": {APP_NAME: WORKER.id}, "after": {APP_NAME: APP.digest}}
    assert engine.held() == {APP_NAME: APP.id}


@pytest.mark.parametrize("held", [(), (APP,)], ids=["empty", "app-held"])
def test_check_mode_predicts_what_the_real_load_reports_and_sends_nothing(engine, tmp_path, held):
    for image in held:
        engine.hold(image, APP_NAME)
    path = archive_of(tmp_path / "images.tar", [(APP, [APP_NAME]), (WORKER, [WORKER_NAME])])

    predicted = load(engine, path, check_mode=True)
    assert engine.posts() == [] and engine.sent == []
    real = load(engine, path)

    assert [(image["changed"], statuses(image), image["id"]) for image in predicted["images"]] == [
        (image["changed"], statuses(image), image["id"]) for image in real["images"]
    ]
    assert predicted["diff"] == real["diff"] and predicted["loaded_bytes"] == real["loaded_bytes"]


def test_a_corrupt_blob_fails_its_image_alone_and_the_engine_takes_nothing_of_it(engine, tmp_path):
    path = archive_of(tmp_path / "images.tar", [(APP, [APP_NAME]), (WORKER, [WORKER_NAME])])
    data = bytearray((tmp_path / "images.tar").read_bytes())
    at = data.index(WORKER.layers[1].blob[100:140])  # the worker's own layer: same size, other bytes
    data[at] ^= 0xFF
    (tmp_path / "images.tar").write_bytes(bytes(data))

    loaded = load(engine, path)

    app, worker = loaded["by_name"][APP_NAME], loaded["by_name"][WORKER_NAME]
    assert worker["failed"] is True and worker["reason"] == "digest_mismatch" and WORKER.layers[1].digest in worker["msg"]
    assert worker["changed"] is False and statuses(worker) == ["already_exists", "missing"]
    assert app.get("failed") is None and app["changed"] is True
    assert engine.cut_off == 1, "the archive with the corrupt blob was cut off before its end"
    assert engine.sent_images() == [[(APP.id, (APP_NAME,))]], "then sent again without the image"
    assert engine.held() == {APP_NAME: APP.id}


@pytest.mark.parametrize("answer", ["in-the-stream", "http-error"])
def test_a_load_the_engine_fails_fails_every_image_with_the_engines_message(engine, tmp_path, answer):
    engine.load_failure = ("200:" if answer == "in-the-stream" else "") + "open /var/lib/docker/tmp/x: no space left on device"
    path = archive_of(tmp_path / "images.tar", [(APP, [APP_NAME]), (WORKER, [WORKER_NAME])])

    loaded = load(engine, path)

    for image in loaded["images"]:
        assert image["failed"] is True and image["reason"] == "engine_error" and "no space left on device" in image["msg"]
        assert image["changed"] is False and MISSING in statuses(image)
    assert loaded["changed"] is False and engine.held() == {}


def test_an_engine_that_says_it_loaded_but_holds_nothing_under_the_name_fails_engine_error(engine, tmp_path):
    engine.tags_nothing = True
    path = archive_of(tmp_path / "images.tar", [(APP, [APP_NAME])])

    loaded = load(engine, path)

    app = loaded["by_name"][APP_NAME]
    assert app["failed"] is True and app["reason"] == "engine_error" and "holds nothing under this name" in app["msg"]


def test_an_export_loads_into_the_other_engine_with_the_same_ids(tmp_path, sockets, scratch):
    docker, podman = ScriptedEngine("docker", sockets).start(), ScriptedEngine("podman", sockets).start()
    try:
        docker.hold(APP, APP_NAME)
        docker.hold(WORKER, WORKER_NAME)
        path = str(tmp_path / "images.tar")
        export_archive(docker.store(), [APP_NAME, WORKER_NAME], path, DOCKER_ARCHIVE, check_mode=False)

        loaded = load(podman, path)

        assert loaded["changed"] is True and podman.held() == docker.held()
        assert [image["id"] for image in loaded["images"]] == [APP.id, WORKER.id]
    finally:
        docker.stop()
        podman.stop()


def test_layer_statuses_follow_chain_ids_not_layer_digests(engine, tmp_path):
    on_top = Image([random_layer(4 * 1024, "engine-archive-other-base"), BASE], labels={"name": "on-top"})
    engine.hold(APP, APP_NAME)  # holds BASE as the first layer: on_top has it second, which is another layer to an engine
    path = archive_of(tmp_path / "images.tar", [(on_top, ["registry.test/team/on-top:1"])])

    (result,) = load(engine, path)["images"]

    assert statuses(result) == ["loaded", "loaded"]
