# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The containerd store: containerd's image store in one namespace (k8s.io, what the kubelet sees).

How it talks to containerd, and why:
- What it reads and stores goes over containerd's own gRPC API on its socket (_grpc: HTTP/2, HPACK
  and protobuf in Python's standard library): images, content, containers, tasks, namespaces, the
  version, leases, and writes into the content store. Each question takes a fraction of a
  millisecond on one connection; a `ctr` process takes about 30 ms. grpcio and containerd's
  protobufs are not needed on the host (compiled wheels, tens of MB, per Python version and
  architecture), where the collection promises Python and `requests` only.
- What only a client knows how to do goes through the `ctr` that ships with every containerd,
  matched to its version: `ctr images import`, which names an image, sets the labels that tie its
  blobs to it for the garbage collector and unpacks it into the default snapshotter (the one the
  CRI plugin uses), and `ctr images rm --sync`.
- Our registry client does every fetch: mirrors, credentials, platforms, pins and policies behave as
  on the other stores, and every blob is verified (size and digest) in a private temporary directory
  before containerd sees a byte. Then the blob is written into the content store at once (containerd
  checks size and digest again), on a connection of its own while the pull's other blobs download,
  under a lease the pull takes first and drops last: containerd's garbage collector, which runs after
  any deletion, would otherwise take a blob no image names yet. The lease expires on its own after a
  day if the process dies. Once an image's blobs are in, `ctr images import -` receives an OCI layout
  of its manifests alone, for one platform, naming it by its tag and, as the CRI plugin names its own
  pulls, by `repository@digest`, so that a pod which names the image by digest finds it too.
  containerd never fetches from a registry itself, and no credential ever goes on a command line or
  into its config. The fetching path is the OCI store's (_pull); this store's _Receiver is only its
  end: the spool, the writes and the import.
- Listing reads the images, the namespace's content, and the manifests and configs; sizes come from
  the manifests' descriptors. The CRI plugin adds an image named `sha256:<config digest>` for each
  image it sees: that is the image's id, not another image, and goes with it.
- Removal is `ctr images rm --sync`: containerd's garbage collector then deletes the content and the
  snapshots nothing references any more, whether we ask or not (so `prune: false` cannot keep them).
  Bytes freed are the compressed sizes of the blobs the namespace held that only the removed images
  reached and that no other namespace holds (those stay on disk); after the removal, only the blobs
  that really left the content store are counted.
- What it costs, measured against Debian's containerd 1.6.20 on loopback (2 CPUs), five images
  sharing a base, 150 MB: a cold pull 1.58 s against 1.87 s for `ctr images pull` of each image
  (when ctr imported every blob itself: 2.58 s; ctr hashes every byte it imports, one blob after
  another, where containerd alone hashes what comes over gRPC, several blobs at once); a re-run that
  finds every image 0.13 s, with no registry request and no `ctr` (0.31 s when each question was a
  `ctr` process), against 0.57 s for `ctr images pull`, which asks the registry again.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from ansible_collections.dockyard.images.plugins.module_utils._blob import FileSink, sha256_digest
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._grpc import (
    ALREADY_EXISTS,
    DEADLINE_EXCEEDED,
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    Channel,
    GrpcError,
    Message,
    encode_field,
)
from ansible_collections.dockyard.images.plugins.module_utils._manifest import (
    CONTAINERD_NAME,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    Manifest,
    image_blobs,
    index_entries,
    json_object,
    read_config,
)
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform, choose_manifest, host_platform, is_attestation, runs_on
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, is_digest, parse_reference_or_none
from ansible_collections.dockyard.images.plugins.module_utils._stores import (
    Held,
    Holding,
    ImageRecord,
    LayerRecord,
    PullRequest,
    RemovalPlan,
    RemovalRequest,
    image_label,
    layer_fate,
    plan_targets,
    refuse_in_use,
    selected_or_fail,
)

if TYPE_CHECKING:
    from ansible_collections.dockyard.images.plugins.module_utils._archive import Exported
    from ansible_collections.dockyard.images.plugins.module_utils._pull import Plan
    from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_NAMESPACE = "k8s.io"
CONNECT_TIMEOUT = 5  # seconds ctr waits for the socket to answer
PROBE_TIMEOUT = 3
IMPORT_BYTES_PER_TIMEOUT = 256 * 1024 * 1024  # an import may take `timeout` seconds per this many bytes
WRITE_CHUNK = 1024 * 1024  # bytes per message of a write into the content store (containerd takes up to 16 MiB)
WRITE_DATA, WRITE_COMMIT = 1, 2  # containerd.services.content.v1.WriteAction
LEASE_EXPIRY, LEASE_SECONDS = "containerd.io/gc.expire", 24 * 3600
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*\Z")
_ALIAS_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")  # the CRI plugin's image id, kept as an image name
_TASK_STATES = ("unknown", "created", "running", "stopped", "paused", "pausing")  # containerd.v1.types.Status
_UNREADABLE = ("not_found", "unsupported_media_type", "store_corrupt", "platform_not_found")
_UNREACHABLE = (
    "failed to dial",
    "connection refused",
    "connection error",
    "error while dialing",
    "context deadline exceeded",
    "transport is closing",
)


def socket_address(address: Optional[str]) -> str:
    """The socket path of `containerd_address` (a path, or unix:// and a path); refused if it is neither."""
    text = address or DEFAULT_ADDRESS
    path = text[len("unix://") :] if text.startswith("unix://") else text
    if not path.startswith("/") or "\x00" in path:
        raise DockyardError("invalid_argument", f"containerd_address {text!r} is not a unix socket path; give one such as {DEFAULT_ADDRESS}")
    return path


def checked_namespace(namespace: Optional[str]) -> str:
    name = namespace or DEFAULT_NAMESPACE
    if not _NAMESPACE_RE.match(name) or len(name) > 76:
        raise DockyardError("invalid_argument", f"containerd_namespace {name!r} is not a containerd namespace name (letters, digits, and . _ - between them)")
    return name


class Ctr:
    """containerd's `ctr` client for one socket and namespace; every failure is a DockyardError."""

    def __init__(self, address: str, namespace: str, timeout: float):
        self.address = address
        self.namespace = namespace
        self.timeout = timeout
        self.binary = shutil.which("ctr") or "ctr"

    @property
    def where(self) -> str:
        return f"containerd at {self.address} (namespace {self.namespace})"

    def command(self, args: list) -> list:
        return [self.binary, "--address", self.address, "--connect-timeout", f"{CONNECT_TIMEOUT}s", "--namespace", self.namespace, *args]

    def check_socket(self) -> None:
        if not os.path.exists(self.address):
            raise DockyardError(
                "unreachable",
                f"{self.where}: no socket at {self.address}; is containerd running there? "
                "Set containerd_address to its socket (k3s and RKE2 keep theirs under /run/k3s/containerd/)",
            )

    def run(self, args: list, what: str) -> str:
        """ctr's standard output as text; a DockyardError that says what failed and what to do, else."""
        self.check_socket()
        try:
            done = subprocess.run(self.command(args), capture_output=True, timeout=self.timeout, check=False, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise self.no_ctr() from None
        except subprocess.TimeoutExpired:
            raise DockyardError("unreachable", f"{self.where} did not answer {what} within {self.timeout:.0f} s; is it overloaded or stuck?") from None
        except OSError as exc:
            raise DockyardError("engine_error", f"{self.where}: cannot run ctr {what}: {exc}") from None
        if done.returncode != 0:
            raise self.failure(done.stderr.decode("utf-8", "replace"), what)
        return done.stdout.decode("utf-8", "replace")

    def no_ctr(self) -> DockyardError:
        return DockyardError("engine_error", f"{self.where}: the ctr command, which ships with containerd, is not installed here; install containerd's client")

    def failure(self, stderr: str, what: str) -> DockyardError:
        message = " ".join(line.strip() for line in stderr.strip().splitlines()[-3:])[:500] or "no message"
        lowered = message.lower()
        reason = "unreachable" if any(needle in lowered for needle in _UNREACHABLE) else "not_found" if lowered.endswith("not found") else "engine_error"
        return _failure(self.where, reason, what, message)


def _failure(where: str, reason: str, what: str, message: str) -> DockyardError:
    """containerd's answer to `what` as a DockyardError with `reason` and what to do about it."""
    if reason == "unreachable":
        return DockyardError(reason, f"{where} does not answer ({what}): {message}; is containerd running, and may this user use its socket?")
    if reason == "not_found":
        return DockyardError(reason, f"{where} failed {what}: {message}")
    return DockyardError(reason, f"{where} failed {what}: {message}; containerd's log (journalctl -u containerd) may tell more")


class _SpoolUnreadable(Exception):
    """A spooled blob that could not be read while it was being written into containerd."""


def _listed(answers: list) -> list:
    """What a List method answers: field 1 of each item (a name, an id or a digest), items being field 1 of each message."""
    return [item.text(1) for answer in answers for item in answer.messages(1)]


class Api:
    """containerd's own gRPC API on its socket, for what a store reads and stores: one connection, a fraction
    of a millisecond per question, where each `ctr` is a process of about 30 ms. Every failure is a
    DockyardError, as ctr's are, whatever containerd answers."""

    def __init__(self, ctr: Ctr, timeout: float):
        self.ctr = ctr
        self.channel = Channel(ctr.address, timeout, {"containerd-namespace": ctr.namespace}, connect_timeout=CONNECT_TIMEOUT)

    def call(self, method: str, what: str, read: Callable, request: bytes = b"", namespace: Optional[str] = None, limit: Optional[int] = None):
        """What `read` makes of the answer's messages (each read into its fields): a malformed field in them
        fails as the call does."""
        self.ctr.check_socket()
        metadata = {"containerd-namespace": namespace} if namespace else None
        try:
            answers = self.channel.call(f"/containerd.services.{method}", request, metadata=metadata, **({"limit": limit} if limit else {}))
            return read([Message(answer) for answer in answers])
        except GrpcError as exc:
            raise self._failure(exc, what) from None

    def _failure(self, exc: GrpcError, what: str) -> DockyardError:
        if exc.status == RESOURCE_EXHAUSTED:  # more than a manifest or config may be: not what the store should hold there
            return DockyardError("store_corrupt", f"{self.ctr.where} failed {what}: {exc.message}")
        reason = "unreachable" if exc.status in (UNAVAILABLE, DEADLINE_EXCEEDED) else "not_found" if exc.status == NOT_FOUND else "engine_error"
        return _failure(self.ctr.where, reason, what, exc.message[:500])

    def version(self) -> str:
        return self.call("version.v1.Version/Version", "to tell its version", lambda answers: answers[0].text(1) if answers else "")

    def images(self) -> dict:
        """name: target digest of every image of the namespace."""

        def read(answers: list) -> dict:
            images = [image for answer in answers for image in answer.messages(1)]
            return {image.text(1): image.message(3).text(2) for image in images if is_digest(image.message(3).text(2))}

        return self.call("images.v1.Images/List", "to list its images", read)

    def content(self, namespace: Optional[str] = None) -> set:
        return self.call("content.v1.Content/List", "to list its content", lambda answers: set(filter(is_digest, _listed(answers))), namespace=namespace)

    def read(self, digest: str, limit: int) -> bytes:
        """A blob of the content store, whole; store_corrupt past `limit` bytes."""
        body = self.call(
            "content.v1.Content/Read",
            f"to read {digest}",
            lambda answers: b"".join(a.data(2) for a in answers),
            encode_field(1, digest),
            limit=limit + 64 * 1024,
        )
        if len(body) > limit:
            raise DockyardError("store_corrupt", f"{self.ctr.where}: the content {digest} is over the {limit} bytes a manifest or config may have")
        return body

    def containers(self) -> list:
        """(container id, image name) of every container of the namespace."""

        def read(answers: list) -> list:
            return [(container.text(1), container.text(3)) for answer in answers for container in answer.messages(1)]

        return self.call("containers.v1.Containers/List", "to list its containers", read)

    def task_states(self) -> dict:
        """container id: the state of its task (running, stopped, ...)."""

        def read(answers: list) -> dict:
            tasks = [task for answer in answers for task in answer.messages(1)]
            return {task.text(1): _TASK_STATES[task.number(4)] if task.number(4) < len(_TASK_STATES) else "unknown" for task in tasks}

        return self.call("tasks.v1.Tasks/List", "to list its tasks", read)

    def namespaces(self) -> list:
        return self.call("namespaces.v1.Namespaces/List", "to list its namespaces", _listed)

    def take_lease(self) -> str:
        """A lease of the namespace that keeps what is written under it from containerd's garbage collector
        until it is dropped, or for a day if this process dies first (containerd's own client's default)."""
        lease = f"dockyard-{uuid.uuid4().hex}"
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + LEASE_SECONDS))
        label = encode_field(1, LEASE_EXPIRY) + encode_field(2, expires)  # a map's entry: key 1, value 2
        try:
            self.call("leases.v1.Leases/Create", "to take a lease", list, encode_field(1, lease) + encode_field(3, label))
        except DockyardError:
            if lease not in self.call("leases.v1.Leases/List", "to list its leases", _listed):
                raise
        return lease  # made by a first try whose answer was lost, if not by the second

    def drop_lease(self, lease: str) -> None:
        self.call("leases.v1.Leases/Delete", "to drop its lease", list, encode_field(1, lease))

    def write(self, lease: str, descriptor: Descriptor, path: str) -> None:
        """The verified blob at `path` into the content store under `lease`, containerd checking its size and
        digest again as it commits; on a connection of its own, so that several blobs go in at once."""
        what = f"to store {descriptor.digest}"
        ref = f"dockyard-{descriptor.digest}-{uuid.uuid4().hex[:12]}"
        channel = Channel(self.ctr.address, self.channel.timeout, self.channel.metadata, connect_timeout=CONNECT_TIMEOUT)

        def requests():
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed below, in the generator
            except OSError as exc:
                raise _SpoolUnreadable(exc.strerror or str(exc)) from None
            with handle:
                offset, chunk = 0, b""
                following = self._chunk(handle)
                while True:
                    chunk, following = following, self._chunk(handle) if len(following) == WRITE_CHUNK else b""
                    action = WRITE_COMMIT if not following else WRITE_DATA
                    head = encode_field(1, action) + encode_field(2, ref) + encode_field(3, descriptor.size) + encode_field(4, descriptor.digest)
                    yield head + encode_field(5, offset) + encode_field(6, chunk)
                    if action == WRITE_COMMIT:
                        return
                    offset += len(chunk)

        def confirmed(answers: list) -> bool:
            last = Message(answers[-1]) if answers else None
            return last is not None and last.number(1) == WRITE_COMMIT and last.text(6) == descriptor.digest

        self.ctr.check_socket()
        try:
            if not confirmed(channel.stream("/containerd.services.content.v1.Content/Write", requests(), metadata={"containerd-lease": lease})):
                raise DockyardError("engine_error", f"{self.ctr.where} did not confirm it stored {descriptor.digest}")
        except GrpcError as exc:
            if exc.status != ALREADY_EXISTS:
                raise self._failure(exc, what) from None
            # another writer committed it meanwhile: the lease keeps it too, until an image names it
            resource = encode_field(1, descriptor.digest) + encode_field(2, "content")
            self.call("leases.v1.Leases/AddResource", what, list, encode_field(1, lease) + encode_field(2, resource))
        except _SpoolUnreadable as exc:
            raise DockyardError("engine_error", f"cannot read {path}, the blob spooled to be stored in {self.ctr.where}: {exc}") from None
        finally:
            channel.close()

    @staticmethod
    def _chunk(handle) -> bytes:
        try:
            return handle.read(WRITE_CHUNK)
        except OSError as exc:
            raise _SpoolUnreadable(exc.strerror or str(exc)) from None


@dataclass
class _Held:
    """An image name of the namespace and what its content store holds of it, for one platform."""

    name: str
    target: str
    top: Optional[Manifest] = None
    manifest: Optional[Manifest] = None
    platform: Optional[Platform] = None
    config: Optional[Descriptor] = None
    layers: tuple = ()
    created: Optional[str] = None
    reach: dict = field(default_factory=dict)  # digest: size of every blob of the namespace it keeps alive

    @property
    def complete(self) -> bool:
        """Its platform manifest, config and layers are all in the content store."""
        return self.config is not None and self.config.digest in self.reach and all(layer.digest in self.reach for layer in self.layers)


class ContainerdStore:
    """containerd's images in one namespace: read and stored over its gRPC API, imported and removed with `ctr`."""

    name = "containerd"

    def __init__(self, address: Optional[str] = None, namespace: Optional[str] = None, timeout: float = 60.0):
        self.root = socket_address(address)
        self.namespace = checked_namespace(namespace)
        self.timeout = timeout
        self.ctr = Ctr(self.root, self.namespace, timeout)
        self.api = Api(self.ctr, timeout)
        self._blobs = {}
        self._blobs_lock = threading.Lock()

    @property
    def where(self) -> str:
        return self.ctr.where

    def describe(self) -> dict:
        return {"type": self.name, "address": self.root, "namespace": self.namespace, "containerd_version": self.api.version()}

    # -- what containerd holds -----------------------------------------------------------------------

    def image_names(self) -> dict:
        """name: target digest of every image of the namespace."""
        return self.api.images()

    def content(self, namespace: Optional[str] = None) -> set:
        """Digests of every blob the namespace's content store holds."""
        return self.api.content(namespace)

    def blob(self, digest: str) -> bytes:
        """A manifest, index or config from the content store (immutable by digest, so read once)."""
        with self._blobs_lock:
            if digest in self._blobs:
                return self._blobs[digest]
        body = self.api.read(digest, MAX_MANIFEST_BYTES)
        if digest.startswith("sha256:") and sha256_digest(body) != digest:
            raise DockyardError("store_corrupt", f"{self.where}: the content {digest} is not what its digest names, or not a manifest or config")
        with self._blobs_lock:
            self._blobs[digest] = body
        return body

    def local_manifest(self, content: set, digest: str) -> Optional[Manifest]:
        """A manifest or index the content store holds, else None."""
        if digest not in content:
            return None
        try:
            body = self.blob(digest)
            data = json_object(body, digest)
        except DockyardError as exc:
            if exc.reason in _UNREADABLE:  # gone meanwhile, or not a manifest: the image is incomplete
                return None
            raise
        media_type = data.get("mediaType") if isinstance(data.get("mediaType"), str) else ""
        return Manifest(body, media_type or (OCI_INDEX if "manifests" in data else OCI_MANIFEST), digest)

    def inspect(self, name: str, target: str, content: set, platform: Optional[Platform] = None, explicit: bool = False) -> _Held:
        """What the namespace holds of image `name`: for `platform` (else the host's, else any held). An
        image whose manifests this collection cannot read (an artifact, say) is listed by its digest alone."""
        held = _Held(name, target)
        try:
            return self._inspect(held, content, platform, explicit)
        except DockyardError as exc:
            if exc.reason in _UNREADABLE:
                return held
            raise

    def _inspect(self, held: _Held, content: set, platform: Optional[Platform], explicit: bool) -> _Held:
        name, target = held.name, held.target
        what = f"{self.where}: the image {name}"
        top = self.local_manifest(content, target)
        if top is None:
            return held
        held.top, held.reach[target] = top, len(top.body)
        manifest = top
        if top.is_index:
            present = [entry for entry in index_entries(top.body, what) if entry.get("digest") in content and entry.get("mediaType") in MANIFEST_TYPES]
            for entry in present:  # containerd keeps what every held platform references
                child = self.local_manifest(content, entry["digest"])
                if child is not None:
                    held.reach[child.digest] = len(child.body)
                    config, layers = image_blobs(child, what)
                    held.reach.update({d.digest: d.size for d in (config, *layers) if d.digest in content})
            try:
                choice = choose_manifest(present, platform or host_platform(), MANIFEST_TYPES)
            except DockyardError:
                if explicit:
                    return held
                choice = None
                fallback = [entry for entry in present if not is_attestation(entry)]
                if not fallback:
                    return held
            entry = choice.descriptor if choice is not None else fallback[0]
            held.platform = choice.platform if choice is not None else Platform.from_descriptor(entry.get("platform"))
            manifest = self.local_manifest(content, entry["digest"])
            if manifest is None:
                return held
        held.manifest = manifest
        held.config, held.layers = image_blobs(manifest, what)
        held.reach.update({d.digest: d.size for d in (held.config, *held.layers) if d.digest in content})
        if held.config.digest in content:
            config = read_config(self.blob(held.config.digest), f"{what}: its config")
            held.created = config.created
            held.platform = held.platform or config.platform
        if explicit and platform is not None and held.platform is not None and not runs_on(held.platform, platform):
            return _Held(name, target, reach=held.reach)
        return held

    def _listing(self) -> tuple:
        """(records of the tagged images, {alias name: _Held}, the content set).

        Aliases are the names the CRI plugin adds for an image it sees: its id (`sha256:<config digest>`),
        and `repository@digest` beside a tag of that repository with that digest. They name the image
        under a tag, and go with its last tag."""
        names = self.image_names()
        content = self.content()
        helds = [self.inspect(name, target, content) for name, target in names.items()]
        references = {held.name: _full_reference(held.name) for held in helds}
        tags = {(ref.name, held.target) for held in helds for ref in [references[held.name]] if ref is not None and ref.tag}

        def alias(held: _Held) -> bool:
            ref = references[held.name]
            return _ALIAS_RE.match(held.name) is not None or (ref is not None and not ref.tag and (ref.name, held.target) in tags)

        tagged = [held for held in helds if not alias(held)]
        ids = {self._id(held) for held in tagged}
        aliases = {held.name: held for held in helds if alias(held)}
        # an id name whose image lost every tag is the image itself, listed untagged
        shown = tagged + [held for name, held in aliases.items() if self._id(held) not in ids]
        containers = self.containers_by_image({held.name: self._id(held) for held in helds})
        records = [self.record_of(held, containers) for held in shown]
        return records, aliases, content

    @staticmethod
    def _id(held: _Held) -> str:
        return held.config.digest if held.config is not None else held.target

    def record_of(self, held: _Held, containers: Optional[dict] = None) -> ImageRecord:
        alias = _ALIAS_RE.match(held.name) is not None
        reference = None if alias else _full_reference(held.name)
        image_id = self._id(held)
        return ImageRecord(
            reference=reference,
            id=image_id,
            digest=held.target,
            manifest_digest=held.manifest.digest if held.manifest is not None else None,
            platform=held.platform,
            created=held.created,
            layers=[LayerRecord(layer.digest, layer.size, layer.media_type) for layer in held.layers],
            config_size=held.config.size if held.config is not None else 0,
            containers=list((containers or {}).get(image_id, [])),
            ref_name=None if alias or reference is not None else held.name,
            handle=held,
        )

    def images(self) -> list:
        return self._listing()[0]

    def containers_by_image(self, ids: dict) -> dict:
        """Image id → the namespace's containers made from it, with their task's state; `ids` maps image names to ids."""
        users = {}
        rows = self.api.containers()
        if not rows:
            return users
        states = self.api.task_states()
        for container, image in rows:
            image_id = ids.get(image) or (image if _ALIAS_RE.match(image) else None)
            if image_id is not None:
                users.setdefault(image_id, []).append({"id": container[:12], "name": container, "state": states.get(container, "created")})
        return users

    # -- pulls ----------------------------------------------------------------------------------------

    def puller(self, client: RegistryClient, concurrency: int, check_mode: bool):
        """Our client fetches and verifies the blobs containerd lacks; `ctr images import` receives them."""
        from ansible_collections.dockyard.images.plugins.module_utils._pull import FetchingPuller

        return FetchingPuller(_Receiver(self), client, concurrency, check_mode)

    def loader(self, source, concurrency: int, check_mode: bool):
        """An archive loads through the pull's own path: only the blobs containerd lacks are imported, each verified first."""
        return self.puller(source, concurrency, check_mode)

    def exporter(self, names: list) -> Exported:
        from ansible_collections.dockyard.images.plugins.module_utils._archive import exported, exported_image

        images = []
        for record in selected_or_fail(self._listing()[0], names, self.where):
            held, what = record.handle, f"{self.where}: the image {image_label(record)}"
            if not held.complete or held.manifest is None:
                raise DockyardError("store_corrupt", f"{what} lacks some of its blobs in the content store; pull it again")
            images.append(exported_image(record, held.manifest, what, held.top if held.top is not None and held.top.is_index else None))
        return exported(images, self.open_content)

    def holding(self, images: list) -> Holding:
        """Of these images, the blobs the namespace's content store holds and the images it holds whole."""
        content = self.content()
        return Holding.per_blob(images, lambda d: d.digest in content, self.images())

    @contextlib.contextmanager
    def open_content(self, descriptor: Descriptor):
        """A blob of the content store as a stream (`ctr content get`); the reader verifies it."""
        self.ctr.check_socket()
        try:
            process = subprocess.Popen(
                self.ctr.command(["content", "get", descriptor.digest]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError:
            raise self.ctr.no_ctr() from None
        try:
            yield process.stdout
        finally:
            process.stdout.close()
            if process.poll() is None:
                process.kill()
            process.wait()

    def import_layout(self, files: list, index: dict, platform: Optional[Platform], size: int) -> None:
        """Stream an OCI image layout (index.json, and (digest, bytes or path) blobs) into `ctr images import`,
        unpacking for one platform; fails with containerd's message."""
        self.ctr.check_socket()
        args = ["images", "import"]
        if platform is not None:
            args += ["--platform", str(platform)]
        deadline = self.timeout * (1 + size // IMPORT_BYTES_PER_TIMEOUT)
        with tempfile.TemporaryFile() as errors, tempfile.TemporaryFile() as output:
            try:
                process = subprocess.Popen(self.ctr.command([*args, "-"]), stdin=subprocess.PIPE, stdout=output, stderr=errors)
            except FileNotFoundError:
                raise self.ctr.no_ctr() from None
            timer = threading.Timer(deadline, process.kill)
            timer.start()
            started = time.monotonic()
            try:
                with contextlib.suppress(BrokenPipeError), tarfile.open(fileobj=process.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    _add(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
                    _add(tar, "index.json", json.dumps(index).encode())
                    for folder in ("blobs", "blobs/sha256"):
                        info = tarfile.TarInfo(folder)
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        tar.addfile(info)
                    for digest, source in files:
                        _add(tar, "blobs/" + digest.replace(":", "/", 1), source)
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
                process.wait()
            except OSError as exc:  # a blob of the private directory could not be read
                raise DockyardError("engine_error", f"{self.where}: cannot stream the image to ctr: {exc}") from None
            finally:
                timer.cancel()
                if process.poll() is None:
                    process.kill()
                    process.wait()
            if process.returncode != 0:
                if time.monotonic() - started >= deadline:
                    raise DockyardError("unreachable", f"{self.where} did not finish importing within {deadline:.0f} s")
                errors.seek(0)
                failure = self.ctr.failure(errors.read().decode("utf-8", "replace"), "to import the image")
                raise failure if failure.reason == "unreachable" else DockyardError("engine_error", failure.message)

    # -- removal --------------------------------------------------------------------------------------

    def _plan(self, request: RemovalRequest) -> tuple:
        """(the plan, the image names to remove, the content set before)."""
        records, aliases, content = self._listing()
        targets, remaining, missing, in_use = plan_targets(records, request, f"the containerd store at {self.root} (namespace {self.namespace})")
        left = {record.id for record in remaining}
        refuse_in_use(targets, remaining, request.force, self.where, f"ctr -n {self.namespace} containers rm NAME")
        gone_ids = {record.id for record in targets} - left
        names = [record.handle.name for record in targets]
        names += [name for name, held in aliases.items() if self._id(held) in gone_ids and name not in names]
        staying = [record.handle for record in remaining] + [held for name, held in aliases.items() if name not in names]
        needed = {digest for held in staying for digest in held.reach}
        elsewhere = self._other_namespaces_content() if names else set()
        going = [record.handle for record in targets] + [aliases[name] for name in names if name in aliases]
        deleted = {d: s for held in going for d, s in held.reach.items() if d not in needed and d in content and d not in elsewhere}
        deleted_layers, kept_layers = layer_fate(targets, remaining, set(deleted))
        return RemovalPlan(targets, remaining, missing, in_use, deleted_layers, kept_layers, deleted), names, content

    def _other_namespaces_content(self) -> set:
        """Blobs other namespaces hold: containerd keeps those on disk, so removing them here frees nothing."""
        held = set()
        for namespace in self.api.namespaces():
            if namespace and namespace != self.namespace and _NAMESPACE_RE.match(namespace):
                held |= self.content(namespace)
        return held

    def plan_removal(self, request: RemovalRequest) -> RemovalPlan:
        return self._plan(request)[0]

    def remove(self, request: RemovalRequest, check_mode: bool) -> RemovalPlan:
        """Remove the names (and the CRI id names of images no tag keeps), then wait for containerd's
        garbage collector; count only the blobs that really left the content store."""
        plan, names, before = self._plan(request)
        if check_mode or not names:
            return plan
        self.ctr.run(["images", "rm", "--sync", "--", *names], f"to remove {', '.join(names)}")
        gone = before - self.content()
        plan.deleted_blobs = {digest: size for digest, size in plan.deleted_blobs.items() if digest in gone}
        plan.deleted_layers = [layer for layer in plan.deleted_layers if layer.digest in gone]
        return plan


def _add(tar: tarfile.TarFile, name: str, source) -> None:
    """A regular file into the tar stream, from bytes or from a file's path."""
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o644, 0
    if isinstance(source, bytes):
        info.size = len(source)
        tar.addfile(info, io.BytesIO(source))
        return
    with open(source, "rb") as handle:
        info.size = os.fstat(handle.fileno()).st_size
        tar.addfile(info, handle)


def _full_reference(name: str) -> Optional[Reference]:
    """The reference an image name spells, if it is a full one (containerd's names are)."""
    return parse_reference_or_none(name) if "/" in name and not _ALIAS_RE.match(name) else None


def open_containerd(address: Optional[str], namespace: Optional[str], timeout: float) -> ContainerdStore:
    return ContainerdStore(address, namespace, timeout)


def probe_containerd(address: Optional[str], namespace: Optional[str], timeout: float) -> Optional[ContainerdStore]:
    """containerd when its socket exists and answers, else None; a host without the socket runs nothing."""
    try:
        if not os.path.exists(socket_address(address)):
            return None
        store = ContainerdStore(address, namespace, min(timeout, PROBE_TIMEOUT))
        store.api.version()
    except DockyardError:
        return None
    return ContainerdStore(address, namespace, timeout)


# -- the receiver ---------------------------------------------------------------------------------------


class _Receiver:
    """containerd's end of a pull: our client's verified blobs are spooled in a private directory, then
    `ctr images import` takes each image's manifests and only the blobs containerd lacked, each once."""

    room_advice = "free space there or set TMPDIR to a directory with room"

    def __init__(self, store: ContainerdStore):
        self.store = store
        self.names = {}
        self.content = set()
        self.spool = tempfile.gettempdir()
        self.lease = None  # what keeps the blobs written into containerd until an import names them

    @contextlib.contextmanager
    def session(self, check_mode: bool):
        """Read what the namespace holds once; a real pull spools into a private directory, removed in every outcome."""
        self.names = self.store.image_names()
        self.content = self.store.content()
        if check_mode:
            yield
            return
        self.spool = tempfile.mkdtemp(prefix="dockyard-containerd-")
        try:
            self.lease = self.store.api.take_lease()
            yield
        finally:
            if self.lease is not None:
                with contextlib.suppress(DockyardError):  # else it expires on its own
                    self.store.api.drop_lease(self.lease)
            shutil.rmtree(self.spool, ignore_errors=True)

    def held(self, request: PullRequest) -> Optional[Held]:
        name = request.reference.stored_name
        target = self.names.get(name)
        if target is None:
            return None
        image = self.store.inspect(name, target, self.content, request.platform, request.platform_explicit)
        return Held(target, image.complete and self._digest_name_held(request.reference, target), image)

    def _digest_name_held(self, reference: Reference, digest: str) -> bool:
        """Whether the `repository@digest` name beside a tag is there (see _import)."""
        return not reference.tag or self.names.get(f"{reference.name}@{digest}") == digest

    def held_image(self, held: Held) -> ImageRecord:
        return self.store.record_of(held.handle)

    def has_blob(self, digest: str, size: int) -> bool:
        return digest in self.content

    def local_manifest(self, digest: str) -> Optional[Manifest]:
        return self.store.local_manifest(self.content, digest)

    def read_blob(self, digest: str) -> Optional[bytes]:
        path = self._path(digest)
        if os.path.exists(path):
            with open(path, "rb") as handle:
                return handle.read()
        return self.store.blob(digest) if digest in self.content else None

    def free_bytes(self) -> Optional[int]:
        try:
            return shutil.disk_usage(self.spool).free
        except OSError:
            return None

    def _path(self, digest: str) -> str:
        return os.path.join(self.spool, digest.replace(":", "-", 1))

    def received(self, descriptor: Descriptor) -> bool:
        return os.path.exists(self._path(descriptor.digest))

    def receive(self, descriptor: Descriptor, fetch) -> None:
        path = self._path(descriptor.digest)
        with _spool_errors(path):
            sink = FileSink(descriptor.digest, open(path + ".partial", "wb"))  # noqa: SIM115 - closed below
        try:
            with _spool_errors(path):
                fetch(sink)
                sink.file.flush()
        finally:
            sink.close()
        self._store(descriptor, path)

    def put_blob(self, descriptor: Descriptor, body: bytes) -> None:
        path = self._path(descriptor.digest)
        with _spool_errors(path), open(path + ".partial", "wb") as handle:
            handle.write(body)
        self._store(descriptor, path)

    def _store(self, descriptor: Descriptor, path: str) -> None:
        """A verified blob from the spool into containerd's content store, under the pull's lease, while the
        pull's other blobs still download; it counts as received once containerd holds it. Without a ctr to
        import the image with, nothing goes in."""
        if not shutil.which(self.store.ctr.binary):
            raise self.store.ctr.no_ctr()
        self.store.api.write(self.lease, descriptor, path + ".partial")
        os.replace(path + ".partial", path)

    def retags(self, plan: Plan) -> bool:
        held = plan.held.handle if plan.held is not None else None
        resolved = plan.resolved
        same = held is not None and plan.held.complete and held.target == resolved.digest and held.manifest is not None
        return not (same and held.manifest.digest == resolved.manifest_digest)

    def arrived(self, plan: Plan) -> None:
        """Import the image as soon as its blobs are in, while the pull's other blobs still download: over a
        network, where the cores wait on the link, the import of every image but the last costs no time."""
        self._import(plan)

    def commit(self, plans: list) -> None:
        """Every image was imported as it arrived."""

    def _import(self, plan: Plan) -> None:
        """Import the image's manifests into containerd (its other blobs are in already), which names and unpacks
        it, then check the name points at it."""
        resolved, reference = plan.resolved, plan.request.reference
        held = plan.held.handle if plan.held is not None else None
        if not plan.wanted_blobs and held is not None and plan.held.complete and held.target == resolved.digest:
            return
        name = reference.stored_name
        top = resolved.top
        entry = {"mediaType": top.media_type, "digest": top.digest, "size": len(top.body)}
        names = [{CONTAINERD_NAME: name, REF_NAME: reference.tag}] if reference.tag else [{CONTAINERD_NAME: name}]
        if reference.tag:  # what containerd's own CRI pull adds: a pod that names the image by digest finds it
            names.append({CONTAINERD_NAME: f"{reference.name}@{resolved.digest}"})
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{**entry, "annotations": annotations} for annotations in names]}
        files = [(top.digest, top.body)]
        if resolved.manifest.digest != top.digest:
            files.append((resolved.manifest.digest, resolved.manifest.body))
        self.store.import_layout(files, index, plan.platform, sum(d.size for d in plan.wanted_blobs))
        after = self.store.image_names().get(name)
        if after != resolved.digest:
            raise DockyardError("engine_error", f"{self.store.where} imported {name} but holds it as {after or 'nothing'}, not {resolved.digest}")
        plan.result.changed = True

    def refresh(self) -> None:
        with contextlib.suppress(DockyardError):
            self.content = self.store.content()


@contextlib.contextmanager
def _spool_errors(path: str):
    try:
        yield
    except OSError as exc:
        reason = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "engine_error"
        raise DockyardError(reason, f"cannot write {path}: {exc.strerror}") from None
