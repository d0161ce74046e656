"""image_export and image_load on the engines where containers run: Docker Engine and Podman save and load
the images themselves, with their own ids; an engine is sent only the images it lacks under their names.

What crosses an engine's socket is seen through a recorder in front of it: a unix socket that forwards
every byte both ways and keeps the requests the modules sent, bodies and all.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import tarfile
import tempfile
import threading
from urllib.parse import urlsplit

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._archive import ArchiveReader
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from support.ansible import run_module
from support.engines import UnixHTTPConnection
from support.sockets import UnixListener

AMD64 = parse_platform("linux/amd64")
_VERSIONED = re.compile(r"/v[0-9]+\.[0-9]+(?P<path>/.*)\Z")


class SocketRecorder:
    """A unix socket in front of an engine's: forwards every byte both ways and keeps what each client sent."""

    def __init__(self, target: str):
        self.target = target
        self.folder = tempfile.mkdtemp(prefix="dy-rec-")  # short: a unix socket path has a length limit
        self.path = os.path.join(self.folder, "engine.sock")
        self.sent = []  # what each connection's client sent
        self.listener = UnixListener(self.path, self._relay).start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def _relay(self, client: socket.socket, _number: int) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            upstream.connect(self.target)
            record = bytearray()
            self.sent.append(record)
            answers = threading.Thread(target=_forward, args=(upstream, client, None), daemon=True)
            answers.start()
            _forward(client, upstream, record)
            answers.join()

    def requests(self) -> list:
        """(method, path without the API version, body) of every request that reached the engine."""
        found = []
        for record in self.sent:
            found += _http_requests(bytes(record))
        return found

    def stop(self) -> None:
        self.listener.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _forward(source: socket.socket, target: socket.socket, record) -> None:
    try:
        while True:
            chunk = source.recv(65536)
            if not chunk:
                break
            if record is not None:
                record += chunk
            target.sendall(chunk)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _http_requests(data: bytes) -> list:
    found, at = [], 0
    while data.find(b"\r\n\r\n", at) >= 0:
        end = data.find(b"\r\n\r\n", at)
        lines = data[at:end].decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {name.strip().lower(): value.strip() for name, _colon, value in (line.partition(":") for line in lines[1:])}
        at, body = end + 4, bytearray()
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                line_end = data.find(b"\r\n", at)
                size = int(data[at:line_end].split(b";")[0], 16)
                at = line_end + 2
                if size == 0:
                    at = data.find(b"\r\n", at) + 2
                    break
                body += data[at : at + size]
                at += size + 2
        else:
            length = int(headers.get("content-length", 0))
            body, at = data[at : at + length], at + length
        path = urlsplit(target).path
        versioned = _VERSIONED.match(path)
        found.append((method, versioned["path"] if versioned else path, bytes(body)))
    return found


def images_in(body: bytes) -> list:
    """(image id, RepoTags) of each image of a docker-archive sent to an engine."""
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        entries = json.load(tar.extractfile("manifest.json"))
        return sorted(("sha256:" + entry["Config"].rsplit("/", 1)[1], tuple(entry["RepoTags"] or ())) for entry in entries)


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def recorder(engine):
    found = SocketRecorder(engine.socket_path)
    yield found
    found.stop()


@pytest.fixture(scope="module")
def from_oci_store(registry, corpus, tmp_path_factory):
    """app and worker (which share a base layer), pulled into an OCI store and exported as a docker-archive."""
    work = tmp_path_factory.mktemp("from-oci-store")
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]
    store = {"store": "oci", "store_path": str(work / "store")}
    pulled = run_module("image_pull", {"name": names, **store})
    assert not pulled["failed"], pulled
    path = str(work / "images.tar")
    written = run_module("image_export", {"name": names, "path": path, **store})
    assert not written["failed"] and written["changed"], written
    return path


def engine_pull(engine, name: str) -> None:
    """Have the engine pull an image itself, as a user of it would."""
    repository, tag = name.rsplit(":", 1)
    connection = UnixHTTPConnection(engine.socket_path)
    try:
        connection.request("POST", f"/images/create?fromImage={repository}&tag={tag}")
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    assert response.status == 200 and b'"error"' not in answer, answer


def engine_ids(engine) -> dict:
    """name: image id of every image the engine names."""
    status, images = engine.api("GET", "/images/json")
    assert status == 200, images
    return {tag: image["Id"] for image in images for tag in image.get("RepoTags") or [] if tag != "<none>:<none>"}


def load(engine, path: str, docker_host: str, check: bool = False) -> dict:
    result = run_module("image_load", {"path": path, "store": engine.kind, "docker_host": docker_host}, check=check, diff=True)
    result["by_name"] = {image["reference"]: image for image in result.get("images", [])}
    return result


def statuses(image: dict) -> list:
    return [layer["status"] for layer in image["layers"]]


def corrupted(path: str, digest: str, into: str) -> str:
    """A copy of the archive at `path` whose blob `digest` holds other bytes of the same size."""
    with tarfile.open(path) as tar:
        offset = tar.getmember(f"blobs/sha256/{digest.split(':')[1]}").offset_data
    shutil.copyfile(path, into)
    with open(into, "r+b") as handle:
        handle.seek(offset + 100)
        byte = handle.read(1)[0]
        handle.seek(offset + 100)
        handle.write(bytes([byte ^ 0xFF]))
    return into


# -- export ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("archive_format", ["docker-archive", "oci-archive"])
def test_an_image_pulled_into_the_engine_is_exported_with_the_engines_id(engine, registry, corpus, tmp_path, archive_format):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]
    for name in names:
        engine_pull(engine, name)
    held = {name: engine.inspect(name)["Id"] for name in names}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = str(tmp_path / "images.tar")
    args = {"name": names, "path": path, "format": archive_format, "store": engine.kind, "docker_host": engine.docker_host}

    written = run_module("image_export", args, env={"TMPDIR": str(scratch)})

    assert not written["failed"] and written["changed"] is True, written
    assert written["store"]["type"] == engine.kind and written["format"] == archive_format
    assert {image["names"][0]: image["id"] for image in written["images"]} == held == {names[0]: corpus.app.id, names[1]: corpus.worker.id}
    with ArchiveReader(path, AMD64) as reader:
        assert {image.names[0].familiar: image.id for image in reader.images} == held
        base = {layer.digest for image in reader.images for layer in image.layers[:1]}
        assert len(base) == 1, "the base the images share is one blob"
    assert list(scratch.iterdir()) == [], "the engine's save is removed"
    again = run_module("image_export", args, env={"TMPDIR": str(scratch)})
    assert again["changed"] is False, again


# -- load -----------------------------------------------------------------------------------------


def test_an_archive_from_the_oci_store_loads_once_and_a_second_load_sends_nothing(engine, recorder, registry, corpus, from_oci_store):
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"

    predicted = load(engine, from_oci_store, recorder.docker_host, check=True)
    assert engine_ids(engine) == {} and not [r for r in recorder.requests() if r[0] != "GET"], "check mode sends nothing"
    loaded = load(engine, from_oci_store, recorder.docker_host)

    assert not loaded["failed"] and loaded["changed"] is True, loaded
    assert statuses(loaded["by_name"][app]) == ["loaded", "loaded"]
    assert statuses(loaded["by_name"][worker]) == ["already_exists", "loaded"], "the shared base is loaded once"
    assert [statuses(image) for image in predicted["images"]] == [statuses(image) for image in loaded["images"]]
    assert predicted["diff"] == loaded["diff"] == {"before": {app: None, worker: None}, "after": {app: corpus.app.digest, worker: corpus.worker.digest}}
    assert engine_ids(engine) == {app: corpus.app.id, worker: corpus.worker.id}
    (sent,) = [body for method, path, body in recorder.requests() if path == "/images/load"]
    assert images_in(sent) == sorted([(corpus.app.id, (app,)), (corpus.worker.id, (worker,))])

    asked = len(recorder.requests())
    again = load(engine, from_oci_store, recorder.docker_host)

    assert not again["failed"] and again["changed"] is False, again
    assert [statuses(image) for image in again["images"]] == [["already_exists"] * 2] * 2
    assert [method for method, _path, _body in recorder.requests()[asked:]] == ["GET"] * (len(recorder.requests()) - asked), "it only looked"
    assert engine_ids(engine) == {app: corpus.app.id, worker: corpus.worker.id}


def test_an_image_the_engine_holds_is_not_sent(engine, recorder, registry, corpus, from_oci_store):
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    engine_pull(engine, app)

    loaded = load(engine, from_oci_store, recorder.docker_host)

    assert not loaded["failed"], loaded
    assert (loaded["by_name"][app]["changed"], statuses(loaded["by_name"][app])) == (False, ["already_exists"] * 2)
    assert (loaded["by_name"][worker]["changed"], statuses(loaded["by_name"][worker])) == (True, ["already_exists", "loaded"])
    (sent,) = [body for method, path, body in recorder.requests() if path == "/images/load"]
    assert images_in(sent) == [(corpus.worker.id, (worker,))], "only the image the engine lacks crossed the socket"
    assert engine_ids(engine) == {app: corpus.app.id, worker: corpus.worker.id}


def test_a_corrupt_archive_fails_with_a_reason_and_the_engine_holds_nothing_new(engine, recorder, registry, corpus, from_oci_store, tmp_path):
    broken = corrupted(from_oci_store, corpus.base.digest, str(tmp_path / "corrupt.tar"))  # the layer both images need

    loaded = load(engine, broken, recorder.docker_host)

    assert loaded["failed"] is True and loaded["reason"] == "digest_mismatch", loaded
    for image in loaded["images"]:
        assert image["reason"] == "digest_mismatch" and corpus.base.digest in image["msg"]
        assert image["changed"] is False and statuses(image) == ["missing", "missing"], "the engine holds none of their layers"
    assert engine_ids(engine) == {}
    assert engine.api("GET", "/images/json")[1] == [], "the engine took none of the cut-off archive"
