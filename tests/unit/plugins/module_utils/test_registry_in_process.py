"""The registry client against an in-process registry whose every answer a test scripts.

Each test says what the registry answers, in order, and states what the client must do: answer
challenges, wait out a short Retry-After, resume a broken blob with Range, fall through a failing
mirror, keep credentials on their own origin, give up on a registry that is too slow, and end every
failure in a DockyardError with its reason. A second server on 127.0.0.2 stands for another host.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore
from ansible_collections.dockyard.images.plugins.module_utils._blob import MemorySink
from ansible_collections.dockyard.images.plugins.module_utils._endpoints import parse_endpoint_address
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import ACCEPT, DOCKER_MANIFEST, INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, Descriptor
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._transport import MAX_REDIRECTS, MIN_RATE, RegistryOptions
from support.images import LAYER_TYPES, Image, Index, digest_of, make_layer, random_layer

USER, PASSWORD = "alice", "s3cret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="registry"'}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


# -- a registry that answers what the test says -------------------------------------------------


@dataclass
class Answer:
    """One canned answer, and how the server misbehaves while it sends it."""

    status: int = 200
    headers: dict = field(default_factory=dict)  # a Content-Length given here overrides the body's true length
    body: bytes = b""
    delay: float = 0.0  # seconds of silence before the status line
    head_drip: float = 0.0  # the status line and headers go out one byte every `head_drip` seconds
    body_pieces: Optional[tuple] = None  # (bytes, seconds): the body goes out in pieces this size, this far apart
    cut_after: Optional[int] = None  # send this many bytes of the body, then close the connection


@dataclass
class Request:
    """What the server received: method, path, query, headers and body."""

    host: str
    method: str
    path: str
    query: dict
    headers: Message
    body: bytes

    @property
    def authorization(self) -> Optional[str]:
        return self.headers.get("Authorization")


def ok(body: bytes = b"", **headers) -> Answer:
    return Answer(200, {key.replace("_", "-"): value for key, value in headers.items()}, body)


def errors(*codes: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": code.lower()} for code in codes]}).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still dripping bytes at a client that gave up must not hold the teardown

    def handle_error(self, request, client_address):
        pass  # clients that hang up mid-answer are what these tests are about


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    registry: ScriptedRegistry

    def log_message(self, *args):
        pass

    def serve(self):
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.registry.log.append(Request(self.registry.host, self.command, parts.path, parse_qs(parts.query), self.headers, body))
        try:
            self.send(self.registry.next_answer(parts.path))
        except OSError:
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = serve

    def send(self, answer: Answer) -> None:
        stopping = self.registry.stopping
        if answer.delay and stopping.wait(answer.delay):
            return
        try:
            phrase = HTTPStatus(answer.status).phrase
        except ValueError:
            phrase = "Whatever"
        headers = {"Content-Length": str(len(answer.body)), **answer.headers}
        head = (f"HTTP/1.1 {answer.status} {phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode("latin-1")
        self.drip(head, 1, answer.head_drip) if answer.head_drip else self.wfile.write(head)
        body = b"" if self.command == "HEAD" else answer.body
        if answer.cut_after is not None:
            body = body[: answer.cut_after]
            self.close_connection = True
        if answer.body_pieces:
            self.drip(body, *answer.body_pieces)
        else:
            self.wfile.write(body)
        if answer.cut_after is not None:
            self.connection.shutdown(socket.SHUT_RDWR)

    def drip(self, data: bytes, size: int, interval: float) -> None:
        for start in range(0, len(data), size):
            if start and self.registry.stopping.wait(interval):
                return
            self.wfile.write(data[start : start + size])


class ScriptedRegistry:
    """An HTTP/1.1 server on `host`: each path answers from its list in order, the last answer repeating; every request is logged."""

    def __init__(self, host: str):
        self.host = host
        self.script = {}
        self.log = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.server = _Server((host, 0), type("Handler", (_Handler,), {"registry": self}))
        self.port = self.server.server_address[1]
        self.netloc = f"{host}:{self.port}"
        self.url = f"http://{self.netloc}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def on(self, path: str, *answers: Answer) -> None:
        self.script[path] = list(answers)

    def next_answer(self, path: str) -> Answer:
        with self._lock:
            answers = self.script.get(path)
            if not answers:
                return ok(b"{}", Content_Type="application/json") if path == "/v2/" else Answer(404)
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def requests(self, path: Optional[str] = None, method: Optional[str] = None) -> list:
        return [r for r in self.log if (path is None or r.path == path) and (method is None or r.method == method)]

    def start(self) -> ScriptedRegistry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def registry():
    """The registry under test, on 127.0.0.1."""
    server = ScriptedRegistry("127.0.0.1").start()
    yield server
    server.stop()


@pytest.fixture
def elsewhere():
    """Another origin (another host, for the credential rule), on 127.0.0.2."""
    server = ScriptedRegistry("127.0.0.2").start()
    yield server
    server.stop()


@pytest.fixture
def make_client(tmp_path, monkeypatch):
    """Clients with instant backoff, the given registry_auth, and no docker config."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    made = []

    def make(*, auth_for: Optional[ScriptedRegistry] = None, mirrors: Optional[dict] = None, timeout: float = 5.0, retries: int = 2) -> RegistryClient:
        registry_auth = [{"registry": auth_for.netloc, "username": USER, "password": PASSWORD}] if auth_for else []
        options = RegistryOptions(timeout=timeout, retries=retries, backoff_base=0.01, backoff_cap=0.05, mirrors=mirrors or {})
        client = RegistryClient(CredentialStore(registry_auth, str(tmp_path / "no-such-config.json")), options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.transport.session.close()


# -- images the registry serves -----------------------------------------------------------------

LAYER = random_layer(48 * 1024, "registry-client")
IMAGE = Image(layers=[LAYER])
INDEX = Index(images=[IMAGE, Image(layers=[make_layer({"etc/arm": b"arm"})], architecture="arm64")])
BLOB = Descriptor(LAYER_TYPES[DOCKER_MANIFEST], LAYER.digest, LAYER.size)
MANIFEST_PATH = "/v2/team/app/manifests/1"
BLOB_PATH = f"/v2/team/app/blobs/{LAYER.digest}"


def image_manifest() -> Answer:
    return ok(IMAGE.manifest, Content_Type=DOCKER_MANIFEST, Docker_Content_Digest=IMAGE.digest)


def reference_on(server: ScriptedRegistry, tag: str = "1"):
    return parse_reference(f"{server.netloc}/team/app:{tag}")


def fetch(client: RegistryClient, server: ScriptedRegistry) -> MemorySink:
    sink = MemorySink(BLOB.digest)
    client.for_reference(reference_on(server)).fetch_blob(reference_on(server), BLOB, sink)
    return sink


def failure(call, *args) -> DockyardError:
    """The DockyardError `call(*args)` raises; any other exception fails the test."""
    with pytest.raises(DockyardError) as caught:
        call(*args)
    return caught.value


def failure_within(seconds: float, call, *args) -> DockyardError:
    """Like `failure`, but a call still running after `seconds` fails the test instead of hanging it: no deadline held."""
    outcome = []

    def run():
        try:
            call(*args)
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread, which judges it
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still running after {seconds} s: the transfer has no deadline")
    (exc,) = outcome
    if exc is None:
        pytest.fail("the call succeeded")
    if not isinstance(exc, DockyardError):
        raise exc
    return exc


# -- authentication -----------------------------------------------------------------------------


def test_a_bearer_challenge_is_answered_with_a_token_that_later_requests_of_the_repository_reuse(registry, make_client):
    challenge = f'Bearer realm="{registry.url}/token",service="svc",scope="repository:team/app:pull"'
    registry.on("/token", ok(json.dumps({"token": "tok-1", "expires_in": 300}).encode(), Content_Type="application/json"))
    registry.on(MANIFEST_PATH, Answer(401, {"WWW-Authenticate": challenge}), ok(INDEX.manifest, Content_Type=OCI_INDEX, Docker_Content_Digest=INDEX.digest))
    registry.on(f"/v2/team/app/manifests/{IMAGE.digest}", image_manifest())
    registry.on(f"/v2/team/app/blobs/{IMAGE.id}", ok(IMAGE.config))
    client, reference = make_client(auth_for=registry), reference_on(registry)

    resolved = client.for_reference(reference).resolve(reference, parse_platform("linux/amd64"), None, lambda digest: None)
    config = client.for_reference(reference).fetch_blob_bytes(reference, resolved.config)

    assert (resolved.digest, resolved.manifest_digest, config) == (INDEX.digest, IMAGE.digest, IMAGE.config)
    (token_request,) = registry.requests("/token")
    assert token_request.authorization == BASIC
    assert token_request.query == {"service": ["svc"], "scope": ["repository:team/app:pull"], "account": [USER]}
    first, retried = registry.requests(MANIFEST_PATH)
    assert first.authorization is None and retried.authorization == "Bearer tok-1"
    later = registry.requests(f"/v2/team/app/manifests/{IMAGE.digest}") + registry.requests(f"/v2/team/app/blobs/{IMAGE.id}")
    assert [r.authorization for r in later] == ["Bearer tok-1", "Bearer tok-1"]
    for request in registry.requests(MANIFEST_PATH) + registry.requests(f"/v2/team/app/manifests/{IMAGE.digest}"):
        assert {t.strip() for t in request.headers["Accept"].split(",")} == set(INDEX_TYPES + MANIFEST_TYPES) == set(ACCEPT.split(", "))


def test_a_basic_challenge_is_answered_once_with_the_registry_credentials(registry, make_client):
    registry.on(MANIFEST_PATH, Answer(401, BASIC_CHALLENGE), image_manifest())
    client, reference = make_client(auth_for=registry), reference_on(registry)

    manifest = client.for_reference(reference).get_manifest(reference, "1")

    assert manifest.digest == IMAGE.digest
    assert [r.authorization for r in registry.requests(MANIFEST_PATH)] == [None, BASIC]


@pytest.mark.parametrize("with_credentials", [True, False], ids=["refused-credentials", "no-credentials"])
def test_a_basic_challenge_that_persists_is_unauthorized(registry, make_client, with_credentials):
    registry.on(MANIFEST_PATH, Answer(401, BASIC_CHALLENGE, errors("UNAUTHORIZED")))
    client, reference = make_client(auth_for=registry if with_credentials else None), reference_on(registry)

    error = failure(client.for_reference(reference).get_manifest, reference, "1")

    assert error.reason == "unauthorized"
    assert [r.authorization for r in registry.requests(MANIFEST_PATH)] == ([None, BASIC] if with_credentials else [None])


# -- rate limits --------------------------------------------------------------------------------


def test_a_short_retry_after_is_waited_out(registry, make_client):
    too_many = Answer(429, {"Retry-After": "0"}, errors("TOOMANYREQUESTS"))
    registry.on(MANIFEST_PATH, too_many, too_many, image_manifest())
    client, reference = make_client(retries=2), reference_on(registry)

    assert client.for_reference(reference).get_manifest(reference, "1").digest == IMAGE.digest
    assert len(registry.requests(MANIFEST_PATH)) == 3


def test_a_retry_after_beyond_the_maximum_fails_at_once_and_says_how_long(registry, make_client):
    registry.on(MANIFEST_PATH, Answer(429, {"Retry-After": "3600"}, errors("TOOMANYREQUESTS")))
    client, reference = make_client(retries=4), reference_on(registry)
    started = time.monotonic()

    error = failure(client.for_reference(reference).get_manifest, reference, "1")

    assert error.reason == "rate_limited" and error.details["retry_after"] == "3600"
    assert len(registry.requests(MANIFEST_PATH)) == 1 and time.monotonic() - started < 2


def test_a_retry_after_longer_than_the_timeout_fails_at_once(registry, make_client):
    registry.on(MANIFEST_PATH, Answer(429, {"Retry-After": "20"}, errors("TOOMANYREQUESTS")))
    client, reference = make_client(retries=4, timeout=5), reference_on(registry)
    started = time.monotonic()

    error = failure(client.for_reference(reference).get_manifest, reference, "1")

    assert error.reason == "rate_limited" and error.details["retry_after"] == "20", "the task said how long it waits: 5 s"
    assert len(registry.requests(MANIFEST_PATH)) == 1 and time.monotonic() - started < 2


# -- every bad answer has its reason ------------------------------------------------------------


@pytest.mark.parametrize("label", ["sha256:../../../etc/passwd", "sha256:" + "0" * 63, "md5:" + "0" * 32, ""])
def test_a_head_that_labels_the_manifest_with_no_digest_is_the_registrys_fault(registry, make_client, label):
    registry.on(MANIFEST_PATH, Answer(200, {"Content-Type": DOCKER_MANIFEST, "Docker-Content-Digest": label}))
    client, reference = make_client(), reference_on(registry)

    error = failure(client.for_reference(reference).head_manifest, reference)

    assert error.reason == "unsupported_media_type" and registry.netloc in error.message and "not a digest" in error.message


def test_a_server_error_is_retried_then_unreachable(registry, make_client):
    registry.on(MANIFEST_PATH, Answer(500, body=b"oops"))
    client, reference = make_client(retries=3), reference_on(registry)

    assert failure(client.for_reference(reference).get_manifest, reference, "1").reason == "unreachable"
    assert len(registry.requests(MANIFEST_PATH)) == 1 + 3


# a pull-through cache wraps what its upstream said in an UNKNOWN error's detail
PULL_THROUGH_NOT_FOUND = json.dumps({"errors": [{"code": "UNKNOWN", "detail": {"errors": [{"code": "MANIFEST_UNKNOWN"}]}}]}).encode()


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (403, b"", "denied"),
        (401, b"", "unauthorized"),
        (404, errors("MANIFEST_UNKNOWN"), "not_found"),
        (404, errors("NAME_UNKNOWN"), "not_found"),
        (410, b"", "not_found"),
        (400, errors("DENIED"), "denied"),  # the registry's code wins over the status
        (429, errors("TOOMANYREQUESTS"), "rate_limited"),  # no Retry-After: backoff, then give up
        (502, PULL_THROUGH_NOT_FOUND, "not_found"),
        (404, b"<html><body>Not Found</body></html>", "not_found"),
        (403, b'["DENIED"]', "denied"),
        (404, b'{"errors": "none"}', "not_found"),
        (404, b'{"errors": [1, null, {"code": 7}]}', "not_found"),
        (404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"', "not_found"),
        (403, b"[" * 100000, "denied"),
        (404, b"x" * (3 * 1024 * 1024), "not_found"),
        (403, b"\xff\xfe\x00garbage", "denied"),
    ],
    ids=[
        "403",
        "401-without-challenge",
        "manifest-unknown",
        "name-unknown",
        "410",
        "code-over-status",
        "429-without-retry-after",
        "wrapped-upstream-code",
        "html",
        "json-list",
        "errors-not-a-list",
        "errors-not-objects",
        "truncated-json",
        "deeply-nested",
        "huge",
        "not-utf8",
    ],
)
def test_every_error_answer_becomes_its_reason_whatever_its_body(registry, make_client, status, body, reason):
    registry.on(MANIFEST_PATH, Answer(status, {"Content-Type": "application/json"}, body))
    client, reference = make_client(), reference_on(registry)

    error = failure(client.for_reference(reference).get_manifest, reference, "1")

    assert error.reason == reason
    assert f"HTTP {status}" in error.message


# -- blobs: resume, restart, refuse -------------------------------------------------------------

HALF = LAYER.size // 2
FIRST_HALF_THEN_CLOSED = Answer(200, body=LAYER.blob, cut_after=HALF)  # Content-Length promises all of it
FIRST_HALF_DECLARED = Answer(200, body=LAYER.blob[:HALF])  # a Content-Length that lies about the blob


@pytest.mark.parametrize("broken", [FIRST_HALF_THEN_CLOSED, FIRST_HALF_DECLARED], ids=["connection-closed", "short-body"])
def test_a_blob_that_breaks_off_is_resumed_with_range_and_verified(registry, make_client, broken):
    rest = Answer(206, {"Content-Range": f"bytes {HALF}-{LAYER.size - 1}/{LAYER.size}"}, LAYER.blob[HALF:])
    registry.on(BLOB_PATH, broken, rest)

    sink = fetch(make_client(), registry)

    assert bytes(sink.data) == LAYER.blob and sink.digest() == LAYER.digest
    assert [r.headers.get("Range") for r in registry.requests(BLOB_PATH)] == [None, f"bytes={HALF}-"]


@pytest.mark.parametrize(
    "content_range",
    [f"bytes 0-{LAYER.size - 1}/{LAYER.size}", f"bytes {HALF}-{LAYER.size - 1}/{LAYER.size + 1}", f"bytes {HALF}-{LAYER.size - 1}/*", "nonsense"],
    ids=["wrong-start", "wrong-total", "unknown-total", "unparsable"],
)
def test_a_range_answer_that_does_not_continue_the_partial_restarts_from_zero(registry, make_client, content_range):
    registry.on(BLOB_PATH, FIRST_HALF_THEN_CLOSED, Answer(206, {"Content-Range": content_range}, LAYER.blob), ok(LAYER.blob))

    sink = fetch(make_client(), registry)

    assert bytes(sink.data) == LAYER.blob and sink.digest() == LAYER.digest
    assert [r.headers.get("Range") for r in registry.requests(BLOB_PATH)] == [None, f"bytes={HALF}-", None]


def test_a_full_answer_to_a_range_request_replaces_the_partial(registry, make_client):
    registry.on(BLOB_PATH, FIRST_HALF_THEN_CLOSED, ok(LAYER.blob))

    sink = fetch(make_client(), registry)

    assert bytes(sink.data) == LAYER.blob and sink.digest() == LAYER.digest


def test_a_blob_longer_than_its_descriptor_is_refused_and_nothing_is_kept(registry, make_client):
    registry.on(BLOB_PATH, ok(LAYER.blob + b"and then some"))
    sink = MemorySink(BLOB.digest)
    reference = reference_on(registry)

    error = failure(make_client().for_reference(reference).fetch_blob, reference, BLOB, sink)

    assert error.reason == "digest_mismatch" and "more than" in error.message
    assert sink.offset == 0 and not sink.data


def test_a_blob_whose_bytes_hash_otherwise_is_refused(registry, make_client):
    registry.on(BLOB_PATH, ok(bytes(reversed(LAYER.blob))))
    sink = MemorySink(BLOB.digest)
    reference = reference_on(registry)

    error = failure(make_client().for_reference(reference).fetch_blob, reference, BLOB, sink)

    assert error.reason == "digest_mismatch" and sink.offset == 0


# -- mirrors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mirror_answer", "warned"),
    [
        (Answer(500, body=b"down"), True),
        (Answer(401, BASIC_CHALLENGE), True),  # the mirror asks for credentials: the upstream's are not its to have
        (Answer(404, body=errors("MANIFEST_UNKNOWN")), False),  # a mirror may lack an image: that is no fault
    ],
    ids=["mirror-500", "mirror-401", "mirror-404"],
)
def test_a_failing_mirror_falls_through_to_the_upstream_which_alone_gets_its_credentials(registry, elsewhere, make_client, mirror_answer, warned):
    elsewhere.on(MANIFEST_PATH, mirror_answer)
    registry.on(MANIFEST_PATH, Answer(401, BASIC_CHALLENGE), image_manifest())
    mirrors = {registry.netloc: (parse_endpoint_address(elsewhere.url, "mirror"),)}
    client, reference = make_client(auth_for=registry, mirrors=mirrors), reference_on(registry)

    assert client.for_reference(reference).get_manifest(reference, "1").digest == IMAGE.digest

    assert elsewhere.requests(MANIFEST_PATH), "the mirror was asked first"
    assert [r.authorization for r in elsewhere.log] == [None] * len(elsewhere.log)
    assert registry.requests(MANIFEST_PATH)[-1].authorization == BASIC
    assert any(elsewhere.netloc in warning for warning in client.warnings) is warned


def test_a_mirror_that_serves_the_image_spares_the_upstream(registry, elsewhere, make_client):
    elsewhere.on(MANIFEST_PATH, image_manifest())
    mirrors = {registry.netloc: (parse_endpoint_address(elsewhere.url, "mirror"),)}
    client, reference = make_client(auth_for=registry, mirrors=mirrors), reference_on(registry)

    assert client.for_reference(reference).get_manifest(reference, "1").digest == IMAGE.digest
    assert registry.requests(MANIFEST_PATH) == [] and client.warnings == []


# -- credentials stay on their origin -----------------------------------------------------------


@pytest.mark.parametrize("same_origin", [True, False], ids=["same-origin", "other-origin"])
def test_a_blob_redirect_carries_credentials_only_to_the_registry_own_origin(registry, elsewhere, make_client, same_origin):
    target = registry if same_origin else elsewhere
    target.on("/storage/blob", ok(LAYER.blob))
    registry.on(BLOB_PATH, Answer(401, BASIC_CHALLENGE), Answer(307, {"Location": f"{target.url}/storage/blob?sig=x"}))

    sink = fetch(make_client(auth_for=registry), registry)

    assert sink.digest() == LAYER.digest
    assert [r.authorization for r in registry.requests(BLOB_PATH)] == [None, BASIC]
    assert [r.authorization for r in target.requests("/storage/blob")] == [BASIC if same_origin else None]


def test_a_catalog_link_to_another_origin_is_followed_without_credentials(registry, elsewhere, make_client):
    first_page = ok(json.dumps({"repositories": ["a"]}).encode(), Link=f'<{elsewhere.url}/v2/_catalog?last=a>; rel="next"')
    registry.on("/v2/_catalog", Answer(401, BASIC_CHALLENGE), first_page)
    elsewhere.on("/v2/_catalog", ok(json.dumps({"repositories": ["b"]}).encode()))

    assert make_client(auth_for=registry).registry(registry.netloc).catalog() == ["a", "b"]

    assert [r.authorization for r in registry.requests("/v2/_catalog")] == [None, BASIC]
    (second_page,) = elsewhere.requests("/v2/_catalog")
    assert second_page.authorization is None and second_page.query == {"last": ["a"]}


def test_a_relative_tags_link_stays_on_the_origin_and_keeps_its_credentials(registry, make_client):
    tags_path = "/v2/team/app/tags/list"
    first_page = ok(json.dumps({"name": "team/app", "tags": ["1"]}).encode(), Link=f'<{tags_path}?last=1&n=1>; rel="next"')
    second_page = ok(json.dumps({"name": "team/app", "tags": ["2"]}).encode())
    registry.on(tags_path, Answer(401, BASIC_CHALLENGE), first_page, second_page)
    reference = reference_on(registry)

    assert make_client(auth_for=registry).for_reference(reference).list_tags(reference, page_size=1) == ["1", "2"]
    assert [(r.authorization, r.query) for r in registry.requests(tags_path)] == [
        (None, {"n": ["1"]}),
        (BASIC, {"n": ["1"]}),
        (BASIC, {"last": ["1"], "n": ["1"]}),
    ]


@pytest.mark.parametrize("same_origin", [True, False], ids=["same-origin", "other-origin"])
def test_an_upload_location_gets_the_destination_credentials_only_on_its_own_origin(registry, elsewhere, make_client, same_origin):
    target = registry if same_origin else elsewhere
    uploads = "/v2/team/app/blobs/uploads/"
    registry.on(uploads, Answer(401, BASIC_CHALLENGE), Answer(202, {"Location": f"{target.url}/upload/1"}))
    target.on("/upload/1", Answer(201, {"Docker-Content-Digest": LAYER.digest}))
    destination = make_client(auth_for=registry).destination(registry.netloc)

    destination.upload_blob("team/app", LAYER.digest, LAYER.size, io.BytesIO(LAYER.blob))

    assert [r.authorization for r in registry.requests(uploads, "POST")] == [None, BASIC]
    (put,) = target.requests("/upload/1", "PUT")
    assert put.authorization == (BASIC if same_origin else None)
    assert put.query == {"digest": [LAYER.digest]} and put.body == LAYER.blob


# -- deadlines ----------------------------------------------------------------------------------


def test_headers_that_trickle_in_fail_unreachable_within_the_timeout(registry, make_client):
    registry.on(MANIFEST_PATH, Answer(200, {"Content-Type": DOCKER_MANIFEST}, IMAGE.manifest, head_drip=0.4))
    client, reference = make_client(timeout=1, retries=2), reference_on(registry)
    started = time.monotonic()

    error = failure_within(10, client.for_reference(reference).get_manifest, reference, "1")

    assert error.reason == "unreachable"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("what", ["manifest", "blob"])
def test_a_body_that_trickles_in_fails_unreachable_within_the_timeout(registry, make_client, what):
    trickle = (1, 0.4)
    registry.on(MANIFEST_PATH, Answer(200, {"Content-Type": DOCKER_MANIFEST}, IMAGE.manifest, body_pieces=trickle))
    registry.on(BLOB_PATH, Answer(200, body=LAYER.blob, body_pieces=trickle))
    client, reference = make_client(timeout=1, retries=2), reference_on(registry)
    sink = MemorySink(BLOB.digest)
    started = time.monotonic()

    if what == "manifest":
        error = failure_within(10, client.for_reference(reference).get_manifest, reference, "1")
    else:
        error = failure_within(10, client.for_reference(reference).fetch_blob, reference, BLOB, sink)

    assert error.reason == "unreachable" and "slower than" in error.message
    assert time.monotonic() - started < 5
    if what == "blob":
        assert 0 < sink.offset < LAYER.size, "the partial is kept for a resume"


def test_a_slow_registry_above_the_minimum_rate_is_waited_for(registry, make_client):
    blob = LAYER.blob[: 3 * MIN_RATE]
    descriptor = Descriptor(BLOB.media_type, digest_of(blob), len(blob))
    registry.on(f"/v2/team/app/blobs/{descriptor.digest}", Answer(200, body=blob, delay=0.5, body_pieces=(MIN_RATE // 2, 0.25)))
    client, reference = make_client(timeout=1, retries=0), reference_on(registry)
    sink = MemorySink(descriptor.digest)

    client.for_reference(reference).fetch_blob(reference, descriptor, sink)

    assert bytes(sink.data) == blob


# -- redirects ----------------------------------------------------------------------------------


def test_a_redirect_loop_is_refused(registry, make_client):
    registry.on(MANIFEST_PATH, Answer(302, {"Location": MANIFEST_PATH}))
    client, reference = make_client(), reference_on(registry)

    error = failure(client.for_reference(reference).get_manifest, reference, "1")

    assert error.reason == "unreachable" and "redirects" in error.message
    assert len(registry.requests(MANIFEST_PATH)) == MAX_REDIRECTS + 1


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/blob", "gopher://127.0.0.1:70/"])
def test_a_redirect_out_of_http_is_refused(registry, make_client, location):
    registry.on(BLOB_PATH, Answer(307, {"Location": location}))
    reference = reference_on(registry)

    error = failure(make_client().for_reference(reference).fetch_blob, reference, BLOB, MemorySink(BLOB.digest))

    assert error.reason == "unreachable" and location.split(":")[0] in error.message


def test_a_redirect_body_is_never_read(registry, make_client):
    """A redirect whose body never ends is followed at once: no byte of its body is waited for."""
    registry.on(BLOB_PATH, Answer(307, {"Location": "/storage/blob", "Content-Length": str(1 << 40)}, b"x" * 1024, body_pieces=(1, 0.5)))
    registry.on("/storage/blob", ok(LAYER.blob))
    started = time.monotonic()

    sink = fetch(make_client(timeout=2), registry)

    assert sink.digest() == LAYER.digest and time.monotonic() - started < 2


@pytest.mark.parametrize("location", ["http://[::1", "http://127.0.0.2:5202\\@127.0.0.1:5000/v2/"])
def test_a_redirect_to_an_unreadable_or_ambiguous_url_is_refused(registry, make_client, location):
    registry.on(BLOB_PATH, Answer(307, {"Location": location}))
    reference = reference_on(registry)

    error = failure(make_client().for_reference(reference).fetch_blob, reference, BLOB, MemorySink(BLOB.digest))

    assert error.reason == "unreachable"


def test_a_manifest_that_arrives_above_the_minimum_rate_but_not_within_the_timeout_is_stopped(registry, make_client):
    registry.on(MANIFEST_PATH, Answer(200, {"Content-Type": DOCKER_MANIFEST}, IMAGE.manifest + b" " * 8192, body_pieces=(2 * MIN_RATE, 0.5)))
    client, reference = make_client(timeout=1), reference_on(registry)

    error = failure_within(5, client.for_reference(reference).get_manifest, reference, "1")

    assert error.reason == "unreachable" and "whole within" in error.message


def test_a_listing_that_never_ends_is_stopped(registry, make_client, monkeypatch):
    from ansible_collections.dockyard.images.plugins.module_utils import _registry

    monkeypatch.setattr(_registry, "MAX_PAGES", 5)
    pages = [ok(json.dumps({"repositories": [f"r{n}"]}).encode(), Link=f'</v2/_catalog?last=r{n}>; rel="next"') for n in range(10)]
    registry.on("/v2/_catalog", *pages)

    error = failure(make_client().registry(registry.netloc).catalog)

    assert "more pages" in error.message and len(registry.requests("/v2/_catalog")) == 5


def test_an_error_message_never_repeats_the_credentials_the_registry_was_sent(registry, make_client):
    echo = json.dumps({"errors": [{"code": "DENIED", "message": f"you sent {BASIC} and {PASSWORD}"}]}).encode()
    registry.on(MANIFEST_PATH, Answer(401, BASIC_CHALLENGE), Answer(403, {}, echo))
    client, reference = make_client(auth_for=registry), reference_on(registry)

    error = failure(client.for_reference(reference).get_manifest, reference, "1")

    assert error.reason == "denied" and PASSWORD not in error.message and BASIC.split()[1] not in error.message


def test_bytes_from_a_mirror_that_failed_are_not_resumed_from_the_upstream(registry, elsewhere, make_client):
    elsewhere.on(BLOB_PATH, Answer(200, {"Content-Length": str(LAYER.size)}, b"\0" * (LAYER.size // 2), cut_after=LAYER.size // 2))
    registry.on(BLOB_PATH, ok(LAYER.blob))
    client = make_client(mirrors={registry.netloc: (parse_endpoint_address(elsewhere.url, "mirror"),)}, retries=0)

    sink = fetch(client, registry)

    assert sink.digest() == LAYER.digest
    assert [r.headers.get("Range") for r in registry.requests(BLOB_PATH)] == [None]
