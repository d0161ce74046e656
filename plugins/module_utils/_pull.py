# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pull images from registries into the OCI layout store.

reference → the registry resolves a manifest for the platform → the store says which blobs it
lacks → the registry streams only those into the store, verified → the store records the tag.
All images of one call share one worker pool, and a blob two images need is fetched once.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from ansible_collections.dockyard.images.plugins.module_utils._batch import each, largest_first, safely
from ansible_collections.dockyard.images.plugins.module_utils._blob import sha256_digest
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import OCI_MANIFEST, Descriptor, read_config
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient, ResolvedImage
from ansible_collections.dockyard.images.plugins.module_utils._stores import ALREADY_EXISTS, MISSING, PULL_COMPLETE, LayerStatus, PullRequest, PullResult
from ansible_collections.dockyard.images.plugins.module_utils._stores._oci import (
    CONTAINERD_NAME,
    REF_NAME,
    REGISTRY_DIGEST,
    REGISTRY_MANIFEST_DIGEST,
    OciStore,
    oci_manifest,
)


@dataclass
class _Plan:
    """One image's way through a pull: what it resolved to and which blobs it brings."""

    request: PullRequest
    result: PullResult
    entry: Optional[dict] = None
    resolved: Optional[ResolvedImage] = None
    platform: Optional[Platform] = None
    wanted_blobs: list = field(default_factory=list)
    new_entry: Optional[dict] = None  # the index.json descriptor the pull records


class _Room:
    """The store's free space, reserved image by image for the blobs each one brings."""

    def __init__(self, store: OciStore):
        self.store = store
        self.free = store.free_bytes()
        self.reserved = {}  # digest: size

    def reserve(self, plan: _Plan) -> Optional[DockyardError]:
        """Reserve room for the blobs `plan` lacks; a disk_full error, before any download, if they do not fit."""
        new = {d.digest: d.size for d in plan.wanted_blobs if d.digest not in self.reserved}
        needed = sum(self.reserved.values()) + sum(new.values())
        if self.free is not None and needed > self.free:
            return DockyardError(
                "disk_full",
                f"{plan.request.reference.familiar}: the pull needs {needed} bytes but only {self.free} are free under {self.store.root}; "
                "free space or choose another store_path",
                bytes_needed=needed,
                bytes_free=self.free,
            )
        self.reserved.update(new)
        return None


class OciPuller:
    """Pulls a list of references into an OciStore in one pool; check mode only predicts."""

    def __init__(self, store: OciStore, client: RegistryClient, concurrency: int = 3, check_mode: bool = False):
        self.store = store
        self.client = client
        self.concurrency = max(1, concurrency)
        self.check_mode = check_mode
        self._inflight = {}
        self._inflight_lock = threading.Lock()
        self._configs = {}  # digest: the bytes of a config read while resolving, before room was reserved

    def pull(self, requests: list) -> list:
        plans = [_Plan(request, PullResult(request)) for request in requests]
        lock = contextlib.nullcontext() if self.check_mode else self.store.pull_lock()
        with lock, ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="dockyard-pull") as pool:
            # resolving is a few small requests per image, bound by round trips rather than bandwidth:
            # every image resolves at once (up to RESOLVE_WORKERS), downloads stay within concurrency,
            # and an image's blobs start coming as soon as it and the images before it are resolved
            room, downloads = _Room(self.store), {}
            for plan, failure in each(plans, self._resolve):
                plan.result.error = failure or (safely(self._assign_statuses)(plan, room.reserved) if plan.resolved is not None else None)
                if plan.result.error is None and plan.resolved is not None:
                    plan.result.error = room.reserve(plan)
                    if plan.result.error is not None:
                        self._refuse(plan)
                    elif not self.check_mode:
                        self._start_downloads(plan, pool, downloads)
            if not self.check_mode:
                self._finish([plan for plan in plans if plan.result.error is None and plan.resolved is not None], downloads)
        for plan in plans:
            if plan.result.error is not None:
                self._report_failure(plan)
        return [plan.result for plan in plans]

    def _report_failure(self, plan: _Plan) -> None:
        """A failed image changed the store only by the blobs it did commit; the rest are missing."""
        result = plan.result
        for layer in result.layers:
            if not self.store.has_blob(layer.digest, layer.size):
                layer.status = MISSING
        wanted = {d.digest: d.size for d in plan.wanted_blobs}
        result.changed = not self.check_mode and any(self.store.has_blob(digest, size) for digest, size in wanted.items())

    # -- resolve ---------------------------------------------------------------------------------

    def _resolve(self, plan: _Plan) -> None:
        request, result = plan.request, plan.result
        plan.entry = self.store.find_entry(request.reference, request.platform)
        if plan.entry is None and not request.platform_explicit:
            plan.entry = self.store.find_entry(request.reference, None)
        if plan.entry is not None:
            result.before = (plan.entry.get("annotations") or {}).get(REGISTRY_DIGEST) or plan.entry["digest"]
        pin = request.reference.digest
        present = plan.entry is not None and (pin is None or result.before == pin) and self.store.is_complete(plan.entry)
        if present and (request.policy == "missing" or request.reference.pinned):
            self._report_present(plan)
            return
        registry = self.client.for_reference(request.reference)
        # a HEAD tells whether a held tag moved; a tag the store lacks is fetched with one GET at once
        head_digest = None if request.reference.pinned or plan.entry is None else registry.head_manifest(request.reference)
        if present and head_digest and head_digest == result.before:
            self._report_present(plan)
            return
        resolved = registry.resolve(request.reference, request.platform, head_digest, self.store.local_manifest)
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
        if self.store.has_blob(config.digest, config.size):
            body = self.store.read_blob(config.digest)
        elif not request.platform_explicit:
            return None
        else:
            with self._gate(config.digest):  # images sharing a config fetch it once
                if config.digest not in self._configs:
                    self._configs[config.digest] = registry.fetch_blob_bytes(request.reference, config)
            body = self._configs[config.digest]
        found = read_config(body, f"the config {config.digest}").platform
        request.refuse_other_platform(found)
        return found

    def _report_present(self, plan: _Plan) -> None:
        record = self.store.image_for(plan.entry)
        result = plan.result
        result.digest, result.manifest_digest, result.id = record.digest, record.manifest_digest, record.id
        result.platform = str(record.platform) if record.platform else None
        result.layers = [LayerStatus(layer.digest, layer.size, ALREADY_EXISTS) for layer in record.layers]

    def _assign_statuses(self, plan: _Plan, coming) -> None:
        """What the image lacks. A blob is pulled by the first image in the list that lacks it and
        has room for it; for the images after that one, the blob is `coming` and reused."""
        resolved = plan.resolved
        own = set()
        for descriptor in (resolved.config, *resolved.layers):
            missing = not self.store.has_blob(descriptor.digest, descriptor.size)
            owner = missing and descriptor.digest not in coming and descriptor.digest not in own
            if missing:
                own.add(descriptor.digest)
                plan.wanted_blobs.append(descriptor)
            if descriptor is not resolved.config:
                plan.result.layers.append(LayerStatus(descriptor.digest, descriptor.size, PULL_COMPLETE if owner else ALREADY_EXISTS))
        plan.new_entry = self._index_entry(plan)
        plan.result.changed = plan.entry != plan.new_entry or bool(plan.wanted_blobs)

    @staticmethod
    def _refuse(plan: _Plan) -> None:
        """An image the disk has no room for fetches nothing: what it lacks stays missing, even if a
        later image of the list brings it."""
        for layer in plan.result.layers:
            if layer.status == PULL_COMPLETE:
                layer.status = MISSING
        plan.wanted_blobs = []

    # -- download and record ---------------------------------------------------------------------

    def _start_downloads(self, plan: _Plan, pool: ThreadPoolExecutor, downloads: dict) -> None:
        """Queue the blobs the image lacks that no earlier image queued, largest first: the biggest
        layer bounds the pull, so it must not start last."""
        for descriptor in largest_first(plan.wanted_blobs):
            if descriptor.digest not in downloads:
                downloads[descriptor.digest] = pool.submit(self._download, plan.request.reference, descriptor)

    def _download(self, reference: Reference, descriptor: Descriptor) -> None:
        """Fetch one blob into the store; workers wanting the same blob wait for one download."""
        with self._gate(descriptor.digest):
            if self.store.has_blob(descriptor.digest, descriptor.size):
                return
            if descriptor.digest in self._configs:  # read and verified while resolving: written, not fetched again
                self.store.put_blob(self._configs[descriptor.digest])
                return
            partial = self.store.open_partial(descriptor.digest)
            try:
                if not self.store.has_blob(descriptor.digest, descriptor.size):  # another process may have finished it
                    self.client.for_reference(reference).fetch_blob(reference, descriptor, partial)
                    self.store.commit_partial(partial, descriptor.digest)
            finally:
                partial.close()

    def _gate(self, digest: str) -> threading.Lock:
        """The lock of one blob: workers wanting the same blob wait for one fetch."""
        with self._inflight_lock:
            return self._inflight.setdefault(digest, threading.Lock())

    def _finish(self, plans: list, downloads: dict) -> None:
        """Store every image's manifests while the blobs arrive, then tag the images whose blobs all
        came, in one write of index.json."""
        for plan in plans:
            plan.result.error = safely(self._store_manifests)(plan)
        for plan in plans:
            if plan.result.error is None:
                plan.result.error = safely(self._await_blobs)(plan, downloads)
        self._record([plan for plan in plans if plan.result.error is None])

    def _store_manifests(self, plan: _Plan) -> None:
        resolved = plan.resolved
        for manifest in (resolved.index, resolved.manifest):
            if manifest is not None:
                self.store.put_blob(manifest.body)
        self.store.put_blob(oci_manifest(resolved.manifest))

    def _await_blobs(self, plan: _Plan, downloads: dict) -> None:
        """Wait for the image's blobs, then read its config with the one reader: an image whose config
        the collection cannot read is never tagged, so it cannot spoil the listing of the whole store."""
        for descriptor in plan.wanted_blobs:
            downloads[descriptor.digest].result()
        config = plan.resolved.config
        found = read_config(self.store.read_blob(config.digest) or b"", f"the config {config.digest}").platform
        if plan.platform is None and found is not None:  # a single-manifest image: its config names its platform
            plan.platform = found
            plan.result.platform = str(found)
            plan.new_entry = self._index_entry(plan)

    def _record(self, plans: list) -> None:
        try:
            changed = self.store.record([(plan.request.reference, plan.new_entry) for plan in plans])
        except DockyardError as exc:
            for plan in plans:
                plan.result.error = exc.with_context(plan.request.reference.familiar)
            return
        for plan, tag_changed in zip(plans, changed):
            plan.result.changed = tag_changed or bool(plan.wanted_blobs)

    @staticmethod
    def _index_entry(plan: _Plan) -> dict:
        """The index.json descriptor that tags this image: its OCI manifest, with the registry's digests."""
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
