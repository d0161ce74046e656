"""EnginePuller and EngineStore against what a real Docker Engine and a real Podman answered.

tests/unit/fixtures/engine holds the answers of dockerd 20.10 and Podman 4.3's API service, recorded
as README.md there says. A small server on a unix socket replays them to EngineClient. Each answer
was recorded in one state of the engine (empty; app pulled; app and worker pulled; a container using
app; worker removed; worker pulled by digest; then tagged), and a replayed pull, removal or tag moves
the replay to the state the real one left the engine in. A request
the recording has no answer for fails the test. The registry the engines pulled from is replaced by
an in-process one holding the very same images (its address is written into the replayed answers in
place of the recorded one), so that check mode and `policy: always` ask it what they asked the real one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qsl, urlsplit

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore
from ansible_collections.dockyard.images.plugins.module_utils._engine_pull import EnginePuller
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._stores import (
    ALREADY_EXISTS,
    PULL_COMPLETE,
    PullRequest,
    RemovalRequest,
    StoreOptions,
    open_store,
    select_images,
)
from ansible_collections.dockyard.images.plugins.module_utils._stores._engine import EngineClient, EngineStore, default_docker_host
from ansible_collections.dockyard.images.plugins.module_utils._transport import RegistryOptions
from unit.support_inprocess import ENGINE_APP, ENGINE_BASE, ENGINE_BROKEN, ENGINE_WORKER, InProcessRegistry, InProcessServer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "engine"
RECORDING = json.loads((FIXTURES / "recording.json").read_text(encoding="utf-8"))
KINDS = sorted(RECORDING["engines"])
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
_VERSIONED = re.compile(r"/v(?P<version>[0-9]+\.[0-9]+)(?P<path>/.*)\Z")


# -- the replaying engine ------------------------------------------------------------------------


@dataclass
class EngineCall:
    """A request the replayed engine received."""

    method: str
    path: str
    query: dict
    headers: Message
    version: Optional[str]


class EngineReplay(InProcessServer):
    """One engine's recorded answers on a unix socket, starting in `phase`."""

    def __init__(self, kind: str, phase: str, registry_host: str, directory: str):
        recorded = RECORDING["engines"][kind]
        self.kind, self.phase, self.registry_host = kind, phase, registry_host
        self.api_version = recorded["api_version"]
        self.exchanges = recorded["exchanges"]
        self.calls, self.unrecorded = [], []
        self._lock = threading.Lock()
        self.socket_path = os.path.join(directory, f"{kind}-{phase}.sock")
        super().__init__(self.socket_path)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    def live(self, text: str) -> str:
        """Recorded text as this test's registry would have it."""
        return text.replace(RECORDING["registry"], self.registry_host)

    def respond(self, method: str, raw_path: str, headers: Message, body: bytes) -> tuple:
        """The recorded answer: a progress stream chunked, a JSON object a line, as the engines send it."""
        parts = urlsplit(raw_path)
        versioned = _VERSIONED.match(parts.path)
        path, version = (versioned["path"], versioned["version"]) if versioned else (parts.path, None)
        query = dict(parse_qsl(parts.query))
        with self._lock:
            self.calls.append(EngineCall(method, path, query, headers, version))
            for exchange in self.exchanges:
                if exchange["phase"] not in ("any", self.phase) or exchange["method"] != method or self.live(exchange["path"]) != path:
                    continue
                if {key: self.live(value) for key, value in exchange["query"].items()} != query:
                    continue
                if version != (None if exchange["phase"] == "any" else self.api_version):
                    continue
                self.phase = exchange.get("then", self.phase)
                text = self.live((FIXTURES / exchange["body"]).read_text(encoding="utf-8"))
                data = text.replace("\n", exchange.get("line_ending", "\n")).encode()
                headers = {"Content-Type": exchange["content_type"]} if exchange["content_type"] else {}
                return exchange["status"], headers, data.splitlines(keepends=True) if exchange["body"].endswith(".jsonl") else data
            self.unrecorded.append((self.phase, method, raw_path))
        return 500, {"Content-Type": "application/json"}, b'{"message": "no such answer was recorded"}'

    def posts(self) -> list:
        return [(call.path, call.query) for call in self.calls if call.method != "GET"]


def recorded_body(kind: str, slug: str):
    """The JSON an engine answered to the exchange recorded as `slug`."""
    (exchange,) = [e for e in RECORDING["engines"][kind]["exchanges"] if e["body"].split("-", 1)[1].rsplit(".", 1)[0] == slug]
    return json.loads((FIXTURES / exchange["body"]).read_text(encoding="utf-8"))


def recorded_events(kind: str, slug: str) -> list:
    """The objects of the progress stream recorded as `slug`."""
    (exchange,) = [e for e in RECORDING["engines"][kind]["exchanges"] if e["body"].split("-", 1)[1] == f"{slug}.jsonl"]
    return [json.loads(line) for line in (FIXTURES / exchange["body"]).read_text(encoding="utf-8").splitlines() if line.strip()]


def recorded_layer_ids(kind: str, slug: str) -> list:
    """The layer ids a recorded progress stream names, in the order it first names them."""
    named = (event.get("id", "") for event in recorded_events(kind, slug))
    return list(dict.fromkeys(layer_id for layer_id in named if re.fullmatch(r"[0-9a-f]{12}", layer_id)))


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def registry():
    """An in-process registry holding the images the engines pulled, byte for byte."""
    server = InProcessRegistry().start()
    for repo, image in (("team/app", ENGINE_APP), ("team/worker", ENGINE_WORKER), ("team/broken", ENGINE_BROKEN)):
        server.push_image(repo, "1", image)
    yield server
    server.stop()


@pytest.fixture
def engine_in(kind, registry):
    """Start the replay of `kind` in a phase; every request must have a recorded answer."""
    directory = tempfile.mkdtemp(prefix="dy-engine-")  # short: a unix socket path has a length limit
    started = []

    def start(phase: str) -> EngineReplay:
        replay = EngineReplay(kind, phase, registry.netloc, directory).start()
        started.append(replay)
        return replay

    yield start
    for replay in started:
        replay.stop()
    shutil.rmtree(directory, ignore_errors=True)
    assert [call for replay in started for call in replay.unrecorded] == [], "the engine was asked what the recording holds no answer for"


@pytest.fixture
def client(tmp_path, monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    made = []

    def make(registry_auth: Optional[list] = None) -> RegistryClient:
        options = RegistryOptions(timeout=5, retries=0, backoff_base=0.01, backoff_cap=0.05)
        made.append(RegistryClient(CredentialStore(registry_auth or [], str(tmp_path / "no-docker-config.json")), options))
        return made[-1]

    yield make
    for made_client in made:
        made_client.transport.session.close()


def store_of(replay: EngineReplay) -> EngineStore:
    return EngineStore(replay.docker_host, replay.kind, timeout=5, pool_size=4)


def asking(registry: InProcessRegistry, name: str, policy: str = "missing", platform: Optional[str] = None) -> PullRequest:
    return PullRequest(parse_reference(f"{registry.netloc}/{name}"), parse_platform(platform or "linux/amd64"), platform is not None, policy)


def pull(replay: EngineReplay, client: RegistryClient, requests: list, check_mode: bool = False, concurrency: int = 3) -> list:
    return EnginePuller(store_of(replay), client, concurrency, check_mode).pull(requests)


def short(digest: str) -> str:
    return digest.split(":")[-1][:12]


def manifest_reads(kind: str, repo: str, image) -> list:
    """What the real pull of an image of several layers asks the registry: nothing after dockerd, which names
    them in the image's order; after Podman, which names them as it happens to copy them, the manifest it
    pulled, by digest."""
    return [("GET", f"/v2/{repo}/manifests/{image.digest}")] if kind == "podman" else []


def statuses(result) -> list:
    """(id as docker pull prints it, status) of each layer, as the results give them."""
    return [(layer["id"], layer["status"]) for layer in result.to_dict("x")["layers"]]


def chain_ids_of(image) -> list:
    """The ChainIDs of an image's layers, from the image-spec's definition."""
    chains = []
    for layer in image.layers:
        chains.append(layer.diff_id if not chains else "sha256:" + hashlib.sha256(f"{chains[-1]} {layer.diff_id}".encode()).hexdigest())
    return chains


def engine_layer_size(kind: str, layer) -> int:
    """What each engine's image history says a layer weighs: Docker its files' bytes, Podman its tar's."""
    if kind == "docker":
        with tarfile.open(fileobj=io.BytesIO(layer.tar)) as tar:
            return sum(member.size for member in tar.getmembers())
    return len(layer.tar)


# -- pulls ---------------------------------------------------------------------------------------


def test_a_fresh_pull_reports_each_layer_as_the_engine_streamed_it(kind, engine_in, registry, client):
    engine = engine_in("empty")

    (result,) = pull(engine, client(), [asking(registry, "team/app:1")])

    assert result.error is None
    assert statuses(result) == [(short(ENGINE_BASE.digest), PULL_COMPLETE), (short(ENGINE_APP.layers[1].digest), PULL_COMPLETE)]
    # Docker says how much it downloaded of each layer; Podman's stream says nothing of sizes
    sizes = {short(layer.digest): layer.size for layer in ENGINE_APP.layers} if kind == "docker" else {}
    assert {layer.digest: layer.size for layer in result.layers} == {short(layer.digest): sizes.get(short(layer.digest)) for layer in ENGINE_APP.layers}
    assert (result.id, result.digest, result.platform) == (ENGINE_APP.id, ENGINE_APP.digest, "linux/amd64")
    assert result.changed is True and result.before is None
    assert engine.posts() == [("/images/create", {"fromImage": f"{registry.netloc}/team/app", "tag": "1"})]
    assert registry.image_requests() == manifest_reads(kind, "team/app", ENGINE_APP), "the engine pulls: the collection reads no blob"


def test_a_layer_the_engine_holds_is_reported_already_exists(kind, engine_in, registry, client):
    engine = engine_in("app")

    (result,) = pull(engine, client(), [asking(registry, "team/worker:1")])

    assert result.error is None
    assert statuses(result) == [(short(ENGINE_BASE.digest), ALREADY_EXISTS), (short(ENGINE_WORKER.layers[1].digest), PULL_COMPLETE)]
    assert (result.id, result.digest) == (ENGINE_WORKER.id, ENGINE_WORKER.digest)
    assert result.downloaded_bytes == (ENGINE_WORKER.layers[1].size if kind == "docker" else 0)


def test_two_images_of_one_task_are_pulled_in_order_and_the_second_reuses_the_base(kind, engine_in, registry, client):
    engine = engine_in("empty")

    app, worker = pull(engine, client(), [asking(registry, "team/app:1"), asking(registry, "team/worker:1")], concurrency=1)

    assert (app.error, worker.error) == (None, None)
    assert [status for _id, status in statuses(app)] == [PULL_COMPLETE, PULL_COMPLETE]
    assert statuses(worker) == [(short(ENGINE_BASE.digest), ALREADY_EXISTS), (short(ENGINE_WORKER.layers[1].digest), PULL_COMPLETE)]
    assert [query["fromImage"] for _path, query in engine.posts()] == [f"{registry.netloc}/team/app", f"{registry.netloc}/team/worker"]


@pytest.mark.parametrize(
    ("phase", "names"),
    [("app", ["team/worker:1"]), ("empty", ["team/app:1", "team/worker:1"])],
    ids=["base-held", "both-new-in-one-task"],
)
def test_check_mode_predicts_from_chain_ids_what_the_engine_then_reports(kind, engine_in, registry, client, phase, names):
    engine = engine_in(phase)
    requests = [asking(registry, name) for name in names]

    predicted = pull(engine, client(), requests, check_mode=True)

    assert engine.posts() == [] and engine.phase == phase, "check mode pulled nothing"
    real = pull(engine, client(), requests, concurrency=1)
    assert [r.error for r in predicted + real] == [None] * 2 * len(names)
    assert [statuses(r) for r in predicted] == [statuses(r) for r in real]
    assert [(r.id, r.digest, r.changed) for r in predicted] == [(r.id, r.digest, r.changed) for r in real]
    assert [r.id for r in real] == [image.id for image in (ENGINE_APP, ENGINE_WORKER)[-len(names) :]]


def test_check_mode_asks_the_registry_for_the_manifest_and_config_only(kind, engine_in, registry, client):
    engine = engine_in("app")

    (predicted,) = pull(engine, client(), [asking(registry, "team/worker:1")], check_mode=True)

    assert predicted.error is None and predicted.manifest_digest == ENGINE_WORKER.digest
    assert registry.image_requests() == [("GET", "/v2/team/worker/manifests/1"), ("GET", f"/v2/team/worker/blobs/{ENGINE_WORKER.id}")]
    assert predicted.downloaded_bytes == ENGINE_WORKER.layers[1].size and predicted.reused_bytes == ENGINE_BASE.size


def test_policy_missing_reports_a_held_image_without_asking_the_registry_or_pulling(kind, engine_in, registry, client):
    engine = engine_in("app-worker")

    app, worker = pull(engine, client(), [asking(registry, "team/app:1"), asking(registry, "team/worker:1")])

    for result, image in ((app, ENGINE_APP), (worker, ENGINE_WORKER)):
        assert result.error is None and result.changed is False
        assert (result.id, result.digest, result.before) == (image.id, image.digest, image.digest)
        # what the engine holds is named by DiffID, with the size its history gives
        assert [(layer.digest, layer.size, layer.status) for layer in result.layers] == [
            (layer.diff_id, engine_layer_size(kind, layer), ALREADY_EXISTS) for layer in image.layers
        ]
    assert registry.log == [] and engine.posts() == []


def test_policy_always_with_an_unmoved_tag_sends_one_head_and_pulls_nothing(kind, engine_in, registry, client):
    engine = engine_in("app-worker")

    (result,) = pull(engine, client(), [asking(registry, "team/worker:1", policy="always")])

    assert result.error is None and result.changed is False and result.digest == ENGINE_WORKER.digest
    assert registry.image_requests() == [("HEAD", "/v2/team/worker/manifests/1")]
    assert engine.posts() == []


def test_layers_are_reported_in_the_order_of_the_image(kind, engine_in, registry, client):
    engine = engine_in("empty")

    (result,) = pull(engine, client(), [asking(registry, "team/app:1")])

    # Podman copies blobs concurrently: its recorded stream names the app layer before the base
    assert [layer_id for layer_id, _status in statuses(result)] == [short(layer.digest) for layer in ENGINE_APP.layers]
    assert registry.image_requests() == manifest_reads(kind, "team/app", ENGINE_APP)


def test_a_manifest_the_host_cannot_read_leaves_the_layers_in_the_order_the_engine_named_them(kind, engine_in, registry, client):
    engine = engine_in("empty")
    registry.repositories.pop("team/app")  # the engine could read it, this host cannot

    (result,) = pull(engine, client(), [asking(registry, "team/app:1")])

    assert result.error is None and result.changed is True and result.id == ENGINE_APP.id
    named = [layer_id for layer_id in recorded_layer_ids(kind, "create-app") if layer_id != short(ENGINE_APP.id)]
    assert statuses(result) == [(layer_id, PULL_COMPLETE) for layer_id in named]
    assert registry.image_requests() == manifest_reads(kind, "team/app", ENGINE_APP)


@pytest.mark.parametrize(
    ("name", "reason", "said"),
    [
        ("team/app:nope", "not_found", "team/app:nope"),  # Docker answers 404; Podman says it inside a 200 stream
        ("team/broken:1", "engine_error", ENGINE_BROKEN.layers[0].digest),  # the registry served a layer whose bytes hash otherwise
    ],
    ids=["missing-tag", "corrupt-layer"],
)
def test_a_failed_engine_pull_fails_that_image_alone_with_its_reason(kind, engine_in, registry, client, name, reason, said):
    engine = engine_in("app-worker")

    failed, held = pull(engine, client(), [asking(registry, name), asking(registry, "team/worker:1")])

    assert failed.error is not None and failed.error.reason == reason
    assert failed.error.message.startswith(f"{registry.netloc}/{name}: ") and said in failed.error.message
    assert failed.to_dict(name)["failed"] is True and failed.changed is False and failed.layers == []
    assert held.error is None and held.digest == ENGINE_WORKER.digest


def test_an_explicit_platform_the_image_does_not_have_fails_platform_not_found(kind, engine_in, registry, client):
    engine = engine_in("app-worker")
    # both engines answer such a pull without an error, taking the one platform there is

    (result,) = pull(engine, client(), [asking(registry, "team/worker:1", platform="linux/s390x")])

    assert ("/images/create", {"fromImage": f"{registry.netloc}/team/worker", "tag": "1", "platform": "linux/s390x"}) in engine.posts()
    assert result.error is not None and result.error.reason == "platform_not_found", (result.platform, result.changed)


def test_a_tag_pinned_by_digest_is_pulled_by_digest_then_tagged_without_asking_the_registry_for_the_tag(kind, engine_in, registry, client):
    engine = engine_in("removed")  # the engine holds app (and so the base layer), not worker
    name = f"team/worker:1@{ENGINE_WORKER.digest}"

    (result,) = pull(engine, client(), [asking(registry, name)])

    assert result.error is None and result.changed is True
    assert (result.id, result.digest) == (ENGINE_WORKER.id, ENGINE_WORKER.digest)
    assert statuses(result) == [(short(ENGINE_BASE.digest), ALREADY_EXISTS), (short(ENGINE_WORKER.layers[1].digest), PULL_COMPLETE)]
    pinned = f"{registry.netloc}/team/worker@{ENGINE_WORKER.digest}"
    assert engine.posts() == [
        ("/images/create", {"fromImage": f"{registry.netloc}/team/worker", "tag": ENGINE_WORKER.digest}),
        (f"/images/{pinned}/tag", {"repo": f"{registry.netloc}/team/worker", "tag": "1"}),  # a pull by digest leaves no tag
    ]
    assert engine.phase == "worker-pinned" and registry.image_requests() == manifest_reads(kind, "team/worker", ENGINE_WORKER)


def test_check_mode_for_a_pinned_tag_reads_the_manifest_by_digest_and_predicts_the_real_pull(kind, engine_in, registry, client):
    engine = engine_in("removed")
    requests = [asking(registry, f"team/worker:1@{ENGINE_WORKER.digest}")]

    (predicted,) = pull(engine, client(), requests, check_mode=True)
    asked = registry.image_requests()
    (real,) = pull(engine, client(), requests)

    assert asked == [("GET", f"/v2/team/worker/manifests/{ENGINE_WORKER.digest}"), ("GET", f"/v2/team/worker/blobs/{ENGINE_WORKER.id}")]
    assert (predicted.error, real.error) == (None, None)
    assert statuses(predicted) == statuses(real)
    assert (predicted.id, predicted.digest, predicted.changed) == (real.id, real.digest, real.changed) == (ENGINE_WORKER.id, ENGINE_WORKER.digest, True)


def test_task_credentials_reach_the_engine_as_x_registry_auth(kind, engine_in, registry, client):
    engine = engine_in("empty")
    auth = [{"registry": registry.netloc, "username": "deployer", "password": "s3cret-Pa55word"}]

    (result,) = pull(engine, client(registry_auth=auth), [asking(registry, "team/app:1")])

    assert result.error is None
    (create,) = [call for call in engine.calls if call.path == "/images/create"]
    sent = json.loads(base64.urlsafe_b64decode(create.headers["X-Registry-Auth"]))
    assert sent == {"username": "deployer", "password": "s3cret-Pa55word", "serveraddress": registry.netloc}
    assert all("X-Registry-Auth" not in call.headers for call in engine.calls if call is not create)


# -- the store -----------------------------------------------------------------------------------


def test_the_engine_names_itself_and_the_api_version_is_negotiated(kind, engine_in):
    engine = engine_in("empty")
    store = store_of(engine)

    described = store.describe()
    store.images()

    version = recorded_body(kind, "version")
    assert described == {"type": kind, "docker_host": engine.docker_host, "engine_version": version["Version"], "api_version": "1.41"}
    assert store.client.info().name == kind
    assert {call.version for call in engine.calls if call.path != "/version"} == {"1.41"}


def test_images_lists_each_tag_with_its_id_digest_platform_layers_and_containers(kind, engine_in, registry):
    engine = engine_in("in-use")
    container = recorded_body(kind, "create-container")["Id"]

    records = {record.reference.familiar: record for record in store_of(engine).images()}

    assert sorted(records) == [f"{registry.netloc}/team/app:1", f"{registry.netloc}/team/worker:1"]
    for name, image in (("app", ENGINE_APP), ("worker", ENGINE_WORKER)):
        record = records[f"{registry.netloc}/team/{name}:1"]
        assert (record.id, record.digest, str(record.platform), record.created) == (image.id, image.digest, "linux/amd64", image.created)
        assert [(layer.digest, layer.chain_id, layer.size) for layer in record.layers] == [
            (layer.diff_id, chain, engine_layer_size(kind, layer)) for layer, chain in zip(image.layers, chain_ids_of(image))
        ]
    assert records[f"{registry.netloc}/team/app:1"].containers == [{"id": container[:12], "name": "web", "state": "created"}]
    assert records[f"{registry.netloc}/team/worker:1"].containers == []


@pytest.mark.parametrize(
    ("phase", "images"), [("empty", ()), ("app", (ENGINE_APP,)), ("app-worker", (ENGINE_APP, ENGINE_WORKER))], ids=["empty", "app", "app-and-worker"]
)
def test_present_chain_ids_are_those_of_every_layer_the_engine_holds(kind, engine_in, phase, images):
    engine = engine_in(phase)

    held = store_of(engine).present_chain_ids()

    assert held == {chain for image in images for chain in chain_ids_of(image)}


def test_a_removal_plan_deletes_only_the_layers_no_other_image_uses(kind, engine_in, registry):
    engine = engine_in("in-use")

    plan = store_of(engine).plan_removal(RemovalRequest(names=[f"{registry.netloc}/team/worker:1"]))

    own, base = chain_ids_of(ENGINE_WORKER)[1], chain_ids_of(ENGINE_WORKER)[0]
    assert plan.untagged == [f"{registry.netloc}/team/worker:1"] and plan.deleted_images == [ENGINE_WORKER.id]
    assert plan.to_dict()["deleted_layers"] == [{"digest": own, "size": engine_layer_size(kind, ENGINE_WORKER.layers[1])}]
    assert plan.to_dict()["kept_layers"] == [{"digest": base, "size": engine_layer_size(kind, ENGINE_BASE), "images": [f"{registry.netloc}/team/app:1"]}]
    assert engine.posts() == [], "a plan removes nothing"


def test_removing_an_image_a_container_uses_is_refused_in_use_before_anything_is_deleted(kind, engine_in, registry):
    engine = engine_in("in-use")
    container = recorded_body(kind, "create-container")["Id"]

    with pytest.raises(DockyardError) as caught:
        store_of(engine).remove(RemovalRequest(names=[f"{registry.netloc}/team/app:1"]), check_mode=False)

    assert caught.value.reason == "in_use" and "web" in caught.value.message and "force" in caught.value.message
    assert caught.value.details["containers"] == [{"id": container[:12], "name": "web", "state": "created", "image": f"{registry.netloc}/team/app:1"}]
    assert engine.posts() == []


def test_a_removal_untags_through_the_engine_and_the_engine_then_lists_what_is_left(kind, engine_in, registry):
    engine = engine_in("in-use")
    store = store_of(engine)

    plan = store.remove(RemovalRequest(names=[f"{registry.netloc}/team/worker:1"]), check_mode=False)

    assert plan.untagged == [f"{registry.netloc}/team/worker:1"] and plan.changed is True
    assert engine.posts() == [(f"/images/{registry.netloc}/team/worker:1", {"force": "0", "noprune": "0"})]
    assert [(record.reference.familiar, record.id) for record in store.images()] == [(f"{registry.netloc}/team/app:1", ENGINE_APP.id)]


def test_an_image_pulled_by_digest_alone_is_found_by_its_repository_and_digest(kind, engine_in, registry):
    engine = engine_in("worker-by-digest")  # Docker lists it with no tag; Podman with the digest where the tag would be

    records = store_of(engine).images()
    found = select_images(records, f"{registry.netloc}/team/worker@{ENGINE_WORKER.digest}")

    assert [(record.id, record.digest) for record in found] == [(ENGINE_WORKER.id, ENGINE_WORKER.digest)]
    assert select_images(records, f"{registry.netloc}/team/worker:1") == []
    assert [record.id for record in select_images(records, ENGINE_WORKER.id[len("sha256:") :][:12])] == [ENGINE_WORKER.id]


def test_the_store_opened_for_an_engine_is_named_for_the_engine_that_answers(kind, engine_in):
    engine = engine_in("empty")

    asked_docker = open_store("docker", StoreOptions(docker_host=engine.docker_host, timeout=5))
    found = open_store("auto", StoreOptions(docker_host=engine.docker_host, timeout=5))

    assert (asked_docker.name, found.name) == (kind, kind)
    assert found.describe()["docker_host"] == engine.docker_host


@pytest.mark.parametrize(
    ("kind", "docker_host_variable", "euid", "runtime_dir", "expected"),
    [
        ("docker", None, 1000, None, "unix:///var/run/docker.sock"),
        ("docker", "unix:///srv/docker.sock", 1000, None, "unix:///srv/docker.sock"),
        ("podman", "unix:///srv/docker.sock", 0, None, "unix:///run/podman/podman.sock"),
        ("podman", None, 1000, "/run/user/1000", "unix:///run/user/1000/podman/podman.sock"),
        ("podman", None, 1000, None, "unix:///run/user/1000/podman/podman.sock"),
    ],
    ids=["docker-default", "docker-host-variable", "podman-root", "podman-rootless", "podman-rootless-no-runtime-dir"],
)
def test_the_default_engine_address(monkeypatch, kind, docker_host_variable, euid, runtime_dir, expected):
    for name, value in (("DOCKER_HOST", docker_host_variable), ("XDG_RUNTIME_DIR", runtime_dir)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, "geteuid", lambda: euid)

    assert default_docker_host(kind) == expected


def test_an_engine_http_error_keeps_the_engine_message_and_gets_its_reason(kind, engine_in, registry):
    engine = engine_in("in-use")
    client = EngineClient(engine.docker_host, timeout=5)

    with pytest.raises(DockyardError) as caught:
        client.call("DELETE", f"/images/{registry.netloc}/team/app:1", params={"force": "0", "noprune": "0"})
    missing = client.inspect_image(f"{registry.netloc}/team/app:nope")

    refusal = engine.live(recorded_body(kind, "delete-in-use")["message"])
    assert caught.value.reason == "in_use" and caught.value.details == {"engine_status": 409}
    assert caught.value.message.endswith(f"(HTTP 409): {refusal}")
    assert missing is None


def test_an_engine_that_does_not_answer_is_unreachable(tmp_path):
    client = EngineClient(f"unix://{tmp_path}/no-engine.sock", timeout=2)

    with pytest.raises(DockyardError) as caught:
        client.info()

    assert client.ping() is False
    assert caught.value.reason == "unreachable" and f"{tmp_path}/no-engine.sock" in caught.value.message


@pytest.mark.parametrize("docker_host", ["tcp://127.0.0.1:2375", "ssh://user@host", "unix://", "/var/run/docker.sock"])
def test_a_docker_host_that_is_not_a_unix_socket_is_refused(docker_host):
    with pytest.raises(DockyardError) as caught:
        EngineClient(docker_host)

    assert caught.value.reason == "invalid_argument" and "unix socket" in caught.value.message
