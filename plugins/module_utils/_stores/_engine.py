# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Engine stores: the Docker Engine API (and Podman's compatible one) over a unix socket.

The engine is spoken to with Python's own http.client over its socket (a module that only reads an
engine's images loads no HTTP library of its own), on connections kept for the next request. The API
version is negotiated once with /version.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import os
import select
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Iterator, Optional
from urllib.parse import quote, unquote, urlencode, urlsplit

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, parse_reference_or_none

if TYPE_CHECKING:
    from ansible_collections.dockyard.images.plugins.module_utils._archive import ArchiveSource, Exported
    from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient

from ansible_collections.dockyard.images.plugins.module_utils._stores import (
    Holding,
    ImageRecord,
    LayerRecord,
    RemovalPlan,
    RemovalRequest,
    layer_fate,
    plan_targets,
    refuse_in_use,
)


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the engine's unix socket."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def dropped(self) -> bool:
        """Whether the engine closed this idle connection: an idle socket that reads at all has reached its end
        (or holds what no request asked for)."""
        if self.sock is None:
            return True
        poller = select.poll()  # not select(): a process may hold more than 1024 files
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))


class _Pool:
    """Idle connections to one socket, kept for the next request (at most `size`); threads each take their own."""

    def __init__(self, path: str, size: int):
        self.path, self.size = path, size
        self._idle = []
        self._lock = threading.Lock()

    def take(self, timeout: float) -> tuple:
        """(a connection, whether it served a request before)."""
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not connection.dropped():
                    return connection, True
                connection.close()
        return _UnixConnection(self.path, timeout), False

    def give_back(self, connection: _UnixConnection) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(connection)
                return
        connection.close()


class EngineAnswer:
    """An engine's answer: its status, and its body read whole (`read`, `json`, `text`) or as it comes
    (`lines`, `chunks`). Its connection serves the next request once the body is read to its end; an answer
    closed before is dropped with its connection."""

    def __init__(self, answer: http.client.HTTPResponse, connection: _UnixConnection, pool: _Pool):
        self.status_code = answer.status
        self._answer, self._connection, self._pool = answer, connection, pool
        self._content = None

    def read(self) -> bytes:
        """The whole body, read once."""
        if self._content is None:
            with self:
                self._content = self._answer.read()
        return self._content

    @property
    def text(self) -> str:
        return self.read().decode("utf-8", "replace")

    def json(self):
        return json.loads(self.read())

    def lines(self) -> Iterator[bytes]:
        with self:
            yield from iter(self._answer.readline, b"")
            self._whole()

    def chunks(self, size: int) -> Iterator[bytes]:
        with self:
            yield from iter(lambda: self._answer.read(size), b"")
            self._whole()

    def _whole(self) -> None:
        """IncompleteRead when the body ended before its length, or before its last chunk: http.client's
        readline() and read(n) end such a body quietly, as if the engine had said all it had to."""
        answer = self._answer
        if answer.length or (answer.chunked and answer.chunk_left is not None):
            raise http.client.IncompleteRead(b"", answer.length)

    def close(self) -> None:
        if self._connection is None:
            return
        connection, self._connection = self._connection, None
        if self._answer.isclosed() and not self._answer.will_close:
            self._pool.give_back(connection)
        else:
            self._answer.close()
            connection.close()

    def __enter__(self) -> EngineAnswer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


MAX_API_VERSION = (1, 45)
DOWNLOAD_CHUNK = 1024 * 1024
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"


def default_docker_host(store: str) -> str:
    """DOCKER_HOST, else the engine's usual socket (Podman's for store: podman)."""
    if store == "podman":
        if os.geteuid() == 0:
            return "unix:///run/podman/podman.sock"
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
        return f"unix://{runtime}/podman/podman.sock"
    return os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_DOCKER_SOCKET}"


def socket_path(docker_host: str) -> str:
    try:
        parts = urlsplit(docker_host)
    except ValueError:
        parts = None
    if parts is None or parts.scheme != "unix" or not parts.path or parts.netloc:  # unix://var/run/x.sock names /run/x.sock
        raise DockyardError("invalid_argument", f"docker_host {docker_host!r} is not supported; give a unix socket such as unix:///var/run/docker.sock")
    return unquote(parts.path)


def _version_tuple(text: str) -> tuple:
    try:
        return tuple(int(part) for part in str(text).split(".")[:2])
    except ValueError:
        return (1, 24)


@dataclass(frozen=True)
class EngineInfo:
    """Which engine answers on the socket, and its API version."""

    api_version: str
    name: str  # "docker" or "podman"
    version: str


class EngineClient:
    """The Engine API on one socket; every error is a DockyardError with the engine's message."""

    def __init__(self, docker_host: str, timeout: float = 60.0, pool_size: int = 10):
        self.docker_host = docker_host
        self.timeout = timeout
        self._pool = _Pool(socket_path(docker_host), pool_size)
        self._info = None

    def info(self) -> EngineInfo:
        """Negotiate the API version (GET /version); cached."""
        if self._info is None:
            data = self.get_json("/version", versioned=False)
            if not isinstance(data, dict):
                raise DockyardError("engine_error", f"{self.docker_host} answered /version with {str(data)[:100]!r}, not an engine's version")
            components = [c.get("Name", "") for c in data.get("Components") or []]
            name = "podman" if any("podman" in c.lower() for c in components) else "docker"
            server = _version_tuple(data.get("ApiVersion", "1.24"))
            api = min(server, MAX_API_VERSION)
            self._info = EngineInfo(f"{api[0]}.{api[1]}", name, str(data.get("Version", "")))
        return self._info

    def ping(self) -> bool:
        try:
            return self.call("GET", "/_ping", versioned=False, timeout=3).status_code == 200
        except DockyardError:
            return False

    def call(self, method: str, path: str, versioned: bool = True, ok=(200,), timeout=None, params=None, headers=None, data=None, stream=False):
        """One request; its answer, read whole unless `stream`. `timeout`: seconds, or (to connect, to wait for
        each read, None for no limit); `data`: bytes, or an iterable of chunks sent as they come."""
        prefix = f"/v{self.info().api_version}" if versioned else ""
        target = prefix + path + (f"?{urlencode(params, doseq=True)}" if params else "")
        try:
            answer = self._send(method, target, headers or {}, data, timeout or (10, self.timeout))
            if not stream:
                answer.read()  # whole: its connection serves the next request
        except (OSError, http.client.HTTPException) as exc:
            raise DockyardError(
                "unreachable", f"cannot talk to the engine at {self.docker_host}: {exc}; is it running, and may this user use its socket?"
            ) from None
        if answer.status_code not in ok:
            raise engine_error(answer, f"{method} {path}")
        return answer

    def _send(self, method: str, target: str, headers: dict, data, timeout: tuple) -> EngineAnswer:
        """Send a request on an idle connection, else a new one; once more on a new one when an idle connection
        the engine had closed fails before any answer, if the request may be made twice (an idempotent method,
        a body that can be sent again). Sending is bounded by the connect timeout, the answer by the read one."""
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        while True:
            connection, reused = self._pool.take(connect)
            try:
                if connection.sock is None:
                    connection.connect()
                connection.sock.settimeout(connect)  # an engine that takes no more of the body within it is gone
                try:
                    connection.request(method, target, body=data, headers=headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # an engine that answered before it read the whole body: its answer says why
                connection.sock.settimeout(read)
                return EngineAnswer(connection.getresponse(), connection, self._pool)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                connection.close()
                if not (reused and method in _IDEMPOTENT and _replayable(data)):
                    raise
            except BaseException:
                connection.close()
                raise

    def get_json(self, path: str, params=None, ok=(200,), versioned: bool = True):
        """The JSON a GET answers with 200 (None for another status in `ok`); engine_error for what is not JSON."""
        response = self.call("GET", path, versioned=versioned, params=params, ok=ok)
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except ValueError:
            answered = response.text[:200]
            raise DockyardError("engine_error", f"the engine at {self.docker_host} answered GET {path} with what is not JSON: {answered!r}") from None

    def inspect_image(self, name: str) -> Optional[dict]:
        return self.get_json(f"/images/{quote(name, safe='/:@')}/json", ok=(200, 404))

    def stream(self, method: str, path: str, params=None, headers=None, data=None):
        """Send a request (`data`: a body of any size, such as a generator of chunks) and yield each JSON
        object of the progress stream it answers, read to its end without a read timeout."""
        answer = self.call(method, path, params=params, headers=headers, data=data, stream=True, timeout=(10, None))
        try:
            for line in answer.lines():
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
        except (OSError, http.client.HTTPException) as exc:
            raise self._broken_off(f"{method} {path}", exc) from None
        finally:
            answer.close()

    def download(self, path: str, out: BinaryIO, params=None) -> None:
        """GET a body of any size (an image archive) into `out`, read without a read timeout."""
        answer = self.call("GET", path, params=params, stream=True, timeout=(10, None))
        with answer:
            chunks = answer.chunks(DOWNLOAD_CHUNK)
            while True:
                try:
                    chunk = next(chunks, None)
                except (OSError, http.client.HTTPException) as exc:
                    raise self._broken_off(f"GET {path}", exc) from None
                if chunk is None:
                    return
                out.write(chunk)  # its OSError (a full disk) is the caller's to tell

    def _broken_off(self, what: str, exc: Exception) -> DockyardError:
        return DockyardError("unreachable", f"the engine at {self.docker_host} broke off its answer to {what}: {exc}")


_ENGINE_MESSAGE_REASONS = (
    (("manifest unknown", "not found"), "not_found"),
    (("no matching manifest", "does not match the specified platform"), "platform_not_found"),
    (("unauthorized", "authentication required", "no basic auth credentials"), "unauthorized"),
    (("denied",), "denied"),
    (("toomanyrequests", "rate limit"), "rate_limited"),
    (("certificate", "x509", "tls"), "tls"),
    (("connection refused", "no such host", "timeout"), "unreachable"),
)


def engine_reason(message: str) -> str:
    """The one place that maps what an engine says went wrong to a reason."""
    lowered = message.lower()
    for needles, reason in _ENGINE_MESSAGE_REASONS:
        if any(needle in lowered for needle in needles):
            return reason
    return "engine_error"


_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def _replayable(data) -> bool:
    """Whether a request's body can be sent again: none, or bytes (not chunks already taken from a generator)."""
    return data is None or isinstance(data, bytes)


def engine_error(response, what: str) -> DockyardError:
    """An engine's HTTP error; 404 and 409 say it all, else its message tells."""
    try:
        data = response.json()
    except ValueError:
        data = None
    message = data.get("message") if isinstance(data, dict) else None
    message = (message if isinstance(message, str) and message else response.text).strip()
    reason = {404: "not_found", 409: "in_use"}.get(response.status_code) or engine_reason(message)
    return DockyardError(reason, f"the engine refused {what} (HTTP {response.status_code}): {message}", engine_status=response.status_code)


def engine_pull_error(message: str) -> DockyardError:
    """An error the engine reported inside its progress stream (Podman does so inside a 200 answer)."""
    return DockyardError(engine_reason(message), f"the engine failed to pull: {message}")


def layers_held(images: list, present: set, by_chain: bool = True) -> set:
    """Of the layer blobs of these (layer digests, DiffIDs) images, those whose ChainID (else DiffID) is in
    `present` at every depth an image names them. A blob needed at any depth is not held, and an image whose
    DiffIDs do not match its layers needs them all."""
    held, needed = set(), set()
    for layers, diff_ids in images:
        keys = (chain_ids(list(diff_ids)) if by_chain else list(diff_ids)) if len(diff_ids) == len(layers) else []
        for digest, key in itertools.zip_longest(layers, keys):
            (held if key in present else needed).add(digest)
    return held - needed


def chain_ids(diff_ids: list) -> list:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    chains = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else "sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def chain_set(stacks: list) -> set:
    """The ChainIDs of every layer of some images, given the DiffIDs of each (bottom layer first)."""
    return {chain for diff_ids in stacks for chain in chain_ids(diff_ids)}


def _repo_tags(summary: dict) -> list:
    """The names an image of the engine's listing carries (none for `<none>:<none>`)."""
    return [tag for tag in summary.get("RepoTags") or [] if tag and tag != "<none>:<none>"]


def _layer_sizes(history: list, layer_count: int) -> list:
    """Each layer's size from the engine's image history: entries map to layers oldest first."""
    sizes = [entry.get("Size", 0) for entry in reversed(history or [])]
    non_empty = [size for size in sizes if size]
    if len(non_empty) == layer_count:
        return non_empty
    if len(sizes) == layer_count:
        return sizes
    return (non_empty + [0] * layer_count)[:layer_count]


class EngineStore:
    """Images where containers run: Docker Engine or Podman, over the Engine API."""

    def __init__(self, docker_host: str, kind: str, timeout: float = 60.0, pool_size: int = 10):
        self.client = EngineClient(docker_host, timeout, pool_size)
        self.kind = kind
        self.root = docker_host

    @property
    def name(self) -> str:
        return self.kind

    def describe(self) -> dict:
        info = self.client.info()
        return {"type": self.kind, "docker_host": self.root, "engine_version": info.version, "api_version": info.api_version}

    def containers_by_image(self) -> dict:
        """Image id → containers using it, running or stopped."""
        users = {}
        for container in self.client.get_json("/containers/json", params={"all": "1"}) or []:
            names = [name.lstrip("/") for name in container.get("Names") or []]
            users.setdefault(full_image_id(container.get("ImageID", "")), []).append(
                {"id": container.get("Id", "")[:12], "name": names[0] if names else "", "state": container.get("State", "")}
            )
        return users

    def layers_of(self, inspect: dict) -> list:
        """An image's layers: DiffIDs from inspect, sizes from its history, and their ChainIDs."""
        diff_ids = list((inspect.get("RootFS") or {}).get("Layers") or [])
        sizes = _layer_sizes(self.client.get_json(f"/images/{inspect['Id']}/history") or [], len(diff_ids))
        return [LayerRecord(diff_id, size, "", chain) for diff_id, size, chain in zip(diff_ids, sizes, chain_ids(diff_ids))]

    def record_for(self, inspect: dict, tag: Optional[str], containers: dict, layers: Optional[list] = None) -> ImageRecord:
        reference = parse_reference_or_none(tag) if tag else None
        platform = inspect_platform(inspect)
        return ImageRecord(
            reference=reference,
            id=full_image_id(inspect["Id"]),
            digest=_repo_digest_for(reference, inspect.get("RepoDigests") or []),
            manifest_digest=None,
            platform=platform,
            created=inspect.get("Created"),
            layers=layers if layers is not None else self.layers_of(inspect),
            config_size=0,
            containers=list(containers.get(full_image_id(inspect["Id"]), [])),
            ref_name=tag,
            handle=inspect,
        )

    def images(self) -> list:
        """Every image, one record per tag (untagged images once), with the containers using it."""
        containers = self.containers_by_image()
        records = []
        for summary in self.client.get_json("/images/json") or []:
            inspect = self.client.inspect_image(summary["Id"])
            if inspect is None:
                continue  # removed meanwhile
            layers = self.layers_of(inspect)
            tags = _repo_tags(summary) or [None]
            records.extend(self.record_for(inspect, tag, containers, layers) for tag in tags)
        return records

    def puller(self, client: RegistryClient, concurrency: int, check_mode: bool):
        """The engine pulls (with our credentials, verified by its own client); check mode predicts from the registry."""
        from ansible_collections.dockyard.images.plugins.module_utils._engine_pull import EnginePuller

        return EnginePuller(self, client, concurrency, check_mode)

    def loader(self, source: ArchiveSource, concurrency: int, check_mode: bool):
        """The engine loads the archive's images it does not hold under their names, in one POST /images/load
        (so `concurrency` has nothing to share out); check mode predicts from the ChainIDs it holds."""
        from ansible_collections.dockyard.images.plugins.module_utils._engine_archive import EngineLoader

        return EngineLoader(self, source, check_mode)

    def holding(self, images: list) -> Holding:
        """Of these images, those the engine holds (and under which names), and the blobs a load into it need
        not read. An engine keeps no compressed blob: it holds an image, and layers. Docker's load reads a
        layer's file only for a ChainID it lacks; Podman's reuses any layer whose DiffID it holds, wherever it
        lies in the image. A blob needed by any image is not held, whatever another image's layers say.
        One listing of the engine's images answers it all."""
        held = self.held_images()
        ids = {image_id for image_id, _tags, _layers in held} & {image.id for image in images}
        lacking = [image for image in images if image.id not in ids]
        unread = self.layers_unread([([d.digest for d in image.layers], image.diff_ids) for image in lacking], [layers for _id, _tags, layers in held])
        needed = {image.id for image in lacking} | {d.digest for image in lacking for d in image.layers} - unread
        references = ((parse_reference_or_none(tag), image_id) for image_id, tags, _layers in held if image_id in ids for tag in tags)
        names = frozenset((reference.stored_name, image_id) for reference, image_id in references if reference is not None)
        return Holding(frozenset({d.digest for image in images for d in image.blobs} - needed), frozenset(ids), names)

    def exporter(self, names: list) -> Exported:
        """The engine saves the images (GET /images/get) into a private file that the archive is written from."""
        from ansible_collections.dockyard.images.plugins.module_utils._engine_archive import export_from_engine

        return export_from_engine(self, names)

    def plan_removal(self, request: RemovalRequest) -> RemovalPlan:
        """Which tags go, which images and layers the engine then deletes; refuses images in use."""
        records = self.images()
        targets, remaining, missing, in_use = plan_targets(records, request, f"the {self.kind} engine at {self.root}")
        left = {record.id for record in remaining}
        refuse_in_use(targets, remaining, request.force, f"the {self.kind} engine at {self.root}", f"{self.kind} rm NAME")
        still_used = {layer.key for record in remaining for layer in record.layers}
        deleted = {}
        for record in targets:
            if record.id not in left:
                deleted.update({layer.key: layer.size for layer in record.layers if layer.key not in still_used})
        deleted_layers, kept_layers = layer_fate(targets, remaining, set(deleted))
        return RemovalPlan(targets, remaining, missing, in_use, deleted_layers, kept_layers, deleted)

    def remove(self, request: RemovalRequest, check_mode: bool) -> RemovalPlan:
        plan = self.plan_removal(request)
        if check_mode:
            return plan
        for record in plan.targets:
            params = {"force": "1" if request.force else "0", "noprune": "0" if request.prune else "1"}
            self.client.call("DELETE", f"/images/{quote(record.ref_name or record.id, safe='/:@')}", params=params, ok=(200, 404))
        return plan

    def find(self, reference: Reference) -> Optional[dict]:
        """The engine's inspect output for a reference, or None."""
        return self.client.inspect_image(reference.stored_name)

    def tag(self, source: str, reference: Reference) -> None:
        """Tag an image the engine holds (a digest pin keeps its tag, which a pull by digest would not)."""
        params = {"repo": reference.name, "tag": reference.tag}
        self.client.call("POST", f"/images/{quote(source, safe='/:@')}/tag", params=params, ok=(200, 201))

    def present_chain_ids(self) -> set:
        """ChainIDs of every layer the engine holds, to predict what a pull reuses."""
        return chain_set([diff_ids for _id, _tags, diff_ids in self.held_images()])

    def layers_unread(self, images: list, stacks: Optional[list] = None) -> set:
        """Of the layer blobs of these (layer digests, DiffIDs) images, those a load into this engine reads no
        file of, given the DiffIDs of each image it holds (`stacks`, if read already): Docker's, those whose
        ChainID it holds; Podman's, those whose DiffID it holds at any depth (an archive must still name them,
        with any content: see _engine_archive)."""
        stacks = [diff_ids for _id, _tags, diff_ids in self.held_images()] if stacks is None else stacks
        if self.kind == "docker":
            return layers_held(images, chain_set(stacks))
        return layers_held(images, {diff_id for diff_ids in stacks for diff_id in diff_ids}, by_chain=False)

    def held_images(self) -> list:
        """(id, tags, DiffIDs bottom layer first) of every image the engine holds, untagged ones too."""
        held = []
        for summary in self.client.get_json("/images/json", params={"all": "1"}) or []:
            inspect = self.client.inspect_image(summary["Id"])
            if inspect is None:
                continue  # removed meanwhile
            held.append((full_image_id(inspect.get("Id", "")), _repo_tags(summary), list((inspect.get("RootFS") or {}).get("Layers") or [])))
        return held


def open_engine(kind: str, docker_host: Optional[str], timeout: float, pool_size: int) -> EngineStore:
    """The Docker Engine or Podman at docker_host, or at the default address for `kind`."""
    engine = EngineStore(docker_host or default_docker_host(kind), kind, timeout, pool_size)
    engine.kind = engine.client.info().name
    return engine


def probe_engine(docker_host: Optional[str], timeout: float, pool_size: int) -> Optional[EngineStore]:
    """The first engine whose socket answers (docker_host, else Docker's then Podman's usual sockets), or None."""
    candidates = [docker_host] if docker_host else [default_docker_host("docker"), default_docker_host("podman")]
    for address in dict.fromkeys(candidates):
        engine = EngineStore(address, "docker", timeout, pool_size)
        if engine.client.ping():
            engine.kind = engine.client.info().name
            return engine
    return None


def inspect_platform(inspect: dict) -> Optional[Platform]:
    """The platform of an image from the engine's inspect output."""
    return Platform.from_descriptor({"os": inspect.get("Os", ""), "architecture": inspect.get("Architecture", ""), "variant": inspect.get("Variant", "")})


def full_image_id(image_id: str) -> str:
    return image_id if ":" in image_id or not image_id else f"sha256:{image_id}"


def repository_digests(reference: Optional[Reference], repo_digests: list) -> list:
    """The digests the engine recorded (RepoDigests) for this reference's repository."""
    found = []
    for entry in repo_digests:
        name, _sep, digest = entry.rpartition("@")
        held = parse_reference_or_none(name)
        if reference is not None and held is not None and held.name == reference.name:
            found.append(digest)
    return found


def _repo_digest_for(reference: Optional[Reference], repo_digests: list) -> Optional[str]:
    """The digest recorded for this reference's repository, else the first recorded at all."""
    found = repository_digests(reference, repo_digests) or [entry.rpartition("@")[2] for entry in repo_digests]
    return found[0] if found else None
