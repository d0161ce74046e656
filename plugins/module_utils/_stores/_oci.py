# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The embedded store: an OCI image layout directory that skopeo, podman, umoci and containerd read.

Blobs are kept byte-for-byte as the registry served them; a blob is committed only after its size
and digest were verified, so a blob file that exists with the right size is trusted without
re-hashing. Every write is temp file, fsync, rename. Two lock files serialise writers:
`gc.lock` is shared by pulls and exclusive for removals, `index.lock` guards index.json.
Partial downloads live in `.dockyard/partial/` and are resumed.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Optional

from ansible_collections.dockyard.images.plugins.module_utils._batch import safely
from ansible_collections.dockyard.images.plugins.module_utils._blob import CHUNK, DIGEST_ALGORITHMS, FileSink, sha256_digest
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import (
    CONTAINERD_NAME,
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    Manifest,
    image_blobs,
    index_entries,
    json_object,
    platform_of,
    read_config,
)
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform
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
    selected_or_fail,
)

if TYPE_CHECKING:
    from ansible_collections.dockyard.images.plugins.module_utils._archive import Exported
    from ansible_collections.dockyard.images.plugins.module_utils._pull import Plan
    from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient

REGISTRY_DIGEST = "io.dockyard.image.digest"
REGISTRY_MANIFEST_DIGEST = "io.dockyard.image.manifest-digest"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
_DOCKER_TO_OCI = {
    DOCKER_CONFIG: OCI_CONFIG,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
}
WRITE_BACK_BYTES = 8 * 1024 * 1024
_WALKED_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)


def _split_digest(digest: str) -> tuple:
    if not is_digest(digest):
        raise DockyardError("store_corrupt", f"{digest!r} is not a digest this store can hold")
    algorithm, _sep, encoded = digest.partition(":")
    return algorithm, encoded


@contextlib.contextmanager
def _os_errors(what: str):
    """Turn OS errors into DockyardErrors a user can act on."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DockyardError("disk_full", f"{what}: no space left on the device; free space or choose another store_path") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise DockyardError("invalid_argument", f"{what}: {exc.strerror} ({exc.filename}); run as a user who may write there or set store_path") from None
        raise DockyardError("store_corrupt", f"{what}: {exc}") from None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PartialBlob(FileSink):
    """A blob being downloaded, resumable across runs; it holds an exclusive lock on its file.

    Every WRITE_BACK_BYTES it asks the kernel to start writing what arrived to disk, so the fsync
    that commits the blob waits for little more than the tail while the download goes on.
    """

    def __init__(self, path: str, digest: str):
        super().__init__(digest, open(path, "ab+"))  # noqa: SIM115 - closed by close()
        self.path = path
        fcntl.flock(self.file, fcntl.LOCK_EX)
        self.file.seek(0)
        for chunk in iter(lambda: self.file.read(CHUNK), b""):
            self._count(chunk)  # what an earlier run wrote is resumed, not fetched again
        self._written_back = self.offset

    def write(self, chunk: bytes) -> None:
        with _os_errors(f"writing {self.path}"):
            super().write(chunk)
            if self.offset - self._written_back >= WRITE_BACK_BYTES:
                self._start_write_back()

    def _discard(self) -> None:
        super()._discard()
        self._written_back = 0

    def _start_write_back(self) -> None:
        self.file.flush()
        if hasattr(os, "posix_fadvise"):  # Linux starts writing dirty pages back and keeps them cached
            os.posix_fadvise(self.file.fileno(), self._written_back, self.offset - self._written_back, os.POSIX_FADV_DONTNEED)
        self._written_back = self.offset

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        """Close quietly: a committed blob was synced first, and a failed write already said why (disk_full, say)."""
        with contextlib.suppress(OSError):
            self.file.close()


class OciStore:
    """An OCI image layout at `root`."""

    name = "oci"

    def __init__(self, root: str, lock_timeout: float = 60.0):
        self.root = os.path.abspath(root)
        self.lock_timeout = lock_timeout
        self._private = os.path.join(self.root, ".dockyard")

    def describe(self) -> dict:
        return {"type": self.name, "path": self.root}

    # -- layout ----------------------------------------------------------------------------------

    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.root, "index.json"))

    def ensure_layout(self) -> None:
        with _os_errors(f"creating the OCI layout at {self.root}"):
            for folder in (os.path.join(self.root, "blobs", "sha256"), os.path.join(self._private, "partial")):
                os.makedirs(folder, exist_ok=True)
            if not os.path.exists(os.path.join(self.root, "oci-layout")):
                self._write_file(os.path.join(self.root, "oci-layout"), json.dumps(LAYOUT_VERSION).encode())
            if not os.path.exists(os.path.join(self.root, "index.json")):
                self._write_file(os.path.join(self.root, "index.json"), _index_bytes([]))

    def free_bytes(self) -> Optional[int]:
        """Free space where the store is (or would be created), or None if it cannot be told."""
        path = self.root
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        try:
            return shutil.disk_usage(path).free
        except OSError:
            return None

    def blob_path(self, digest: str) -> str:
        algorithm, encoded = _split_digest(digest)
        return os.path.join(self.root, "blobs", algorithm, encoded)

    def has_blob(self, digest: str, size: Optional[int] = None) -> bool:
        """Present means committed with the right size; committed blobs were verified once."""
        try:
            found = os.stat(self.blob_path(digest)).st_size
        except OSError:
            return False
        return size is None or found == size

    def read_blob(self, digest: str) -> Optional[bytes]:
        try:
            with open(self.blob_path(digest), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def local_manifest(self, digest: str) -> Optional[Manifest]:
        """A manifest or index held as a blob, else None."""
        body = self.read_blob(digest)
        if body is None:
            return None
        try:
            data = json_object(body, digest)
        except DockyardError:
            return None
        media_type = data.get("mediaType") if isinstance(data.get("mediaType"), str) else ""
        return Manifest(body, media_type or (OCI_INDEX if "manifests" in data else OCI_MANIFEST), digest)

    def put_blob(self, data: bytes) -> str:
        digest = sha256_digest(data)
        if not self.has_blob(digest, len(data)):
            self._write_file(self.blob_path(digest), data)
        return digest

    def open_partial(self, digest: str) -> PartialBlob:
        encoded = _split_digest(digest)[1]
        with _os_errors(f"opening a partial download in {self._private}"):
            return PartialBlob(os.path.join(self._private, "partial", f"{digest.split(':')[0]}-{encoded}"), digest)

    def commit_partial(self, partial: PartialBlob, digest: str) -> None:
        """Move a verified partial download into blobs/, durably."""
        target = self.blob_path(digest)
        with _os_errors(f"storing blob {digest} in {self.root}"):
            partial.sync()
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(partial.path, target)
            _fsync_dir(os.path.dirname(target))
        partial.close()

    def _write_file(self, path: str, data: bytes) -> None:
        folder = os.path.dirname(path)
        with _os_errors(f"writing {path}"):
            os.makedirs(folder, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(temp, 0o644)
                os.replace(temp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            _fsync_dir(folder)

    # -- locks -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, name: str, mode: int):
        self.ensure_layout()
        path = os.path.join(self._private, name)
        with _os_errors(f"locking {path}"):
            handle = open(path, "a")  # noqa: SIM115 - closed below
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(handle, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise DockyardError(
                            "store_locked", f"the store {self.root} stayed locked by another task for {self.lock_timeout:.0f} s; try again later"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            handle.close()

    def pull_lock(self):
        """Held (shared) while a pull adds blobs, so a removal cannot collect them meanwhile."""
        return self._lock("gc.lock", fcntl.LOCK_SH)

    def gc_lock(self):
        return self._lock("gc.lock", fcntl.LOCK_EX)

    # -- index.json --------------------------------------------------------------------------------

    def entries(self) -> list:
        path = os.path.join(self.root, "index.json")
        try:
            with open(path, "rb") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise DockyardError("store_corrupt", f"{path} cannot be read: {exc}; restore it or remove the store") from None
        manifests = data.get("manifests") if isinstance(data, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(entry, dict) for entry in manifests):
            raise DockyardError("store_corrupt", f"{path} is not an OCI image index")
        return manifests

    def find_entry(self, reference: Reference, platform: Optional[Platform]) -> Optional[dict]:
        """The index.json descriptor tagged `reference` for `platform` (any platform if None)."""
        for entry in self.entries():
            if (entry.get("annotations") or {}).get(REF_NAME) != reference.stored_name:
                continue
            if platform is None or _same_platform(entry.get("platform"), platform):
                return entry
        return None

    def record(self, tags: list) -> list:
        """Point each (reference, descriptor) of `tags` at the descriptor, for the descriptor's
        platform, in one write of index.json; return which of them changed."""
        with self._lock("index.lock", fcntl.LOCK_EX):
            entries = self.entries()
            changed = []
            for reference, descriptor in tags:
                kept = [e for e in entries if not _same_tag(e, reference, descriptor.get("platform"))]
                changed.append(len(kept) != len(entries) - 1 or descriptor not in entries)
                if changed[-1]:
                    entries = [*kept, descriptor]
            if any(changed):
                self._write_file(os.path.join(self.root, "index.json"), _index_bytes(entries))
            return changed

    # -- images ----------------------------------------------------------------------------------

    def image_for(self, entry: dict) -> ImageRecord:
        """An ImageRecord from an index.json descriptor, read from the store's own blobs with the one manifest reader."""
        annotations = entry.get("annotations") if isinstance(entry.get("annotations"), dict) else {}
        what = f"{self.root}: the image {annotations.get(REF_NAME) or entry.get('digest')!r:.200}"
        try:
            descriptor = Descriptor.from_json(entry, what)
            manifest = self.local_manifest(descriptor.digest)
            if manifest is None:
                raise DockyardError("store_corrupt", f"{what}: its manifest {descriptor.digest} is missing; pull the image again")
            config, layers = image_blobs(manifest, what)
            config_body = self.read_blob(config.digest)
            image_config = read_config(config_body, what) if config_body is not None else None
            platform = platform_of(entry, what) or (image_config.platform if image_config else None)
        except DockyardError as exc:
            if exc.reason == "store_corrupt":
                raise
            raise DockyardError("store_corrupt", f"{exc.message}; remove the image or pull it again") from None
        return ImageRecord(
            reference=_full_reference(annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)),
            id=config.digest,
            digest=annotations.get(REGISTRY_DIGEST) or descriptor.digest,
            manifest_digest=annotations.get(REGISTRY_MANIFEST_DIGEST) or descriptor.digest,
            platform=platform,
            created=image_config.created if image_config else None,
            layers=[LayerRecord(layer.digest, layer.size, layer.media_type) for layer in layers],
            config_size=config.size,
            ref_name=annotations.get(REF_NAME),
            handle=entry,
        )

    def images(self) -> list:
        return [self.image_for(entry) for entry in self.entries() if entry.get("mediaType") == OCI_MANIFEST]

    def is_complete(self, entry: dict) -> bool:
        """True when the manifest and every blob it names are present with the right sizes."""
        manifest = self._json_blob(entry["digest"], required=False)
        if not manifest:
            return False
        blobs = [manifest.get("config") or {}, *list(manifest.get("layers") or [])]
        return all(self.has_blob(b.get("digest", ""), b.get("size")) for b in blobs)

    # -- removal ---------------------------------------------------------------------------------

    def reachable(self, entries: list) -> set:
        """Every blob the index.json entries need: manifests, configs, layers, nested indexes,
        and the registry's own manifest and index kept beside them (but not what those list)."""
        found = set()
        queue = [(entry.get("digest", ""), entry.get("mediaType", "")) for entry in entries]
        for entry in entries:
            annotations = entry.get("annotations") or {}
            found.update(d for d in (annotations.get(REGISTRY_DIGEST), annotations.get(REGISTRY_MANIFEST_DIGEST)) if d)
        walked = set()
        while queue:
            digest, media_type = queue.pop()
            found.add(digest)
            if media_type not in _WALKED_TYPES or digest in walked:
                continue
            walked.add(digest)
            data = self._json_blob(digest, required=False) or {}
            children = [data.get("config") or {}, *(data.get("layers") or []), *(data.get("manifests") or [])]
            queue.extend((child.get("digest", ""), child.get("mediaType", "")) for child in children if child.get("digest"))
        return found

    def blobs_on_disk(self) -> dict:
        """digest → size of every committed blob."""
        found = {}
        blobs = os.path.join(self.root, "blobs")
        for algorithm in os.listdir(blobs) if os.path.isdir(blobs) else ():
            folder = os.path.join(blobs, algorithm)
            for name in os.listdir(folder):
                if algorithm in DIGEST_ALGORITHMS and not name.startswith("."):
                    found[f"{algorithm}:{name}"] = os.path.getsize(os.path.join(folder, name))
        return found

    def puller(self, client: RegistryClient, concurrency: int, check_mode: bool):
        """The store receives blobs itself: each verified, committed atomically, then the images tagged at once."""
        from ansible_collections.dockyard.images.plugins.module_utils._pull import FetchingPuller

        return FetchingPuller(_Receiver(self), client, concurrency, check_mode)

    def loader(self, source, concurrency: int, check_mode: bool):
        """An archive loads through the pull's own path: only the blobs the store lacks are copied, each verified."""
        return self.puller(source, concurrency, check_mode)

    def exporter(self, names: list) -> Exported:
        from ansible_collections.dockyard.images.plugins.module_utils._archive import exported

        images = [self.archive_image(record) for record in selected_or_fail(self.images(), names, f"the oci store at {self.root}")]
        return exported(images, lambda descriptor: open(self.blob_path(descriptor.digest), "rb"))

    def archive_image(self, record: ImageRecord):
        """The image a record names, as an archive (or a delivery) carries it: the manifest and index the registry
        served, when the store kept them, so that it keeps the registry's digests; every blob of it present."""
        from ansible_collections.dockyard.images.plugins.module_utils._archive import exported_image

        what = f"{self.root}: the image {image_label(record)}"
        stored = self.local_manifest(record.handle["digest"])
        if stored is None or not self.is_complete(record.handle):
            raise DockyardError("store_corrupt", f"{what} lacks some of its blobs; pull it again")
        manifest, top = self._as_served(record, stored)
        return exported_image(record, manifest, what, top)

    def _as_served(self, record: ImageRecord, stored: Manifest) -> tuple:
        """(manifest, top) as the registry served them, when the store kept them and they name the same blobs; else the stored one."""
        served = stored if record.manifest_digest == stored.digest else self.local_manifest(record.manifest_digest)
        if served is None or served.is_index or image_blobs(served, record.manifest_digest)[0].digest != record.id:
            served = stored
        top = self.local_manifest(record.digest) if record.digest != served.digest else None
        if top is None or not top.is_index or served.digest not in {entry["digest"] for entry in index_entries(top.body, record.digest)}:
            return served, None
        return served, top

    def holding(self, images: list) -> Holding:
        """Of these images, the blobs the store holds and the images it holds whole: what a delivery need not send."""
        return Holding.per_blob(images, lambda d: self.has_blob(d.digest, d.size), self.images())

    def plan_removal(self, request: RemovalRequest) -> RemovalPlan:
        records = self.images()
        targets, remaining, missing, in_use = plan_targets(records, request, f"the oci store at {self.root}")
        gone = [record.handle for record in targets]
        needed = self.reachable([entry for entry in self.entries() if entry not in gone])
        deleted = {digest: size for digest, size in self.blobs_on_disk().items() if digest not in needed} if request.prune else {}
        deleted_layers, kept_layers = layer_fate(targets, remaining, set(deleted))
        return RemovalPlan(targets, remaining, missing, in_use, deleted_layers, kept_layers, deleted)

    def remove(self, request: RemovalRequest, check_mode: bool) -> RemovalPlan:
        """Untag, then delete the blobs nothing needs any more, holding the store's exclusive lock.
        `force` changes nothing here: no container runs from this store."""
        if check_mode or not self.exists():
            return self.plan_removal(request)
        with self.gc_lock():
            plan = self.plan_removal(request)
            if plan.targets:
                gone = [record.handle for record in plan.targets]
                with self._lock("index.lock", fcntl.LOCK_EX):
                    kept = [entry for entry in self.entries() if entry not in gone]
                    self._write_file(os.path.join(self.root, "index.json"), _index_bytes(kept))
            for digest in plan.deleted_blobs:
                with _os_errors(f"deleting blob {digest} from {self.root}"), contextlib.suppress(FileNotFoundError):
                    os.unlink(self.blob_path(digest))
        return plan

    def _json_blob(self, digest: str, required: bool = True) -> Optional[dict]:
        try:
            body = self.read_blob(digest) if digest else None
        except DockyardError:
            body = None
        if body is None:
            if required:
                raise DockyardError("store_corrupt", f"blob {digest} named in {self.root}/index.json is missing; pull the image again")
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise DockyardError("store_corrupt", f"blob {digest} in {self.root} is not JSON") from None


class _Receiver:
    """The OCI store's end of a pull: each blob committed into the layout as it arrives (a partial
    download resumes), then every image whose blobs all came tagged in one write of index.json."""

    room_advice = "free space or choose another store_path"

    def __init__(self, store: OciStore):
        self.store = store
        self.spool = store.root
        self.has_blob = store.has_blob
        self.read_blob = store.read_blob
        self.local_manifest = store.local_manifest
        self.free_bytes = store.free_bytes

    def session(self, check_mode: bool):
        """A pull holds gc.lock shared, so that a removal cannot collect what it brings meanwhile."""
        return contextlib.nullcontext() if check_mode else self.store.pull_lock()

    def held(self, request: PullRequest) -> Optional[Held]:
        entry = self.store.find_entry(request.reference, request.platform)
        if entry is None and not request.platform_explicit:
            entry = self.store.find_entry(request.reference, None)
        if entry is None:
            return None
        digest = (entry.get("annotations") or {}).get(REGISTRY_DIGEST) or entry["digest"]
        return Held(digest, self.store.is_complete(entry), entry)

    def held_image(self, held: Held) -> ImageRecord:
        return self.store.image_for(held.handle)

    def received(self, descriptor: Descriptor) -> bool:
        return self.store.has_blob(descriptor.digest, descriptor.size)

    def receive(self, descriptor: Descriptor, fetch) -> None:
        partial = self.store.open_partial(descriptor.digest)
        try:
            if not self.store.has_blob(descriptor.digest, descriptor.size):  # another process may have finished it
                fetch(partial)
                self.store.commit_partial(partial, descriptor.digest)
        finally:
            partial.close()

    def put_blob(self, descriptor: Descriptor, body: bytes) -> None:
        self.store.put_blob(body)

    def retags(self, plan: Plan) -> bool:
        return (plan.held.handle if plan.held is not None else None) != _index_entry(plan)

    def arrived(self, plan: Plan) -> None:
        """Nothing yet: every image is tagged at commit, in one write of index.json."""

    def commit(self, plans: list) -> None:
        """Store every image's manifests (the registry's, and the OCI form the tag points at), then tag them all at once."""
        for plan in plans:
            plan.result.error = safely(self._store_manifests)(plan)
        plans = [plan for plan in plans if plan.result.error is None]
        entries = [_index_entry(plan) for plan in plans]
        try:
            changed = self.store.record([(plan.request.reference, entry) for plan, entry in zip(plans, entries)])
        except DockyardError as exc:
            for plan in plans:
                plan.result.error = exc.with_context(plan.request.reference.familiar)
            return
        for plan, tag_changed in zip(plans, changed):
            plan.result.changed = tag_changed or bool(plan.wanted_blobs)

    def _store_manifests(self, plan: Plan) -> None:
        resolved = plan.resolved
        for manifest in (resolved.index, resolved.manifest):
            if manifest is not None:
                self.store.put_blob(manifest.body)
        self.store.put_blob(oci_manifest(resolved.manifest))

    def refresh(self) -> None:
        """Nothing to read again: has_blob looks at the layout itself."""


def _index_entry(plan: Plan) -> dict:
    """The index.json descriptor that tags a pulled image: its OCI manifest, with the registry's digests."""
    resolved = plan.resolved
    body = oci_manifest(resolved.manifest)
    entry = {"mediaType": OCI_MANIFEST, "digest": sha256_digest(body), "size": len(body)}
    if plan.platform is not None:
        entry["platform"] = plan.platform.to_oci()
    name = resolved.reference.stored_name
    entry["annotations"] = {
        REF_NAME: name,
        CONTAINERD_NAME: name,
        REGISTRY_DIGEST: resolved.digest,
        REGISTRY_MANIFEST_DIGEST: resolved.manifest_digest,
    }
    return entry


def _full_reference(text: Optional[str]) -> Optional[Reference]:
    """The reference a ref.name spells, if it is a full one; other tools often write a bare tag."""
    return parse_reference_or_none(text) if text and "/" in text else None


def oci_manifest(manifest: Manifest) -> bytes:
    """The OCI form of a registry manifest: the same bytes if it already is OCI, else converted."""
    if manifest.media_type == OCI_MANIFEST:
        return manifest.body
    data = json.loads(manifest.body)
    converted = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": _oci_descriptor(data["config"])}
    converted["layers"] = [_oci_descriptor(layer) for layer in data.get("layers") or []]
    return json.dumps(converted, separators=(",", ":")).encode()


def _oci_descriptor(descriptor: dict) -> dict:
    result = dict(descriptor)
    result["mediaType"] = _DOCKER_TO_OCI.get(descriptor.get("mediaType"), descriptor.get("mediaType"))
    return result


def _index_bytes(manifests: list) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, indent=2).encode() + b"\n"


def _same_platform(data: Optional[dict], platform: Platform) -> bool:
    found = Platform.from_descriptor(data)
    return found is not None and found.matches(platform)


def _same_tag(entry: dict, reference: Reference, platform_data: Optional[dict]) -> bool:
    if (entry.get("annotations") or {}).get(REF_NAME) != reference.stored_name:
        return False
    wanted = Platform.from_descriptor(platform_data)
    return wanted is None or _same_platform(entry.get("platform"), wanted)
