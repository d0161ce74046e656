"""A hostile registry: the Registry HTTP API v2 on loopback, misbehaving per repository name.

One server serves every scenario of issue 13. Its main listener (127.0.0.1) is "the registry"; a
second listener (127.0.0.2) stands for another host: a CDN, a token service, an upload host, the
next page of a listing. Both log every request with all its headers, so a test can tell where an
`Authorization` header went. The main listener can demand Basic credentials; a repository may
instead answer with a Bearer challenge whose realm its scenario names.

Each repository (see the constants below) is one misbehaviour; the images are real (tar+gzip
layers, configs, manifests built by support.images), except where the scenario is the bad JSON.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import socket
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, quote, urlsplit

from support.images import CONFIG_TYPES, LAYER_TYPES, OCI_INDEX, OCI_MANIFEST, Image, digest_of, make_layer
from support.registry import free_port

MAIN, OTHER = "main", "other"
MAIN_ADDRESS, OTHER_ADDRESS = "127.0.0.1", "127.0.0.2"
SERVICE = "hostile-registry"

# Well-behaved.
GOOD = "good/app"
GOOD_PUBLIC = "public/app"  # anyone may pull it: no challenge
# 1. Listings whose next page is on another origin.
LINKED_CATALOG = "links/catalog"  # listed by _catalog, whose Link names the other listener
LINKED_TAGS = "links/tags"  # tags/list's Link names the other listener; /v1/search finds it by its exact name
# 2. A destination that sends uploads to another origin.
UPLOAD_ELSEWHERE = "upload/elsewhere"
# 3. Bearer realms on other origins.
REALM_HTTP_VM = "realm/http-vm"  # realm="http://vm:PORT2/token": plain HTTP to a non-loopback name
REALM_HTTPS_OTHER = "realm/https-other"  # realm="https://127.0.0.2:PORT2/token": another origin on loopback
# 4. Slow dribble: one byte every DRIBBLE_INTERVAL seconds.
SLOW_MANIFEST = "slow/manifest"  # the manifest body
SLOW_BLOB = "slow/blob"  # the layer's body
SLOW_HEADERS = "slow/headers"  # the manifest response's status line and headers
# 5. Shapes a reader must refuse with a reason.
CONFIG_LIST = "bad/config-list"  # the config blob is `[]`
CONFIG_LIST_INDEXED = "bad/config-list-indexed"  # the same config, behind an index that names the platform itself
ARCH_NUMBER = "bad/arch-number"  # the config's architecture is 7
ARCH_DICT = "bad/arch-dict"  # the config's architecture is {"name": "amd64"}
INDEX_NO_DIGEST = "bad/index-no-digest"  # an index entry without digest
INDEX_PLATFORM_STRING = "bad/index-platform-string"  # an index entry whose platform is "linux/amd64"
# 6. An invalid digest among good images.
LAYER_DIGEST_INVALID = "bad/layer-digest"  # the manifest names layer sha256:zz; anyone may pull it, as GOOD_PUBLIC
# 7. Wrong words.
LONG_BLOB = "wrong/long-blob"  # the layer's body is LONG_BLOB_EXTRA bytes longer than declared
# 8. What held.
TRAVERSAL = "held/traversal"  # layer digest sha256:../../etc
UNKNOWN_ALGORITHM = "held/md5"  # layer digest md5:…
MISMATCH = "held/mismatch"  # the layer's bytes do not hash to its digest
HUGE_MANIFEST = "held/huge-manifest"  # a 50 MB manifest
GZIP_BOMB = "held/gzip-bomb"  # a small gzip layer that inflates to GZIP_BOMB_INFLATED bytes
REDIRECT_BLOB = "held/redirect"  # blob GETs answer 307 to the other listener
ECHO_LOCATION = "echo/location"  # the manifest GET answers 307 to gopher://…, a URL that repeats the Authorization it got
ECHO_DIGEST = "echo/digest"  # the manifest is labelled Docker-Content-Digest sha256:<the password>
HEAD_NO_DIGEST = "echo/head"  # a HEAD of the manifest is labelled sha256:../../../etc/passwd; a GET is right
# 9. Beyond issue 13: challenges that answer late, so that several first requests of one task cross theirs.
CROWD = tuple(f"crowd/{n}" for n in range(6))
CHALLENGE_DELAY = 0.5

DRIBBLE_INTERVAL = 2.0
LONG_BLOB_EXTRA = 4096
HUGE_MANIFEST_BYTES = 50 * 1024 * 1024
GZIP_BOMB_MEMBERS = 32
GZIP_BOMB_MEMBER_BYTES = 64 * 1024 * 1024
GZIP_BOMB_INFLATED = GZIP_BOMB_MEMBERS * GZIP_BOMB_MEMBER_BYTES  # 2 GiB
TRAVERSAL_DIGEST = "sha256:../../etc"
INVALID_DIGEST = "sha256:zz"
MD5_DIGEST = "md5:" + hashlib.md5(b"hostile").hexdigest()  # an algorithm the store must refuse

_REPO_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")
_TAGS_PATH = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_UPLOAD_START = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/$")
_UPLOAD_PUT = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]+)$")


@dataclass
class Logged:
    """One request a listener received."""

    listener: str
    method: str
    path: str  # with the query
    headers: dict


@dataclass
class Repository:
    """What one repository serves: manifests by tag and digest, blobs as served (which may not match their digest)."""

    name: str
    manifests: dict = field(default_factory=dict)  # tag or digest -> (bytes, media type)
    blobs: dict = field(default_factory=dict)  # digest -> bytes served
    tags: list = field(default_factory=list)
    realm: Optional[str] = None  # challenge with Bearer realm=… instead of Basic
    public: bool = False  # reads need no credentials
    pushed: dict = field(default_factory=dict)  # manifests a client pushed, by the tag or digest it named

    def add_manifest(self, ref: str, body: bytes, media_type: str) -> str:
        digest = digest_of(body)
        self.manifests[digest] = (body, media_type)
        if not ref.startswith("sha256:"):
            self.manifests[ref] = (body, media_type)
            if ref not in self.tags:
                self.tags.append(ref)
        return digest

    def add_image(self, tag: str, image: Image) -> str:
        for layer in image.layers:
            self.blobs[layer.digest] = layer.blob
        self.blobs[image.id] = image.config
        return self.add_manifest(tag, image.manifest, image.media_type)


def manifest_bytes(config: bytes, layers: list, media_type: str = OCI_MANIFEST) -> bytes:
    """An image manifest naming `config` and `layers` ((digest, size) pairs), whatever they hold."""
    data = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": CONFIG_TYPES[media_type], "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPES[media_type], "digest": digest, "size": size} for digest, size in layers],
    }
    return json.dumps(data, indent=2).encode()


def config_bytes(architecture, layers: list) -> bytes:
    return json.dumps({"architecture": architecture, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}}).encode()


def gzip_bomb() -> tuple:
    """(blob, diff_id): identical gzip members of zeros, about 2 MB that inflate to 2 GiB."""
    member = gzip.compress(bytes(GZIP_BOMB_MEMBER_BYTES), compresslevel=9, mtime=0)
    inflated = hashlib.sha256()
    zeros = bytes(GZIP_BOMB_MEMBER_BYTES)
    for _member in range(GZIP_BOMB_MEMBERS):
        inflated.update(zeros)
    return member * GZIP_BOMB_MEMBERS, "sha256:" + inflated.hexdigest()


class HostileRegistry:
    """The registry at `host` (127.0.0.1) and another host at `other_host` (127.0.0.2), started by start()."""

    def __init__(self, user: Optional[str] = None, password: Optional[str] = None):
        self.credentials = (user, password) if user is not None else None
        self.port, self.other_port = free_port(), _free_port_on(OTHER_ADDRESS)
        self.host, self.other_host = f"{MAIN_ADDRESS}:{self.port}", f"{OTHER_ADDRESS}:{self.other_port}"
        self.url, self.other_url = f"http://{self.host}", f"http://{self.other_host}"
        self.log = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._tokens = set()
        self.repositories = {}
        self.images = {}  # repository -> the Image it serves under tag 1, where there is one
        self._build()
        self._servers = [self._listener(MAIN, MAIN_ADDRESS, self.port), self._listener(OTHER, OTHER_ADDRESS, self.other_port)]

    # -- the scenarios ---------------------------------------------------------------------------

    def _repository(self, name: str, realm: Optional[str] = None) -> Repository:
        self.repositories[name] = Repository(name, realm=realm)
        return self.repositories[name]

    def _image(self, name: str, image: Image, realm: Optional[str] = None) -> Repository:
        repository = self._repository(name, realm)
        repository.add_image("1", image)
        self.images[name] = image
        return repository

    def _build(self) -> None:
        base = make_layer({"etc/os-release": b"ID=hostile\n"})

        def image(label: str, **options) -> Image:
            return Image([base, make_layer({f"srv/{label}.txt": label.encode() * 64})], labels={"name": label}, **options)

        self._image(GOOD, image("good"))
        self._image(GOOD_PUBLIC, image("public")).public = True
        self._image(LINKED_CATALOG, image("catalog"))
        self._image(LINKED_TAGS, image("tags")).add_manifest("2", self.images[LINKED_TAGS].manifest, self.images[LINKED_TAGS].media_type)
        self._image(UPLOAD_ELSEWHERE, image("upload"))
        self._image(REALM_HTTP_VM, image("realm-vm"), realm=f"http://vm:{self.other_port}/token")
        self._image(REALM_HTTPS_OTHER, image("realm-https"), realm=f"https://{self.other_host}/token")
        self._image(SLOW_MANIFEST, image("slow-manifest"))
        self._image(SLOW_BLOB, image("slow-blob"))
        self._image(SLOW_HEADERS, image("slow-headers"))
        self._image(MISMATCH, image("mismatch"))
        self._image(REDIRECT_BLOB, image("redirect"))
        for name in (ECHO_LOCATION, ECHO_DIGEST, HEAD_NO_DIGEST):
            self._image(name, image(name.replace("/", "-")))
        for name in CROWD:
            self._image(name, image(name.replace("/", "-")))

        mismatched = self.images[MISMATCH].layers[1]
        self.repositories[MISMATCH].blobs[mismatched.digest] = bytes(byte ^ 0xFF for byte in mismatched.blob)

        layer = make_layer({"srv/long.txt": b"long\n" * 512})
        self._image(LONG_BLOB, Image([layer]))
        self.repositories[LONG_BLOB].blobs[layer.digest] = layer.blob + b"\0" * LONG_BLOB_EXTRA

        # configs and manifests that are not what they say
        layer = make_layer({"srv/bad.txt": b"bad\n"})
        for name, config in (
            (CONFIG_LIST, b"[]"),
            (ARCH_NUMBER, config_bytes(7, [layer])),
            (ARCH_DICT, config_bytes({"name": "amd64"}, [layer])),
        ):
            repository = self._repository(name)
            repository.blobs.update({layer.digest: layer.blob, digest_of(config): config})
            repository.add_manifest("1", manifest_bytes(config, [(layer.digest, layer.size)]), OCI_MANIFEST)

        # an index that names the platform, so that the config is not needed to choose the manifest
        config = b"[]"
        indexed = manifest_bytes(config, [(layer.digest, layer.size)])
        repository = self._repository(CONFIG_LIST_INDEXED)
        repository.blobs.update({layer.digest: layer.blob, digest_of(config): config})
        repository.add_manifest(digest_of(indexed), indexed, OCI_MANIFEST)
        entry = {"mediaType": OCI_MANIFEST, "digest": digest_of(indexed), "size": len(indexed), "platform": {"architecture": "amd64", "os": "linux"}}
        repository.add_manifest("1", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode(), OCI_INDEX)

        inner = Image([layer], media_type=OCI_MANIFEST)
        for name, entry in (
            (INDEX_NO_DIGEST, {"mediaType": OCI_MANIFEST, "size": len(inner.manifest), "platform": {"architecture": "amd64", "os": "linux"}}),
            (INDEX_PLATFORM_STRING, {"mediaType": OCI_MANIFEST, "digest": inner.digest, "size": len(inner.manifest), "platform": "linux/amd64"}),
        ):
            repository = self._repository(name)
            repository.add_image(inner.digest, inner)
            repository.add_manifest("1", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode(), OCI_INDEX)

        for name, digest in ((LAYER_DIGEST_INVALID, INVALID_DIGEST), (TRAVERSAL, TRAVERSAL_DIGEST), (UNKNOWN_ALGORITHM, MD5_DIGEST)):
            config = config_bytes("amd64", [layer])
            repository = self._repository(name)
            repository.blobs.update({digest: layer.blob, digest_of(config): config})
            repository.add_manifest("1", manifest_bytes(config, [(digest, layer.size)]), OCI_MANIFEST)
        self.repositories[LAYER_DIGEST_INVALID].public = True

        self._repository(HUGE_MANIFEST).tags.append("1")  # served by _huge_manifest

        bomb, diff_id = gzip_bomb()
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
        repository = self._repository(GZIP_BOMB)
        repository.blobs.update({digest_of(bomb): bomb, digest_of(config): config})
        repository.add_manifest("1", manifest_bytes(config, [(digest_of(bomb), len(bomb))]), OCI_MANIFEST)
        self.gzip_bomb_digest, self.gzip_bomb_size = digest_of(bomb), len(bomb)

    # -- life ------------------------------------------------------------------------------------

    def _listener(self, name: str, address: str, port: int) -> ThreadingHTTPServer:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 120
            listener = name

            def log_message(self, *args):
                pass

            def do_GET(self):
                registry._handle(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        server = _QuietServer((address, port), Handler)
        server.daemon_threads = True
        return server

    def start(self) -> HostileRegistry:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # dribbling answers give up at their next byte
        for server in self._servers:
            server.shutdown()
            server.server_close()

    # -- what the listeners saw ------------------------------------------------------------------

    def mark(self) -> int:
        with self._lock:
            return len(self.log)

    def requests_to(self, listener: str, since: int = 0) -> list:
        """Every request `listener` received (after `mark` `since`), as Logged entries."""
        with self._lock:
            return [entry for entry in self.log[since:] if entry.listener == listener]

    def authorizations(self, listener: str, since: int = 0) -> list:
        """(path, Authorization header) of every request to `listener` that carried one."""
        return [(entry.path, _header(entry.headers, "Authorization")) for entry in self.requests_to(listener, since) if _header(entry.headers, "Authorization")]

    def name(self, repository: str, tag: str = "1") -> str:
        return f"{self.host}/{repository}:{tag}"

    # -- answering -------------------------------------------------------------------------------

    def _handle(self, handler) -> None:
        with self._lock:
            self.log.append(Logged(handler.listener, handler.command, handler.path, dict(handler.headers.items())))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        path, query = parts.path, parse_qs(parts.query)
        try:
            if handler.listener == OTHER:
                self._answer_other(handler, path, query, body)
            else:
                self._answer_main(handler, path, query, body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _answer_main(self, handler, path: str, query: dict, body: bytes) -> None:
        if path == "/token":
            return self._token(handler)
        repository = self._repository_of(path)
        if not self._authorized(handler, repository):
            return self._challenge(handler, repository)
        if path == "/v2/":
            return _send(handler, 200, b"{}")
        if path == "/v2/_catalog":
            names = sorted(self.repositories)
            page = f"{self.other_url}/v2/_catalog?last={quote(names[-1], safe='')}&n={query.get('n', ['100'])[0]}"
            return _send_json(handler, 200, {"repositories": names}, {"Link": f'<{page}>; rel="next"'})
        if path == "/v1/search":
            term = query.get("q", [""])[0]
            if term == LINKED_TAGS:
                return _send_json(handler, 200, {"query": term, "num_results": 1, "results": [{"name": LINKED_TAGS, "description": "tags on two hosts"}]})
            return _send_json(handler, 404, {"errors": [{"code": "UNSUPPORTED", "message": "no search here"}]})
        if repository is None:
            return _send_json(handler, 404, {"errors": [{"code": "NAME_UNKNOWN", "message": "no such repository"}]})
        tags = _TAGS_PATH.match(path)
        if tags:
            headers = {}
            if repository.name == LINKED_TAGS:
                headers["Link"] = f'<{self.other_url}/v2/{repository.name}/tags/list?last={repository.tags[-1]}&n=100>; rel="next"'
            return _send_json(handler, 200, {"name": repository.name, "tags": repository.tags}, headers)
        if repository.name == UPLOAD_ELSEWHERE:
            return self._destination(handler, repository, path, body)
        match = _REPO_PATH.match(path)
        if match and match["kind"] == "manifests" and handler.command in ("GET", "HEAD"):
            return self._manifest(handler, repository, match["ref"])
        if match and match["kind"] == "blobs" and handler.command in ("GET", "HEAD"):
            if repository.name == REDIRECT_BLOB and handler.command == "GET":
                location = f"{self.other_url}/blob/{repository.name}/{match['ref']}"
                return _send(handler, 307, b"", {"Location": location})
            return self._blob(handler, repository, match["ref"])
        return _send_json(handler, 405, {"errors": [{"code": "UNSUPPORTED", "message": f"{handler.command} {path} is not served here"}]})

    def _answer_other(self, handler, path: str, query: dict, body: bytes) -> None:
        """Another host: a token service, an upload target, a CDN, the next page, and an anonymous copy of every image."""
        if path == "/token":
            return self._token(handler)
        if path.startswith("/upload/") and handler.command in ("PUT", "PATCH"):
            return _send(handler, 201, b"", {"Docker-Content-Digest": query.get("digest", [""])[0]})
        if path.startswith("/blob/"):
            name, _sep, digest = path[len("/blob/") :].rpartition("/")
            repository = self.repositories.get(name)
            return self._blob(handler, repository, digest) if repository else _send(handler, 404, b"")
        if path == "/v2/":
            return _send(handler, 200, b"{}")
        if path == "/v2/_catalog":
            return _send_json(handler, 200, {"repositories": ["links/elsewhere"]})
        tags = _TAGS_PATH.match(path)
        if tags:
            return _send_json(handler, 200, {"name": tags["name"], "tags": ["elsewhere"]})
        repository = self._repository_of(path)
        match = _REPO_PATH.match(path)
        if repository is not None and match and match["kind"] == "manifests":
            body, media_type = repository.manifests.get(match["ref"], (None, None))
            return _send_manifest(handler, body, media_type)
        if repository is not None and match and match["kind"] == "blobs":
            return self._blob(handler, repository, match["ref"])
        return _send(handler, 404, b"")

    def _repository_of(self, path: str) -> Optional[Repository]:
        for pattern in (_REPO_PATH, _TAGS_PATH, _UPLOAD_START, _UPLOAD_PUT):
            match = pattern.match(path)
            if match:
                return self.repositories.get(match["name"])
        return None

    # -- auth ------------------------------------------------------------------------------------

    def _authorized(self, handler, repository: Optional[Repository]) -> bool:
        if self.credentials is None or (repository is not None and repository.public and handler.command in ("GET", "HEAD")):
            return True
        header = handler.headers.get("Authorization") or ""
        if header.startswith("Bearer ") and header[7:] in self._tokens:
            return True
        return (repository is None or repository.realm is None) and header == _basic(*self.credentials)

    def _challenge(self, handler, repository: Optional[Repository]) -> None:
        if repository is not None and repository.realm:
            challenge = f'Bearer realm="{repository.realm}",service="{SERVICE}",scope="repository:{repository.name}:pull"'
        else:
            challenge = 'Basic realm="hostile-registry"'
        if repository is not None and repository.name in CROWD:
            self.stopping.wait(CHALLENGE_DELAY)
        _send_json(handler, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}, {"WWW-Authenticate": challenge})

    def _token(self, handler) -> None:
        header = handler.headers.get("Authorization") or ""
        if self.credentials is not None and header and header != _basic(*self.credentials):
            return _send_json(handler, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
        token = uuid.uuid4().hex
        with self._lock:
            self._tokens.add(token)
        _send_json(handler, 200, {"token": token, "expires_in": 300})

    # -- content ---------------------------------------------------------------------------------

    def _manifest(self, handler, repository: Repository, ref: str) -> None:
        if repository.name == HUGE_MANIFEST:
            return self._huge_manifest(handler)
        body, media_type = repository.manifests.get(ref, (None, None))
        if repository.name == HEAD_NO_DIGEST and body is not None and handler.command == "HEAD":
            return _send(handler, 200, b"", dict(_manifest_headers(body, media_type), **{"Docker-Content-Digest": "sha256:../../../etc/passwd"}), head=True)
        if body is None or handler.command == "HEAD":
            return _send_manifest(handler, body, media_type)
        if repository.name == ECHO_LOCATION:
            echoed = (handler.headers.get("Authorization") or "").replace(" ", "/")
            password = self.credentials[1] if self.credentials else ""
            return _send(handler, 307, b"", {"Location": f"gopher://x/{password}/{echoed}"})
        if repository.name == ECHO_DIGEST and self.credentials:
            return _send(handler, 200, body, dict(_manifest_headers(body, media_type), **{"Docker-Content-Digest": f"sha256:{self.credentials[1]}"}))
        if repository.name == SLOW_MANIFEST:
            return self._dribble(handler, body, _manifest_headers(body, media_type))
        if repository.name == SLOW_HEADERS:
            return self._dribble_headers(handler, body, _manifest_headers(body, media_type))
        return _send_manifest(handler, body, media_type)

    def _blob(self, handler, repository: Repository, digest: str) -> None:
        data = repository.blobs.get(digest)
        if data is None:
            return _send_json(handler, 404, {"errors": [{"code": "BLOB_UNKNOWN", "message": f"{digest} is unknown"}]})
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        status, start = 200, _range_start(handler.headers.get("Range"), len(data))
        if start:
            status, headers["Content-Range"] = 206, f"bytes {start}-{len(data) - 1}/{len(data)}"
        if handler.command == "HEAD":
            return _send(handler, 200, b"", dict(headers, **{"Content-Length": str(len(data))}), head=True)
        layers = [layer.digest for layer in self.images[repository.name].layers] if repository.name in self.images else []
        if repository.name == SLOW_BLOB and digest == layers[-1]:
            return self._dribble(handler, data[start:], dict(headers, **{"Content-Length": str(len(data) - start)}), status)
        return _send(handler, status, data[start:], headers)

    def _destination(self, handler, repository: Repository, path: str, body: bytes) -> None:
        """An empty repository that accepts pushes, but sends every upload to the other listener."""
        match = _REPO_PATH.match(path)
        if handler.command in ("GET", "HEAD") and match:
            code = "MANIFEST_UNKNOWN" if match["kind"] == "manifests" else "BLOB_UNKNOWN"
            return _send_json(handler, 404, {"errors": [{"code": code, "message": "not here yet"}]})
        if handler.command == "POST" and _UPLOAD_START.match(path):
            location = f"{self.other_url}/upload/{uuid.uuid4().hex}"
            return _send(handler, 202, b"", {"Location": location, "Docker-Upload-UUID": location.rsplit("/", 1)[1]})
        if handler.command == "PUT" and match and match["kind"] == "manifests":
            with self._lock:
                repository.pushed[match["ref"]] = body
            return _send(handler, 201, b"", {"Docker-Content-Digest": digest_of(body)})
        return _send_json(handler, 405, {"errors": [{"code": "UNSUPPORTED", "message": f"{handler.command} {path} is not served here"}]})

    def _huge_manifest(self, handler) -> None:
        head = b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "annotations": {"padding": "'
        tail = b'"}}'
        headers = {"Content-Type": OCI_MANIFEST, "Content-Length": str(HUGE_MANIFEST_BYTES)}
        if handler.command == "HEAD":
            return _send(handler, 200, b"", headers, head=True)
        handler.send_response(200)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        chunk, left = b"a" * (1024 * 1024), HUGE_MANIFEST_BYTES - len(head) - len(tail)
        handler.wfile.write(head)
        while left > 0 and not self.stopping.is_set():
            handler.wfile.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
        handler.wfile.write(tail)

    def _dribble(self, handler, body: bytes, headers: dict, status: int = 200) -> None:
        """Send the headers at once, then the body one byte every DRIBBLE_INTERVAL seconds."""
        handler.close_connection = True
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        self._trickle(handler, body)

    def _dribble_headers(self, handler, body: bytes, headers: dict) -> None:
        """Send the status line and headers one byte every DRIBBLE_INTERVAL seconds, then the body."""
        handler.close_connection = True
        head = "HTTP/1.1 200 OK\r\n" + "".join(f"{key}: {value}\r\n" for key, value in headers.items()) + "\r\n"
        if self._trickle(handler, head.encode("latin-1")):
            handler.wfile.write(body)

    def _trickle(self, handler, data: bytes) -> bool:
        """Write `data` a byte at a time; False when the client went away or the server stops."""
        for byte in data:
            try:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            except OSError:
                return False
            if self.stopping.wait(DRIBBLE_INTERVAL):
                return False
        return True


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up (a TLS handshake sent to plain HTTP, a killed pull) is no error worth a traceback."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _header(headers: dict, name: str) -> Optional[str]:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _range_start(header: Optional[str], size: int) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    start = int(match[1]) if match else 0
    return start if 0 < start < size else 0


def _manifest_headers(body: bytes, media_type: str) -> dict:
    return {"Content-Type": media_type, "Content-Length": str(len(body)), "Docker-Content-Digest": digest_of(body)}


def _send_manifest(handler, body: Optional[bytes], media_type: Optional[str]) -> None:
    if body is None:
        return _send_json(handler, 404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
    headers = _manifest_headers(body, media_type)
    if handler.command == "HEAD":
        return _send(handler, 200, b"", headers, head=True)
    return _send(handler, 200, body, headers)


def _send_json(handler, status: int, data, headers: Optional[dict] = None) -> None:
    _send(handler, status, json.dumps(data).encode(), dict({"Content-Type": "application/json"}, **(headers or {})))


def _send(handler, status: int, body: bytes, headers: Optional[dict] = None, head: bool = False) -> None:
    """Answer with `body` (none to a HEAD: then `headers` may carry the Content-Length it would have)."""
    handler.send_response(status)
    headers = dict(headers or {})
    if not head:
        headers["Content-Length"] = str(len(body))
    headers.setdefault("Content-Length", "0")
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    if handler.command != "HEAD" and body:
        handler.wfile.write(body)
