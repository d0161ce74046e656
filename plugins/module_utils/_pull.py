# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pull images from registries into a store that receives blobs itself: one fetching path, two ends.

reference → the registry resolves a manifest for the platform → the store says which blobs it
lacks → room is reserved for them → the registry streams only those, verified, to the store's
receiver → the receiver makes the images whose blobs all came into tagged images.
All images of one call share one worker pool, and a blob two images need is fetched once.

A receiver is a store's end of this path (the Receiver protocol): the OCI store commits each blob
into its layout and tags the images in one write of index.json; containerd's receiver spools the
blobs in a private directory and has `ctr images import` take each image's manifests and those
blobs. Everything else (what is present, statuses, room, dedupe, check mode, per-image failure)
is written here once.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional, Protocol

from ansible_collections.dockyard.images.plugins.module_utils._batch import each, largest_first, safely
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import Descriptor, Manifest, ResolvedImage, read_config
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import (
    ALREADY_EXISTS,
    MISSING,
    PULL_COMPLETE,
    Held,
    ImageRecord,
    LayerStatus,
    PullRequest,
    PullResult,
)

if TYPE_CHECKING:
    from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient


@dataclass
class Plan:
    """One image's way through a pull: what the store held, what it resolved to, which blobs it brings."""

    request: PullRequest
    result: PullResult
    held: Optional[Held] = None
    resolved: Optional[ResolvedImage] = None
    platform: Optional[Platform] = None
    wanted_blobs: list[Descriptor] = field(default_factory=list)


class Receiver(Protocol):
    """A store's end of the fetching path."""

    spool: str  # the directory the blobs are written to before they are the store's: its free space is reserved
    room_advice: str  # what to do when it has too little

    def session(self, check_mode: bool) -> ContextManager: ...  # around the whole pull: locks, listings, spool

    def held(self, request: PullRequest) -> Optional[Held]: ...

    def held_image(self, held: Held) -> ImageRecord: ...

    def has_blob(self, digest: str, size: int) -> bool: ...  # the store held it when the pull began (or got it since)

    def local_manifest(self, digest: str) -> Optional[Manifest]: ...

    def read_blob(self, digest: str) -> Optional[bytes]: ...  # a blob the store held or this pull received

    def free_bytes(self) -> Optional[int]: ...

    def received(self, descriptor: Descriptor) -> bool: ...

    def receive(self, descriptor: Descriptor, fetch: Callable[[Any], None]) -> None: ...  # fetch(sink) writes verified bytes

    def put_blob(self, descriptor: Descriptor, body: bytes) -> None: ...  # a blob read and verified in memory

    def retags(self, plan: Plan) -> bool: ...  # whether the store's name would point elsewhere

    def arrived(self, plan: Plan) -> None: ...  # the image's blobs are all in: the store may take it while others download

    def commit(self, plans: list[Plan]) -> None: ...  # tag the images; set each plan's changed or error

    def refresh(self) -> None: ...  # after a failure: look again at which blobs the store holds


class _Room:
    """The free space where blobs arrive, reserved image by image for the blobs each one brings."""

    def __init__(self, receiver: Receiver):
        self.receiver = receiver
        self.free = receiver.free_bytes()
        self.reserved = {}  # digest: size

    def reserve(self, plan: Plan) -> Optional[DockyardError]:
        """Reserve room for the blobs `plan` lacks; a disk_full error, before any download, if they do not fit."""
        new = {d.digest: d.size for d in plan.wanted_blobs if d.digest not in self.reserved}
        needed = sum(self.reserved.values()) + sum(new.values())
        if self.free is not None and needed > self.free:
            return DockyardError(
                "disk_full",
                f"{plan.request.reference.familiar}: the pull needs {needed} bytes but only {self.free} are free under "
                f"{self.receiver.spool}; {self.receiver.room_advice}",
                bytes_needed=needed,
                bytes_free=self.free,
            )
        self.reserved.update(new)
        return None


class FetchingPuller:
    """Pulls a list of references into a store through its receiver, in one pool; check mode only predicts."""

    def __init__(self, receiver: Receiver, client: RegistryClient, concurrency: int = 3, check_mode: bool = False):
        self.receiver = receiver
        self.client = client
        self.concurrency = max(1, concurrency)
        self.check_mode = check_mode
        self._inflight = {}
        self._inflight_lock = threading.Lock()
        self._configs = {}  # digest: the bytes of a config read while resolving, before room was reserved

    def pull(self, requests: list[PullRequest]) -> list[PullResult]:
        plans = [Plan(request, PullResult(request)) for request in requests]
        with self.receiver.session(self.check_mode), ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="dockyard-pull") as pool:
            # resolving is a few small requests per image, bound by round trips rather than bandwidth:
            # every image resolves at once (up to RESOLVE_WORKERS), downloads stay within concurrency,
            # and an image's blobs start coming as soon as it and the images before it are resolved
            room, downloads = _Room(self.receiver), _Downloads(pool, self._download)
            for plan, failure in each(plans, self._resolve):
                plan.result.error = failure or (safely(self._assign_statuses)(plan, room.reserved) if plan.resolved is not None else None)
                if plan.result.error is None and plan.resolved is not None:
                    plan.result.error = room.reserve(plan)
                    if plan.result.error is not None:
                        self._refuse(plan)
                    elif not self.check_mode:
                        self._start_downloads(plan, downloads)
            if not self.check_mode:
                self._finish([plan for plan in plans if plan.result.error is None and plan.resolved is not None], downloads)
            failed = [plan for plan in plans if plan.result.error is not None]
            if failed and not self.check_mode:
                self.receiver.refresh()
            for plan in failed:
                self._report_failure(plan)
        return [plan.result for plan in plans]

    def _report_failure(self, plan: Plan) -> None:
        """A failed image changed the store only by the blobs it did bring; the rest are missing."""
        result = plan.result
        for layer in result.layers:
            if not self.receiver.has_blob(layer.digest, layer.size):
                layer.status = MISSING
        result.changed = not self.check_mode and any(self.receiver.has_blob(d.digest, d.size) for d in plan.wanted_blobs)

    # -- resolve ---------------------------------------------------------------------------------

    def _resolve(self, plan: Plan) -> None:
        request, result = plan.request, plan.result
        plan.held = held = self.receiver.held(request)
        result.before = held.digest if held is not None else None
        pin = request.reference.digest
        present = held is not None and held.complete and (pin is None or held.digest == pin)
        if present and (request.policy == "missing" or request.reference.pinned):
            self._report_present(plan)
            return
        registry = self.client.for_reference(request.reference)
        # a HEAD tells whether a held tag moved; a tag the store lacks is fetched with one GET at once
        head_digest = None if request.reference.pinned or held is None else registry.head_manifest(request.reference)
        if present and head_digest and head_digest == held.digest:
            self._report_present(plan)
            return
        resolved = registry.resolve(request.reference, request.platform, head_digest, self.receiver.local_manifest)
        plan.resolved = resolved
        plan.platform = resolved.platform or self._config_platform(registry, resolved, request)
        result.digest = resolved.digest
        result.manifest_digest = resolved.manifest_digest
        result.id = resolved.config.digest
        result.platform_fallback = resolved.platform_fallback
        result.platform = str(plan.platform) if plan.platform else None

    def _config_platform(self, registry, resolved: ResolvedImage, request: PullRequest) -> Optional[Platform]:
        """A single-manifest image names its platform only in its config. Read it now when the store holds
        it, or when the task asks for a platform, to refuse a wrong one before anything is downloaded (into
        memory: it is written with the image's other blobs once room is reserved for them); otherwise None,
        and the config is read when it has arrived with them (_await_blobs), so that a plan, and an image
        refused for room, fetch no blob."""
        config = resolved.config
        if self.receiver.has_blob(config.digest, config.size):
            body = self.receiver.read_blob(config.digest)
        elif not request.platform_explicit:
            return None
        else:
            with self._gate(config.digest):  # images sharing a config fetch it once
                if config.digest not in self._configs:
                    self._configs[config.digest] = registry.fetch_blob_bytes(request.reference, config)
            body = self._configs[config.digest]
        found = read_config(body or b"", f"the config {config.digest}").platform
        request.refuse_other_platform(found)
        return found

    def _report_present(self, plan: Plan) -> None:
        record = self.receiver.held_image(plan.held)
        result = plan.result
        result.digest, result.manifest_digest, result.id = record.digest, record.manifest_digest, record.id
        result.platform = str(record.platform) if record.platform else None
        result.layers = [LayerStatus(layer.digest, layer.size, ALREADY_EXISTS) for layer in record.layers]

    def _assign_statuses(self, plan: Plan, coming) -> None:
        """What the image lacks. A blob is pulled by the first image in the list that lacks it and
        has room for it; for the images after that one, the blob is `coming` and reused."""
        resolved = plan.resolved
        own = set()
        for descriptor in (resolved.config, *resolved.layers):
            missing = not self.receiver.has_blob(descriptor.digest, descriptor.size)
            owner = missing and descriptor.digest not in coming and descriptor.digest not in own
            if missing and descriptor.digest not in own:
                own.add(descriptor.digest)
                plan.wanted_blobs.append(descriptor)
            if descriptor is not resolved.config:
                plan.result.layers.append(LayerStatus(descriptor.digest, descriptor.size, PULL_COMPLETE if owner else ALREADY_EXISTS))
        plan.result.changed = self.receiver.retags(plan) or bool(plan.wanted_blobs)

    @staticmethod
    def _refuse(plan: Plan) -> None:
        """An image the disk has no room for fetches nothing: what it lacks stays missing, even if a
        later image of the list brings it."""
        for layer in plan.result.layers:
            if layer.status == PULL_COMPLETE:
                layer.status = MISSING
        plan.wanted_blobs = []

    # -- download and commit ---------------------------------------------------------------------

    def _start_downloads(self, plan: Plan, downloads: _Downloads) -> None:
        """Queue the blobs the image lacks that no earlier image queued, largest first: the biggest
        layer bounds the pull, so it must not start last."""
        for descriptor in largest_first(plan.wanted_blobs):
            downloads.want(plan, descriptor)

    def _download(self, reference: Reference, descriptor: Descriptor) -> None:
        """Fetch one blob to the receiver; workers wanting the same blob wait for one download."""
        with self._gate(descriptor.digest):
            if self.receiver.received(descriptor):
                return
            if descriptor.digest in self._configs:  # read and verified while resolving: written, not fetched again
                self.receiver.put_blob(descriptor, self._configs[descriptor.digest])
                return
            registry = self.client.for_reference(reference)
            self.receiver.receive(descriptor, lambda sink: registry.fetch_blob(reference, descriptor, sink))

    def _gate(self, digest: str) -> threading.Lock:
        """The lock of one blob: workers wanting the same blob wait for one fetch."""
        with self._inflight_lock:
            return self._inflight.setdefault(digest, threading.Lock())

    def _finish(self, plans: list[Plan], downloads: _Downloads) -> None:
        """Wait for each image's blobs in turn, handing it to the receiver as soon as they are in (while the
        others still download), then have the receiver tag the images whose blobs all came."""
        for plan in plans:
            plan.result.error = safely(self._await_blobs)(plan, downloads) or safely(self.receiver.arrived)(plan)
        self.receiver.commit([plan for plan in plans if plan.result.error is None])

    def _await_blobs(self, plan: Plan, downloads: _Downloads) -> None:
        """Wait for the image's blobs, then read its config with the one reader: an image whose config
        the collection cannot read is never tagged, so it cannot spoil the listing of the whole store."""
        downloads.wait(plan)
        config = plan.resolved.config
        found = read_config(self.receiver.read_blob(config.digest) or b"", f"the config {config.digest}").platform
        if plan.platform is None and found is not None:  # a single-manifest image: its config names its platform
            plan.platform = found
            plan.result.platform = str(found)


class _Downloads:
    """The blob downloads of a pull: each blob queued once, whichever images want it, and fetched through
    the repository of the first. When that fails, an image of another repository that wants the blob has
    it fetched through its own, so that a registry cannot fail another's images by naming a blob they
    share; only the images of the repositories that failed it fail. A blob whose every wanting image has
    failed is given up before it starts, so that a registry failing an image (each of its blobs at its
    deadline, say) costs the pull one deadline, not one per blob of the image."""

    def __init__(self, pool: ThreadPoolExecutor, download: Callable[[Reference, Descriptor], None]):
        self._pool, self._download = pool, download
        self._futures = {}  # digest: the Future of its current download
        self._wanted_by = {}  # digest: {id(plan): plan}
        self._tried = {}  # digest: {repository (domain/path) it failed through: the error}
        self._failures = {}  # id(plan): the error of the download that failed the image
        self._lock = threading.Lock()

    def want(self, plan: Plan, descriptor: Descriptor) -> None:
        with self._lock:
            if id(plan) in self._failures:  # a blob of it failed while its others were being queued
                return
            digest, repository = descriptor.digest, plan.request.reference.name
            self._wanted_by.setdefault(digest, {})[id(plan)] = plan
            future = self._futures.get(digest)
            if future is None or future.cancelled():
                self._submit(plan.request.reference, descriptor)
            elif repository in self._tried.get(digest, {}):  # failed through this very repository already
                self._failures[id(plan)] = self._tried[digest][repository]
                self._give_up()
            elif future.done() and future.exception() is not None:  # failed through others only: try this one
                self._submit(plan.request.reference, descriptor)

    def _submit(self, reference: Reference, descriptor: Descriptor) -> None:
        self._futures[descriptor.digest] = self._pool.submit(self._fetch, reference, descriptor)

    def _fetch(self, reference: Reference, descriptor: Descriptor) -> None:
        """The download, its failure recorded (and another repository's try queued) before its Future is done."""
        try:
            self._download(reference, descriptor)
        except BaseException as exc:
            self._failed(reference, descriptor, exc)
            raise

    def _failed(self, reference: Reference, descriptor: Descriptor, exc: BaseException) -> None:
        with self._lock:
            digest = descriptor.digest
            tried = self._tried.setdefault(digest, {})
            tried[reference.name] = exc
            waiting = [plan for key, plan in self._wanted_by[digest].items() if key not in self._failures]
            for plan in waiting:
                if plan.request.reference.name in tried:
                    self._failures[id(plan)] = exc
            others = [plan for plan in waiting if plan.request.reference.name not in tried]
            if others:
                self._submit(others[0].request.reference, descriptor)
            self._give_up()

    def _give_up(self) -> None:
        for digest, queued in self._futures.items():
            if self._wanted_by[digest].keys() <= self._failures.keys():
                queued.cancel()  # only if it has not started: one that has ends at its own deadline

    def wait(self, plan: Plan) -> None:
        """Wait for the image's blobs (a download that failed may be tried again through another
        repository: wait for that one too); raise the failure of the image, if it has one."""
        while True:
            with self._lock:
                futures = [self._futures[d.digest] for d in plan.wanted_blobs if d.digest in self._futures]
            wait(futures)
            with self._lock:
                if id(plan) in self._failures:
                    raise self._failures[id(plan)]
                if futures == [self._futures[d.digest] for d in plan.wanted_blobs if d.digest in self._futures]:
                    break
        for future in futures:
            if not future.cancelled() and future.exception() is not None:
                raise future.exception()
