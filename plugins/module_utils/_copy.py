# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Copy images from their registries into another registry: one platform each, or every platform.

reference → the source resolves the platform's manifest, or with every platform the index and all
its manifests (reading manifests the destination already holds from there) → the destination says
which blobs it lacks → each missing blob is fetched once, verified, and uploaded, or mounted from a
repository of the destination that has it → the manifests are pushed by digest, the index last,
then tagged. The source serves every blob at most once per call, however many images share it.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from ansible_collections.dockyard.images.plugins.module_utils._batch import each, largest_first, safely
from ansible_collections.dockyard.images.plugins.module_utils._blob import FileSink
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import Descriptor, Manifest, image_blobs, index_entries
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform, available_platforms
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference
from ansible_collections.dockyard.images.plugins.module_utils._registry import Destination, Registry, RegistryClient

COPIED = "copied"
MOUNTED = "mounted"
EXISTS = "exists"


@dataclass(frozen=True)
class CopyRequest:
    """One image a copy asks for, and for which platform; None copies every platform."""

    reference: Reference
    platform: Optional[Platform]


@dataclass
class BlobStatus:
    """A blob of a copied image: copied, mounted from another repository, or already there (exists)."""

    digest: str
    size: int
    status: str

    def to_dict(self) -> dict:
        return {"digest": self.digest, "size": self.size, "status": self.status}


@dataclass
class CopyResult:
    """What the copy did for one image: its digests, its blobs and the destination tag before and after."""

    request: CopyRequest
    digest: Optional[str] = None
    manifest_digest: Optional[str] = None
    platform: Optional[str] = None
    platforms: Optional[list] = None  # with every platform: the platforms of the manifests copied
    blobs: list = field(default_factory=list)
    tag_before: Optional[str] = None  # what the tag named at the destination before
    tag_after: Optional[str] = None
    changed: bool = False
    error: Optional[DockyardError] = None

    def to_dict(self, requested: str, destination: str) -> dict:
        result = {
            "reference": requested,
            "canonical": self.request.reference.canonical,
            "destination": f"{destination}/{self.request.reference.path}",
            "digest": self.digest,
            "manifest_digest": self.manifest_digest,
            "platform": self.platform,
            "platforms": self.platforms,
            "blobs": [blob.to_dict() for blob in self.blobs],
            "copied_bytes": sum(blob.size for blob in self.blobs if blob.status == COPIED),
            "reused_bytes": sum(blob.size for blob in self.blobs if blob.status != COPIED),
            "changed": self.changed,
        }
        if self.error is not None:
            result.update(self.error.to_result(), failed=True)
        return result


@dataclass
class _Manifest:
    """A manifest the copy puts at the destination by digest, and the blobs it names (none for an index)."""

    manifest: Manifest
    present: bool = False  # the destination holds it already
    blobs: tuple = ()

    @property
    def digest(self) -> str:
        return self.manifest.digest


@dataclass
class _Plan:
    """One image's way through a copy: its manifests, what the tag is to name and what the destination lacks."""

    request: CopyRequest
    result: CopyResult
    manifests: list = field(default_factory=list)  # in the order they are pushed: an index after its manifests
    tagged: Optional[_Manifest] = None  # what the tag names once copied
    done_digests: tuple = ()  # a tag that names one of these needs no push
    missing: list = field(default_factory=list)  # descriptors the destination lacks in this repository
    pushed: bool = False  # whether anything reached the destination for this image, even if it then failed


class Copier:
    """Copies a list of references into `destination` in one worker pool; check mode only predicts."""

    def __init__(self, client: RegistryClient, destination: Destination, concurrency: int = 3, check_mode: bool = False):
        self.client = client
        self.destination = destination
        self.concurrency = max(1, concurrency)
        self.check_mode = check_mode
        self._holders = {}  # digest -> a repository of the destination known to hold it
        self._lock = threading.Lock()

    def copy(self, requests: list) -> list:
        plans = [_Plan(request, CopyResult(request)) for request in requests]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="dockyard-copy") as pool:
            for plan, failure in each(plans, self._plan):
                plan.result.error = failure
            live = [plan for plan in plans if plan.result.error is None]
            missing, needing = {}, {}  # digest: descriptor, and the images that lack it
            for plan in live:
                for descriptor in plan.missing:
                    missing.setdefault(descriptor.digest, descriptor)
                    needing.setdefault(descriptor.digest, []).append(plan)
            transfers = {d.digest: pool.submit(self._transfer, d, needing[d.digest]) for d in largest_first(missing.values())}
            for plan in live:
                plan.result.error = safely(self._finish)(plan, transfers)
        for plan in plans:
            if plan.result.error is not None:
                plan.result.changed = plan.pushed
        return [plan.result for plan in plans]

    # -- plan ------------------------------------------------------------------------------------

    def _plan(self, plan: _Plan) -> None:
        reference, path = plan.request.reference, plan.request.reference.path
        registry = self.client.for_reference(reference)
        top_digest = reference.digest or registry.head_manifest(reference)
        held = {}  # digest -> whether the destination holds that manifest (then it is read from there)

        def from_destination(digest: str) -> Optional[Manifest]:
            manifest = self.destination.read_manifest(path, digest)
            held[digest] = manifest is not None
            return manifest

        def holds(digest: str) -> bool:
            if digest not in held:
                held[digest] = self.destination.manifest_digest(path, digest) is not None
            return held[digest]

        if plan.request.platform is None:
            self._plan_every_platform(plan, registry, top_digest, from_destination)
        else:
            self._plan_one_platform(plan, registry, top_digest, from_destination)
        for manifest in plan.manifests:
            manifest.present = holds(manifest.digest)
        if reference.tag:
            plan.result.tag_before = plan.result.tag_after = self.destination.manifest_digest(path, reference.tag)
        seen = set()
        for manifest in plan.manifests:
            for descriptor in manifest.blobs:
                if descriptor.digest in seen:
                    continue
                seen.add(descriptor.digest)
                # a manifest the destination accepted had all its blobs: no need to ask about each
                present = manifest.present or self.destination.has_blob(path, descriptor.digest)
                if present:
                    self._remember(descriptor.digest, path)
                else:
                    plan.missing.append(descriptor)
                plan.result.blobs.append(BlobStatus(descriptor.digest, descriptor.size, EXISTS if present else COPIED))
        plan.result.changed = bool(plan.missing) or not all(manifest.present for manifest in plan.manifests) or self._retag(plan)

    @staticmethod
    def _plan_one_platform(plan: _Plan, registry: Registry, top_digest: Optional[str], from_destination) -> None:
        resolved = registry.resolve(plan.request.reference, plan.request.platform, top_digest, from_destination)
        manifest = _Manifest(resolved.manifest, blobs=(resolved.config, *resolved.layers))
        plan.manifests, plan.tagged = [manifest], manifest
        plan.done_digests = (resolved.digest, resolved.manifest_digest)  # a tag naming the whole index holds this platform too
        result = plan.result
        result.digest, result.manifest_digest = resolved.digest, resolved.manifest_digest
        result.platform = str(resolved.platform) if resolved.platform else None

    @staticmethod
    def _plan_every_platform(plan: _Plan, registry: Registry, top_digest: Optional[str], from_destination) -> None:
        """The index and every manifest it lists, as they are, so the tag names the source's own digest."""
        reference = plan.request.reference

        def manifest(digest: Optional[str]) -> _Manifest:
            return _Manifest(registry.find_manifest(reference, digest, from_destination))

        top = manifest(top_digest)
        index = top if top.manifest.is_index else None
        if index is None:
            images = [top]
            plan.result.manifest_digest = top.digest
        else:
            entries = index_entries(index.manifest.body, reference.familiar)
            images = [manifest(Descriptor.from_json(entry).digest) for entry in entries]
            plan.result.platforms = available_platforms(entries)
        for image in images:
            if image.manifest.is_index:
                raise DockyardError(
                    "unsupported_media_type",
                    f"{reference.familiar}: its index lists another index ({image.digest}), which a copy of every platform does not"
                    " follow; copy the platforms one at a time",
                )
            config, layers = image_blobs(image.manifest, reference.familiar)
            image.blobs = (config, *layers)
        plan.manifests = images + ([index] if index else [])  # an index goes after the manifests it names
        plan.tagged, plan.done_digests = top, (top.digest,)
        plan.result.digest = top.digest

    def _remember(self, digest: str, path: str) -> None:
        with self._lock:
            self._holders.setdefault(digest, path)

    @staticmethod
    def _retag(plan: _Plan) -> bool:
        """A tag is pushed unless it names this image already."""
        return plan.request.reference.tag is not None and plan.result.tag_before not in plan.done_digests

    # -- transfer --------------------------------------------------------------------------------

    def _transfer(self, descriptor: Descriptor, needing: list) -> None:
        """Put one blob into every repository that lacks it: fetched from the source at most once."""
        spool, done = None, set()

        def fetched(source: Reference):
            nonlocal spool
            if spool is None:
                spool = FileSink(descriptor.digest, tempfile.TemporaryFile())  # noqa: SIM115 - closed by spool.close() below
                self.client.for_reference(source).fetch_blob(source, descriptor, spool)
                spool.file.flush()
            return spool.file

        try:
            for plan in needing:
                path = plan.request.reference.path
                status = EXISTS if path in done else self._place(descriptor, path, plan.request.reference, fetched)
                plan.pushed = plan.pushed or (status != EXISTS and not self.check_mode)
                done.add(path)
                for blob in plan.result.blobs:
                    if blob.digest == descriptor.digest:
                        blob.status = status
        finally:
            if spool is not None:
                spool.close()

    def _place(self, descriptor: Descriptor, path: str, source: Reference, fetched) -> str:
        """Mount the blob into `path` from a repository that holds it, else upload `fetched(source)`; say which."""
        with self._lock:
            holder = self._holders.get(descriptor.digest)
        if self.check_mode:  # the first repository to need it is predicted to copy it; the rest mount
            self._remember(descriptor.digest, path)
            return COPIED if holder is None else MOUNTED
        location = None
        if holder is not None:
            location = self.destination.mount_blob(path, descriptor.digest, holder)
            if location is None:
                return MOUNTED
        self.destination.upload_blob(path, descriptor.digest, descriptor.size, fetched(source), location)
        self._remember(descriptor.digest, path)
        return COPIED

    def _finish(self, plan: _Plan, transfers: dict) -> None:
        for descriptor in plan.missing:
            transfers[descriptor.digest].result()
        retag = self._retag(plan)
        if self.check_mode:
            if retag:
                plan.result.tag_after = plan.tagged.digest
            return
        path = plan.request.reference.path
        for manifest in plan.manifests:
            if not manifest.present:
                self.destination.put_manifest(path, manifest.digest, manifest.manifest)
                plan.pushed = True
        if retag:
            self.destination.put_manifest(path, plan.request.reference.tag, plan.tagged.manifest)
            plan.result.tag_after = plan.tagged.digest
