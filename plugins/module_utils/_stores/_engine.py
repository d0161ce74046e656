# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Engine stores: the Docker Engine API (and Podman's compatible one) over a unix socket.

A small transport adapter lets `requests` speak HTTP over the socket, so managed hosts need
nothing but `requests`. The API version is negotiated once with /version.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Optional
from urllib.parse import quote, unquote, urlsplit

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, parse_reference_or_none
from ansible_collections.dockyard.images.plugins.module_utils._requests import (
    HTTPAdapter,
    HTTPConnection,
    HTTPConnectionPool,
    requests,
    require_requests,
    urllib3,
)

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


class _UnixConnection(HTTPConnection):
    def __init__(self, socket_path: str, *args, **kwargs):
        self._socket_path = socket_path
        super().__init__("localhost", *args, **kwargs)

    def _new_conn(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
        try:
            sock.connect(self._socket_path)
        except OSError as exc:
            sock.close()
            raise urllib3.exceptions.NewConnectionError(self, f"cannot connect to {self._socket_path}: {exc}") from None
        return sock


class _UnixPool(HTTPConnectionPool):
    def __init__(self, socket_path: str, maxsize: int):
        super().__init__("localhost", maxsize=maxsize)
        self._socket_path = socket_path

    def _new_conn(self):
        return _UnixConnection(self._socket_path, timeout=self.timeout.connect_timeout)


class UnixSocketAdapter(HTTPAdapter):
    """Sends every request of a session to one unix socket."""

    def __init__(self, socket_path: str, pool_size: int = 10):
        self._pool = _UnixPool(socket_path, pool_size)
        super().__init__()

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self._pool

    def get_connection(self, url, proxies=None):
        return self._pool

    def request_url(self, request, proxies):
        return request.path_url

    def close(self):
        self._pool.close()
        super().close()


MAX_API_VERSION = (1, 45)
DOWNLOAD_CHUNK = 1024 * 1024
ENGINE_URL = "http://docker-engine"
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
    if parts is None or parts.scheme != "unix" or not parts.path:
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
        require_requests()
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or netrc for a local socket
        self.session.mount(ENGINE_URL, UnixSocketAdapter(socket_path(docker_host), pool_size))
        self._info = None

    def info(self) -> EngineInfo:
        """Negotiate the API version (GET /version); cached."""
        if self._info is None:
            data = self.call("GET", "/version", versioned=False).json()
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

    def call(self, method: str, path: str, versioned: bool = True, ok=(200,), timeout=None, **kwargs):
        prefix = f"/v{self.info().api_version}" if versioned else ""
        try:
            response = self.session.request(method, ENGINE_URL + prefix + path, timeout=timeout or (10, self.timeout), **kwargs)
        except requests.exceptions.RequestException as exc:
            raise DockyardError(
                "unreachable", f"cannot talk to the engine at {self.docker_host}: {exc}; is it running, and may this user use its socket?"
            ) from None
        if response.status_code not in ok:
            raise engine_error(response, f"{method} {path}")
        return response

    def get_json(self, path: str, params=None, ok=(200,)):
        response = self.call("GET", path, params=params, ok=ok)
        return response.json() if response.status_code == 200 else None

    def inspect_image(self, name: str) -> Optional[dict]:
        return self.get_json(f"/images/{quote(name, safe='/:@')}/json", ok=(200, 404))

    def stream(self, method: str, path: str, params=None, headers=None, data=None):
        """Send a request (`data`: a body of any size, such as a generator of chunks) and yield each JSON
        object of the progress stream it answers, read to its end without a read timeout."""
        response = self.call(method, path, params=params, headers=headers, data=data, stream=True, timeout=(10, None))
        with response:
            try:
                for line in response.iter_lines():
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except ValueError:
                            continue
            except requests.exceptions.RequestException as exc:
                raise self._broken_off(f"{method} {path}", exc) from None

    def download(self, path: str, out: BinaryIO, params=None) -> None:
        """GET a body of any size (an image archive) into `out`, read without a read timeout."""
        response = self.call("GET", path, params=params, stream=True, timeout=(10, None))
        with response:
            try:
                for chunk in response.iter_content(DOWNLOAD_CHUNK):
                    out.write(chunk)
            except requests.exceptions.RequestException as exc:
                raise self._broken_off(f"GET {path}", exc) from None

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


def engine_error(response, what: str) -> DockyardError:
    """An engine's HTTP error; 404 and 409 say it all, else its message tells."""
    try:
        message = (response.json() or {}).get("message") or response.text
    except ValueError:
        message = response.text
    message = (message or "").strip()
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
            tags = [t for t in summary.get("RepoTags") or [] if t and t != "<none>:<none>"] or [None]
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
        """Of these images, those the engine holds, and the blobs a load into it need not read. An engine keeps
        no compressed blob: it holds an image, and layers. Docker's load reads a layer's file only for a ChainID
        it lacks; Podman's reuses any layer whose DiffID it holds, wherever it lies in the image. A blob needed
        by any image is not held, whatever another image's layers say."""
        ids = {record.id for record in self.images()} & {image.id for image in images}
        lacking = [image for image in images if image.id not in ids]
        unread = self.layers_unread([([d.digest for d in image.layers], image.diff_ids) for image in lacking])
        needed = {image.id for image in lacking} | {d.digest for image in lacking for d in image.layers} - unread
        return Holding(frozenset({d.digest for image in images for d in image.blobs} - needed), frozenset(ids))

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
        return {chain for diff_ids in self._layer_stacks() for chain in chain_ids(diff_ids)}

    def layers_unread(self, images: list, chains: Optional[set] = None) -> set:
        """Of the layer blobs of these (layer digests, DiffIDs) images, those a load into this engine reads no
        file of: Docker's, those whose ChainID it holds (`chains`, if read already); Podman's, those whose DiffID
        it holds at any depth (an archive must still name them, with any content: see _engine_archive)."""
        if self.kind == "docker":
            return layers_held(images, self.present_chain_ids() if chains is None else chains)
        return layers_held(images, {diff_id for diff_ids in self._layer_stacks() for diff_id in diff_ids}, by_chain=False)

    def _layer_stacks(self) -> list:
        """The DiffIDs of each image the engine holds, bottom layer first."""
        stacks = []
        for summary in self.client.get_json("/images/json", params={"all": "1"}) or []:
            inspect = self.client.inspect_image(summary["Id"]) or {}
            stacks.append(list((inspect.get("RootFS") or {}).get("Layers") or []))
        return stacks


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
