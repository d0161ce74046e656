# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Copy images from their registries into another registry: one platform each, or every platform.

reference → the destination says what the tag names while the source is reached → the source
resolves the platform's manifest, or with every platform the index and all its manifests at once
(reading manifests the destination already holds from there) → as each manifest arrives, each of its
blobs the destination lacks is fetched once, verified, and uploaded, or mounted from a repository of
the destination that has it → once an image's blobs are all there, the manifests an index names are
pushed by digest, then the index (or the image) by its tag. The source serves every blob at most
once per call, however many images share it.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable, Optional

from ansible_collections.dockyard.images.plugins.module_utils._batch import each, largest_first, resolve_workers, safely
from ansible_collections.dockyard.images.plugins.module_utils._blob import FileSink
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import INDEX_TYPES, Descriptor, Manifest, image_blobs, index_entries
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
    """A manifest the copy puts at the destination, and the blobs it names (none for an index)."""

    manifest: Manifest
    present: Optional[bool] = None  # the destination holds it already; None: read by tag, not asked yet
    blobs: tuple = ()

    @property
    def digest(self) -> str:
        return self.manifest.digest


@dataclass
class _Plan:
    """One image's way through a copy: its manifests, what the tag names before and which blobs it wants."""

    request: CopyRequest
    result: CopyResult
    index: int  # its place in the list: blobs several images lack are placed in that order
    manifests: list = field(default_factory=list)  # in the order they are pushed: an index after its manifests, the tagged one last
    done_digests: tuple = ()  # a tag that names one of these needs no push
    wants: list = field(default_factory=list)  # _Want, one for each blob of a manifest the destination lacks
    wanted: set = field(default_factory=set)  # their digests
    abandoned: bool = False  # planning failed: what it wants and has not started is not placed
    pushed: bool = False  # whether anything reached the destination for this image, even if it then failed

    @property
    def tagged(self) -> _Manifest:
        """What the tag names once copied: the last manifest pushed."""
        return self.manifests[-1]


@dataclass
class _Want:
    """A blob an image lacks in its repository as far as its plan knows; its transfer says what it became."""

    plan: _Plan
    descriptor: Descriptor
    done: threading.Event = field(default_factory=threading.Event)
    status: Optional[str] = None
    error: Optional[BaseException] = None


@dataclass
class _Transfer:
    """One blob on its way: the images that want it, placed one after another by one task at a time, and the
    source's bytes, fetched by the first that needs them and kept for the rest until every image is planned."""

    descriptor: Descriptor
    queue: deque = field(default_factory=deque)
    running: bool = False
    spool: Optional[FileSink] = None
    error: Optional[BaseException] = None  # why the source's bytes could not be had

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class _Transfers:
    """The blob transfers of a copy, `concurrency` at a time. An image's blobs start as soon as its manifests
    are read, but only once every image before it in the list is planned: a blob several images lack is then
    placed in the order they were asked for (uploaded into the first, mounted into the rest), however the
    planning went, so that check mode predicts what a copy does."""

    def __init__(self, pool: ThreadPoolExecutor, place: Callable[[_Want, _Transfer], str]):
        self._pool, self._place = pool, place
        self._lock = threading.Lock()
        self._opened = 1  # plans with a lower index start their blobs at once
        self._waiting = {}  # plan index: wants waiting for the plans before it
        self._transfers = {}  # digest: _Transfer
        self._planned = False

    def want(self, plan: _Plan, descriptors: list) -> None:
        """Place these blobs into the plan's repository (largest first, as every batch starts)."""
        wants = [_Want(plan, descriptor) for descriptor in largest_first(descriptors) if descriptor.digest not in plan.wanted]
        with self._lock:
            plan.wanted.update(want.descriptor.digest for want in wants)
            plan.wants.extend(wants)
            if plan.index < self._opened:
                self._queue(wants)
            else:
                self._waiting.setdefault(plan.index, []).extend(wants)

    def planned_up_to(self, index: int) -> None:
        """Every plan up to `index` is planned: the next one may start its blobs."""
        with self._lock:
            self._opened = index + 2
            self._queue(self._waiting.pop(index + 1, []))

    def planned(self) -> None:
        """No blob is wanted any more: a spool is closed once its blob has no image left to place."""
        with self._lock:
            self._planned = True
            for transfer in self._transfers.values():
                if not transfer.running:
                    transfer.close()

    def _queue(self, wants: list) -> None:
        for want in wants:
            transfer = self._transfers.setdefault(want.descriptor.digest, _Transfer(want.descriptor))
            transfer.queue.append(want)
            if not transfer.running:
                transfer.running = True
                self._pool.submit(self._run, transfer)

    def _run(self, transfer: _Transfer) -> None:
        while True:
            with self._lock:
                if not transfer.queue:
                    transfer.running = False
                    if self._planned:
                        transfer.close()
                    return
                want = transfer.queue.popleft()
            try:
                if transfer.error is not None:  # the source failed to serve it: every image still waiting fails with it
                    want.error = transfer.error
                elif not want.plan.abandoned:
                    want.status = self._place(want, transfer)
            except BaseException as exc:  # placing it into this image's repository failed: this image fails
                want.error = exc
            finally:
                want.done.set()


def read_workers(concurrency: int, images: int) -> int:
    """Threads that read a copy's manifests, beside its `concurrency` blob transfers."""
    return max(concurrency, resolve_workers(images))


def copy_connections(concurrency: int, images: int) -> int:
    """Connections a copy of `images` images may hold to one registry at once: its plans, its manifest reads
    and its transfers. A connection pool any smaller would close the ones it cannot keep, and they would be
    opened again."""
    return resolve_workers(images) + read_workers(concurrency, images) + concurrency


class Copier:
    """Copies a list of references into `destination`, blobs `concurrency` at a time and manifests besides them;
    check mode only predicts."""

    def __init__(self, client: RegistryClient, destination: Destination, concurrency: int = 3, check_mode: bool = False):
        self.client = client
        self.destination = destination
        self.concurrency = max(1, concurrency)
        self.check_mode = check_mode
        self._holders = {}  # digest: {a repository of the destination known to hold it: the index of the plan that found it}
        self._lock = threading.Lock()
        self._reads = self._transfers = None  # while copying: the pool of manifest requests, and the blob transfers

    def copy(self, requests: list) -> list:
        plans = [_Plan(request, CopyResult(request), index) for index, request in enumerate(requests)]
        # manifests are small requests bound by round trips: the manifests of an index are read at once,
        # besides the blobs, which start as soon as their manifest is read
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="dockyard-copy")
        reads = ThreadPoolExecutor(max_workers=read_workers(self.concurrency, len(plans)), thread_name_prefix="dockyard-copy-read")
        with pool, reads:
            self._reads, self._transfers = reads, _Transfers(pool, self._place)
            for plan, failure in each(plans, self._plan):
                plan.result.error = failure
                self._transfers.planned_up_to(plan.index)
            self._transfers.planned()
            for plan in plans:
                if plan.result.error is None:
                    plan.result.error = safely(self._finish)(plan)
        self._reads = self._transfers = None
        for plan in plans:
            if plan.result.error is not None:
                plan.result.changed = plan.pushed
        return [plan.result for plan in plans]

    # -- plan ------------------------------------------------------------------------------------

    def _plan(self, plan: _Plan) -> None:
        try:
            self._plan_image(plan)
        except BaseException:
            plan.abandoned = True
            raise

    def _plan_image(self, plan: _Plan) -> None:
        reference, path = plan.request.reference, plan.request.reference.path
        registry = self.client.for_reference(reference)
        # the destination says what the tag names (probing how it is spoken to first) while the source is reached
        tag_before = self._reads.submit(self.destination.manifest_digest, path, reference.tag) if reference.tag else None
        top_digest = self._top_digest(registry, reference, tag_before)
        if plan.request.platform is None:
            self._plan_every_platform(plan, registry, top_digest)
        else:
            self._plan_one_platform(plan, registry, top_digest)
        plan.result.tag_before = plan.result.tag_after = tag_before.result() if tag_before else None
        for manifest in plan.manifests:
            if manifest.present is None:  # read by tag from the source: pushed by tag if the tag moves, else asked for
                manifest.present = not self._retag(plan) and self.destination.manifest_digest(path, manifest.digest) is not None

    @staticmethod
    def _top_digest(registry: Registry, reference: Reference, tag_before: Optional[Future]) -> Optional[str]:
        """The digest to read first: the pin, or what the tag names at the source (a HEAD), so that a manifest
        the destination holds is read there. None, and the tag is read with one GET, when by the time the source
        is reached the destination has said it lacks the tag: its manifest is then the source's to read."""
        if reference.digest:
            return reference.digest
        registry.probe()
        if tag_before is not None and tag_before.done() and tag_before.exception() is None and tag_before.result() is None:
            return None
        return registry.head_manifest(reference)

    def _plan_one_platform(self, plan: _Plan, registry: Registry, top_digest: Optional[str]) -> None:
        held = {}
        resolved = registry.resolve(plan.request.reference, plan.request.platform, top_digest, self._from_destination(plan, held))
        manifest = _Manifest(resolved.manifest, held.get(resolved.manifest.digest), (resolved.config, *resolved.layers))
        plan.manifests = [manifest]
        plan.done_digests = (resolved.digest, resolved.manifest_digest)  # a tag naming the whole index holds this platform too
        result = plan.result
        result.digest, result.manifest_digest = resolved.digest, resolved.manifest_digest
        result.platform = str(resolved.platform) if resolved.platform else None
        self._take(plan, manifest)

    def _plan_every_platform(self, plan: _Plan, registry: Registry, top_digest: Optional[str]) -> None:
        """The index and every manifest it lists, as they are, so the tag names the source's own digest; the
        manifests are read at once, and each one's blobs start as soon as it is read."""
        reference = plan.request.reference
        top = self._read_manifest(plan, registry, top_digest)
        plan.result.digest, plan.done_digests = top.digest, (top.digest,)
        if not top.manifest.is_index:
            plan.result.manifest_digest = top.digest
            plan.manifests = [top]
            self._take(plan, top)
            return
        entries = index_entries(top.manifest.body, reference.familiar)
        plan.result.platforms = available_platforms(entries)
        listed = [Descriptor.from_json(entry) for entry in entries]
        for descriptor in listed:  # refused before anything is pushed; a manifest read below is checked again
            self._refuse_index(plan, descriptor.media_type, descriptor.digest)
        reads = [self._reads.submit(self._read_manifest, plan, registry, descriptor.digest) for descriptor in listed]
        for read in as_completed(reads):
            self._take(plan, read.result())
        plan.manifests = [read.result() for read in reads] + [top]  # an index goes after the manifests it names

    def _read_manifest(self, plan: _Plan, registry: Registry, digest: Optional[str]) -> _Manifest:
        """The manifest `digest` names (the tag's when None): the destination's when it holds it, else the source's."""
        held = {}
        manifest = registry.find_manifest(plan.request.reference, digest, self._from_destination(plan, held))
        return _Manifest(manifest, held.get(manifest.digest))

    def _from_destination(self, plan: _Plan, held: dict) -> Callable[[str], Optional[Manifest]]:
        """How the registry reads a manifest it is given a digest of: from the destination, noting in `held` whether it was there."""

        def read(digest: str) -> Optional[Manifest]:
            manifest = self.destination.read_manifest(plan.request.reference.path, digest)
            held[digest] = manifest is not None
            return manifest

        return read

    @staticmethod
    def _refuse_index(plan: _Plan, media_type: str, digest: str) -> None:
        if media_type in INDEX_TYPES:
            raise DockyardError(
                "unsupported_media_type",
                f"{plan.request.reference.familiar}: its index lists another index ({digest}), which a copy of every platform does not"
                " follow; copy the platforms one at a time",
            )

    def _take(self, plan: _Plan, image: _Manifest) -> None:
        """An image manifest read: the blobs of one the destination holds are there (it accepted the manifest with
        them), those of any other start on their way."""
        self._refuse_index(plan, image.manifest.media_type, image.digest)
        if not image.blobs:
            config, layers = image_blobs(image.manifest, plan.request.reference.familiar)
            image.blobs = (config, *layers)
        if image.present:
            for descriptor in image.blobs:
                self._remember(descriptor.digest, plan)
        else:
            self._transfers.want(plan, list(image.blobs))

    def _remember(self, digest: str, plan: _Plan) -> None:
        with self._lock:
            self._holders.setdefault(digest, {}).setdefault(plan.request.reference.path, plan.index)

    @staticmethod
    def _retag(plan: _Plan) -> bool:
        """A tag is pushed unless it names this image already."""
        return plan.request.reference.tag is not None and plan.result.tag_before not in plan.done_digests

    # -- transfer --------------------------------------------------------------------------------

    def _place(self, want: _Want, transfer: _Transfer) -> str:
        """Put one blob into the repository of the image that wants it: there already, mounted from a repository an
        image before it in the list put or found it in, else uploaded from the source's bytes, fetched once."""
        plan, digest = want.plan, want.descriptor.digest
        path = plan.request.reference.path
        with self._lock:
            holders = self._holders.get(digest, {})
            if path in holders:
                return EXISTS
            holder = min(((index, held) for held, index in holders.items() if index < plan.index), default=None)
        if self.destination.has_blob(path, digest):
            status = EXISTS
        elif self.check_mode:  # the first repository to need it is predicted to copy it; the rest mount
            status = COPIED if holder is None else MOUNTED
        else:
            status = self._push_blob(want, transfer, holder[1] if holder else None)
            plan.pushed = True
        self._remember(digest, plan)
        return status

    def _push_blob(self, want: _Want, transfer: _Transfer, holder: Optional[str]) -> str:
        descriptor, source = want.descriptor, want.plan.request.reference
        path, location = source.path, None
        if holder is not None:
            location = self.destination.mount_blob(path, descriptor.digest, holder)
            if location is None:
                return MOUNTED
        if transfer.spool is None:
            spool = FileSink(descriptor.digest, tempfile.TemporaryFile())  # noqa: SIM115 - closed with the transfer
            try:
                self.client.for_reference(source).fetch_blob(source, descriptor, spool)
                spool.file.flush()
            except BaseException as exc:
                spool.close()
                transfer.error = exc
                raise
            transfer.spool = spool
        self.destination.upload_blob(path, descriptor.digest, descriptor.size, transfer.spool.file, location)
        return COPIED

    def _finish(self, plan: _Plan) -> None:
        for want in plan.wants:
            want.done.wait()
        statuses = {want.descriptor.digest: want.status or COPIED for want in plan.wants}
        seen = set()
        for manifest in plan.manifests:
            for descriptor in manifest.blobs:
                if descriptor.digest not in seen:
                    seen.add(descriptor.digest)
                    plan.result.blobs.append(BlobStatus(descriptor.digest, descriptor.size, statuses.get(descriptor.digest, EXISTS)))
        failed = next((want.error for want in plan.wants if want.error is not None), None)
        if failed is not None:
            raise failed
        retag = self._retag(plan)
        plan.result.changed = retag or any(status != EXISTS for status in statuses.values()) or not all(m.present for m in plan.manifests)
        if self.check_mode:
            if retag:
                plan.result.tag_after = plan.tagged.digest
            return
        path = plan.request.reference.path
        # the manifests an index names at once, then the index; the tagged manifest is pushed by its tag alone
        named = [manifest for manifest in plan.manifests[:-1] if not manifest.present]
        plan.pushed = plan.pushed or bool(named)
        list(self._reads.map(lambda manifest: self.destination.put_manifest(path, manifest.digest, manifest.manifest), named))
        if retag or not plan.tagged.present:
            self.destination.put_manifest(path, plan.request.reference.tag if retag else plan.tagged.digest, plan.tagged.manifest)
            plan.pushed = True
        if retag:
            plan.result.tag_after = plan.tagged.digest
