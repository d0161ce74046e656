"""An in-process registry that serves real images from memory, for fast unit tests.

`InProcessRegistry` speaks enough of the OCI distribution API for pulls and pushes: manifests by tag
and digest (GET, HEAD, PUT), blobs by digest (GET, HEAD), monolithic uploads (POST then PUT) and
cross-repository mounts (POST ?mount=&from=). Blobs belong to repositories, as in a real registry:
a repository serves only what was pushed or mounted into it, and a manifest is accepted only when
its repository holds every blob (or manifest) it names. Every request is logged, so tests count
what a client asked for; `corrupt` makes a blob's bytes wrong (same size) to test verification.

The images the engine fixtures were recorded with (tests/unit/fixtures/engine) are built here too,
byte for byte reproducible, so that tests can check what they parse against the images themselves.
`InProcessServer` is the HTTP server both this registry and the engine replay of
test_engine_pull_unit.py answer through.
"""

from __future__ import annotations

import hashlib
import json
import re
import socketserver
import threading
import uuid
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, TypeVar
from urllib.parse import parse_qs, urlsplit

from support.images import Image, Index, random_layer

_UPLOAD = re.compile(r"/v2/(?P<repo>.+)/blobs/uploads/(?P<session>[^/]*)\Z")
_BLOB = re.compile(r"/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})\Z")
_MANIFEST = re.compile(r"/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)\Z")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the images the engine fixtures hold ----------------------------------------------------------

# Incompressible layers, so the engines report real download progress for each.
ENGINE_BASE = random_layer(256 * 1024, "engine-base")
ENGINE_APP = Image([ENGINE_BASE, random_layer(64 * 1024, "engine-app")], labels={"name": "app"})
ENGINE_WORKER = Image([ENGINE_BASE, random_layer(96 * 1024, "engine-worker")], labels={"name": "worker"})
ENGINE_BROKEN = Image([random_layer(32 * 1024, "engine-broken")], labels={"name": "broken"})  # its layer is corrupted in the registry


@dataclass
class Logged:
    """A request the registry received."""

    method: str
    path: str
    query: dict
    headers: Message
    body: bytes = b""


@dataclass
class Repository:
    """What one repository holds: tags, manifests (digest: (body, media type)) and the blobs linked into it."""

    tags: dict = field(default_factory=dict)
    manifests: dict = field(default_factory=dict)
    blobs: set = field(default_factory=set)


# -- an HTTP server on a thread of the test ------------------------------------------------------


class _Quiet:
    """Each connection on a daemon thread; a client that hangs up is no failure of the server."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass


class _TCPServer(_Quiet, ThreadingHTTPServer):
    pass


class _UnixServer(_Quiet, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    pass


class _Handler(BaseHTTPRequestHandler):
    """Reads a request's body, asks the service to `respond`, sends its answer: a body of bytes with
    its Content-Length, or a list of byte strings chunked, one a chunk, as a stream is sent."""

    protocol_version = "HTTP/1.1"
    service: InProcessServer

    def log_message(self, *args):
        pass

    def handle_one(self):
        self.service.peers.add(self.client_address)  # one a connection: its address and port
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.service.respond(self.command, self.path, self.headers, body)
        chunked = isinstance(payload, list)
        self.send_response(status)
        framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(len(payload))}
        for name, value in {**framing, **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if chunked:
            for piece in payload:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one


_Started = TypeVar("_Started", bound="InProcessServer")


class InProcessServer:
    """A service tests talk HTTP to, at `address` (host and port, or a unix socket's path), on a thread of
    its own from start() to stop(); `respond(method, path, headers, body)` gives each answer as
    (status, headers, payload)."""

    def __init__(self, address):
        server_class = _UnixServer if isinstance(address, str) else _TCPServer
        self.server = server_class(address, type("Handler", (_Handler,), {"service": self}))
        self.peers = set()  # the connections requests came on
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self: _Started) -> _Started:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def respond(self, method: str, path: str, headers: Message, body: bytes) -> tuple:
        raise NotImplementedError


def _error(status: int, code: str, message: str) -> tuple:
    return status, {"Content-Type": "application/json"}, json.dumps({"errors": [{"code": code, "message": message}]}).encode()


class InProcessRegistry(InProcessServer):
    """A registry on `host` (a free port) serving what tests push into it; see the module's docstring."""

    def __init__(self, host: str = "127.0.0.1"):
        self.repositories = {}
        self.content = {}  # digest: bytes, of every blob any repository holds
        self.wrong = {}  # digest: the bytes served instead
        self.log = []
        self._lock = threading.Lock()
        super().__init__((host, 0))
        self.netloc = f"{host}:{self.server.server_address[1]}"
        self.url = f"http://{self.netloc}"

    # -- what the registry holds, set up without HTTP ----------------------------------------------

    def _repository(self, repo: str) -> Repository:
        return self.repositories.setdefault(repo, Repository())

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        with self._lock:
            self.content[digest] = data
            self._repository(repo).blobs.add(digest)
        return digest

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        digest = sha256(body)
        with self._lock:
            repository = self._repository(repo)
            repository.manifests[digest] = (body, media_type)
            if ref != digest:
                repository.tags[ref] = digest
        return digest

    def push_image(self, repo: str, tag: Optional[str], image: Image) -> str:
        """Hold `image` in `repo`, tagged `tag` (or by digest alone when None); its digest."""
        for layer in image.layers:
            self.put_blob(repo, layer.blob)
        self.put_blob(repo, image.config)
        return self.put_manifest(repo, tag or image.digest, image.manifest, image.media_type)

    def push_index(self, repo: str, tag: str, index: Index) -> str:
        for image in index.images:
            self.push_image(repo, None, image)
        return self.put_manifest(repo, tag, index.manifest, index.media_type)

    def corrupt(self, digest: str) -> None:
        """Serve other bytes of the same length for this blob, as a broken disk or proxy would."""
        data = self.content[digest]
        self.wrong[digest] = bytes(byte ^ 0xFF for byte in data)

    def holds_blob(self, repo: str, digest: str) -> bool:
        return digest in self.repositories.get(repo, Repository()).blobs

    def holds_manifest(self, repo: str, digest: str) -> bool:
        return digest in self.repositories.get(repo, Repository()).manifests

    def tag_digest(self, repo: str, tag: str) -> Optional[str]:
        return self.repositories.get(repo, Repository()).tags.get(tag)

    # -- what clients asked ------------------------------------------------------------------------

    def requests(self, method: Optional[str] = None, path: Optional[str] = None) -> list:
        return [r for r in self.log if (method is None or r.method == method) and (path is None or r.path == path)]

    def image_requests(self) -> list:
        """(method, path) of every request but the version checks (`/v2/`), which concern no image."""
        return [(r.method, r.path) for r in self.log if r.path != "/v2/"]

    def blob_gets(self, digest: str) -> int:
        """How many times the bytes of `digest` were asked for, from any repository."""
        return sum(1 for r in self.log if r.method == "GET" and r.path.endswith(f"/blobs/{digest}"))

    def blob_requests(self) -> list:
        """(method, path) of every request about blobs: fetches, lookups, uploads and mounts."""
        return [(r.method, r.path) for r in self.log if "/blobs/" in r.path]

    # -- the API -----------------------------------------------------------------------------------

    def respond(self, method: str, path: str, headers: Message, body: bytes) -> tuple:
        parts = urlsplit(path)
        request = Logged(method, parts.path, parse_qs(parts.query), headers, body)
        self.log.append(request)
        return self.answer(request)

    def answer(self, request: Logged) -> tuple:
        path = request.path
        if path == "/v2/":
            return 200, {"Content-Type": "application/json", "Docker-Distribution-API-Version": "registry/2.0"}, b"{}"
        with self._lock:
            for pattern, handler in ((_UPLOAD, self._upload), (_BLOB, self._blob), (_MANIFEST, self._manifest)):
                match = pattern.match(path)
                if match:
                    return handler(request, **match.groupdict())
        return _error(404, "NOT_FOUND", f"no route for {path}")

    def _manifest(self, request: Logged, repo: str, ref: str) -> tuple:
        repository = self.repositories.get(repo)
        if request.method == "PUT":
            return self._put_manifest(request, repo, ref)
        if request.method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "method not allowed")
        if repository is None:
            return _error(404, "NAME_UNKNOWN", f"repository {repo} not known")
        digest = ref if ref.startswith("sha256:") else repository.tags.get(ref)
        if digest not in repository.manifests:
            return _error(404, "MANIFEST_UNKNOWN", f"manifest {ref} unknown")
        body, media_type = repository.manifests[digest]
        return 200, {"Content-Type": media_type, "Docker-Content-Digest": digest}, body

    def _put_manifest(self, request: Logged, repo: str, ref: str) -> tuple:
        body, media_type = request.body, (request.headers.get("Content-Type") or "").split(";")[0]
        digest = sha256(body)
        if ref.startswith("sha256:") and ref != digest:
            return _error(400, "DIGEST_INVALID", f"manifest hashes to {digest}, not {ref}")
        data = json.loads(body)
        repository = self._repository(repo)
        named = [data["config"], *data.get("layers", [])] if "config" in data else []
        if any(d["digest"] not in repository.blobs for d in named):
            return _error(400, "MANIFEST_BLOB_UNKNOWN", "a blob the manifest names is not in the repository")
        if any(d["digest"] not in repository.manifests for d in data.get("manifests", [])):
            return _error(400, "MANIFEST_UNKNOWN", "a manifest the index names is not in the repository")
        repository.manifests[digest] = (body, media_type)
        if ref != digest:
            repository.tags[ref] = digest
        return 201, {"Location": f"/v2/{repo}/manifests/{digest}", "Docker-Content-Digest": digest}, b""

    def _blob(self, request: Logged, repo: str, digest: str) -> tuple:
        if request.method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "method not allowed")
        if digest not in self.repositories.get(repo, Repository()).blobs:
            return _error(404, "BLOB_UNKNOWN", f"blob {digest} unknown to {repo}")
        data = self.wrong.get(digest, self.content[digest])
        return 200, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}, data

    def _upload(self, request: Logged, repo: str, session: str) -> tuple:
        if request.method == "POST" and not session:
            mount, source = request.query.get("mount", [None])[0], request.query.get("from", [None])[0]
            if mount and source and mount in self.repositories.get(source, Repository()).blobs:
                self._repository(repo).blobs.add(mount)
                return 201, {"Location": f"/v2/{repo}/blobs/{mount}", "Docker-Content-Digest": mount}, b""
            return 202, {"Location": f"/v2/{repo}/blobs/uploads/{uuid.uuid4()}", "Range": "0-0"}, b""
        if request.method == "PUT" and session:
            digest = request.query.get("digest", [""])[0]
            if sha256(request.body) != digest:
                return _error(400, "DIGEST_INVALID", f"the upload hashes to {sha256(request.body)}, not {digest}")
            self.content[digest] = request.body
            self._repository(repo).blobs.add(digest)
            return 201, {"Location": f"/v2/{repo}/blobs/{digest}", "Docker-Content-Digest": digest}, b""
        return _error(405, "UNSUPPORTED", "only monolithic uploads (POST, then PUT with the digest) are served")
