# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What image_facts reports: the images a store holds with their sharing, or what a registry says
references are, without pulling. Every image entry is an ImageRecord's `to_dict` (but for a digest
alone, with digests_only: its reference and digest).

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from ansible_collections.dockyard.images.plugins.module_utils._batch import each
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._layers import sharing_by_image, sharing_summary
from ansible_collections.dockyard.images.plugins.module_utils._manifest import ImageConfig, Manifest, ResolvedImage, index_entries, read_config
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform, available_platforms, host_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, image_id_prefix, parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import ImageRecord, LayerRecord, PullRequest, Store, select_all

if TYPE_CHECKING:
    from ansible_collections.dockyard.images.plugins.module_utils._registry import Registry, RegistryClient


def store_facts(store: Store, names: Optional[list[str]], platform: Optional[Platform]) -> tuple[dict, list[str]]:
    """(the facts: store, images with their shared and unique bytes, summary; the names a pull of them with
    policy missing would bring, see `lacking`)."""
    records = store.images()
    if platform is not None:
        records = [record for record in records if record.platform is not None and record.platform.matches(platform)]
    missing = []
    if names:
        records, absent = select_all(records, names)
        brought = set(lacking(store, [text for text in names if image_id_prefix(text) is None], platform))  # an id names no pull
        missing = [text for text in names if text in absent or text in brought]
    sharing = sharing_by_image(records)
    images = [dict(record.to_dict(), shared_size=sharing[record.id].shared_size, unique_size=sharing[record.id].unique_size) for record in records]
    return {"store": store.describe(), "images": images, "summary": sharing_summary(records)}, missing


def lacking(store: Store, names: list[str], platform: Optional[Platform]) -> list[str]:
    """The names a pull of them with policy missing would bring into `store`, for `platform` (the host's when
    None), by the pull's own rule of what the store holds: found by that pull, in check mode, with a client
    that reaches no registry, so that every image it would have to ask a registry about fails."""
    requests = [PullRequest(parse_reference(text), platform or host_platform(), platform is not None) for text in names]
    results = store.puller(_NoRegistry(), 1, True).pull(requests)
    return [text for text, result in zip(names, results) if result.error is not None]


class _NoRegistry:
    """A registry client for a pull that must ask no registry: the store holds what the pull finds there."""

    @staticmethod
    def for_reference(reference: Reference) -> Registry:
        raise DockyardError("not_found", f"{reference.familiar}: not held here (and no registry is asked)")


class _Name(NamedTuple):
    """A name remote_facts was given, parsed, and its place in the list."""

    reference: Reference
    position: int


@dataclass
class _Inspection:
    """One name on its way through remote_facts: its registry, and the digest it names there now.
    An item of `each`, which names `request.reference` when it fails."""

    request: _Name
    registry: Optional[Registry] = None
    digest: Optional[str] = None  # None: the registry sent none, so the name's manifest is read by its tag
    image: Optional[_Image] = None


@dataclass
class _Image:
    """What one manifest of one repository is, inspected once for every name in the list that names it,
    through the first of them (an item of `each`, like _Inspection)."""

    request: _Name
    registry: Registry
    digest: Optional[str]
    resolved: Optional[ResolvedImage] = None
    config: Optional[ImageConfig] = None
    platforms: list[str] = field(default_factory=list)


class _ReadOnce:
    """What the registries served this call, each manifest and config read once however many images name it
    (one reader at a time; a read that failed is tried again by the next image that needs it). Kept per
    registry and repository: a registry serves a repository only what that repository holds."""

    def __init__(self):
        self._read = {}
        self._gates = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, read: Callable[[], Any]) -> Any:
        with self._lock:
            gate = self._gates.setdefault(key, threading.Lock())
        with gate:
            if key not in self._read:
                self._read[key] = read()
            return self._read[key]


class _FirstFailure:
    """The error of the first name in list order that fails, the one the call reports. Work for a name
    after a failed one is not started: it could not change which error that is."""

    def __init__(self):
        self.position = math.inf  # of the first name known to have failed
        self.error: Optional[DockyardError] = None
        self._error_position = math.inf
        self._lock = threading.Lock()

    def guard(self, work: Callable[[Any], None]) -> Callable[[Any], None]:
        """`work(item)`, not started for an item after a failed name; a failure marks where the list stops."""

        def guarded(item) -> None:
            if item.request.position > self.position:
                return
            try:
                work(item)
            except DockyardError:
                with self._lock:
                    self.position = min(self.position, item.request.position)
                raise

        return guarded

    def record(self, item, failure: Optional[DockyardError]) -> None:
        if failure is not None and item.request.position < self._error_position:
            self.error, self._error_position = failure, item.request.position


def remote_facts(client: RegistryClient, names: list[str], platform: Platform, digests_only: bool) -> list[dict]:
    """What the registries say each name is, in the order of `names`: its digest alone, or the image for
    `platform` with every platform it is published for. The first name in the list that fails fails the
    whole call, naming it, as if the names had been inspected one after the other.

    The names are inspected at once (up to RESOLVE_WORKERS at a time): first the digest each names now,
    with a HEAD, then each image once, for all the names of a repository that name the same digest."""
    if not names:
        raise DockyardError("invalid_argument", "remote: true needs name, the references to inspect")
    asked, invalid = [], None
    for position, text in enumerate(names):
        try:
            asked.append(_Name(parse_reference(text), position))
        except DockyardError as exc:  # reported unless a name before it fails
            invalid = exc
            break
    first = _FirstFailure()
    inspections = [_Inspection(name) for name in asked]
    for inspection, failure in each(inspections, first.guard(lambda inspection: _find_digest(client, inspection, digests_only))):
        first.record(inspection, failure)
    if not digests_only:
        images = _images_of(inspections)
        read = _ReadOnce()
        for image, failure in each(images, first.guard(lambda image: _inspect(image, platform, read))):
            first.record(image, failure)
    if first.error is not None:
        raise first.error from None
    if invalid is not None:
        raise invalid
    if digests_only:
        return [_digest_facts(inspection) for inspection in inspections]
    return [_image_facts(inspection.request.reference, inspection.image) for inspection in inspections]


def _find_digest(client: RegistryClient, inspection: _Inspection, digests_only: bool) -> None:
    """The registry of the name and the digest it names there now; both are set only when that is known."""
    reference = inspection.request.reference
    registry = client.for_reference(reference)
    digest = reference.digest or registry.head_manifest(reference)
    if digest is None and digests_only:  # the registry sent no Docker-Content-Digest: the manifest's own hash is its digest
        digest = registry.get_manifest(reference, reference.manifest_reference).digest
    inspection.registry, inspection.digest = registry, digest


def _digest_facts(inspection: _Inspection) -> dict:
    reference = inspection.request.reference
    return {"reference": reference.familiar, "canonical": reference.canonical, "digest": inspection.digest}


def _images_of(inspections: list[_Inspection]) -> list[_Image]:
    """One image for the names of a repository that name the same digest, in the order of their first name."""
    images = {}
    for inspection in inspections:
        if inspection.registry is None:  # it failed, or came after a name that failed
            continue
        reference = inspection.request.reference
        key = (inspection.registry.domain, reference.path, inspection.digest or inspection.request.position)
        if key not in images:
            images[key] = _Image(inspection.request, inspection.registry, inspection.digest)
        inspection.image = images[key]
    return list(images.values())


def _inspect(image: _Image, platform: Platform, read: _ReadOnce) -> None:
    reference, registry = image.request.reference, image.registry
    where = (registry.domain, reference.path)

    def manifest(digest: str) -> Manifest:
        return read.get(("manifest", *where, digest), lambda: registry.get_manifest(reference, digest))

    image.resolved = resolved = registry.resolve(reference, platform, image.digest, manifest)
    config = resolved.config
    image.config = read.get(("config", *where, config.digest), lambda: read_config(registry.fetch_blob_bytes(reference, config), f"the config {config.digest}"))
    found = resolved.platform or image.config.platform
    image.platforms = [str(found)] if found else []
    if resolved.index is not None:  # a multi-platform image: every platform its index lists
        image.platforms = available_platforms(index_entries(resolved.index.body, reference.familiar))


def _image_facts(reference: Reference, image: _Image) -> dict:
    resolved = image.resolved
    record = ImageRecord(
        reference=reference,
        id=resolved.config.digest,
        digest=resolved.digest,
        manifest_digest=resolved.manifest_digest,
        platform=resolved.platform or image.config.platform,
        created=image.config.created,
        layers=[LayerRecord(layer.digest, layer.size, layer.media_type) for layer in resolved.layers],
        config_size=resolved.config.size,
    )
    return dict(record.to_dict(), platforms=list(image.platforms))
