# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What image_facts reports: the images a store holds with their sharing, or what a registry says
references are, without pulling. Every image entry is an ImageRecord's `to_dict` (but for a digest
alone, with digests_only: its reference and digest).

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

from typing import Optional

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._layers import sharing_by_image, sharing_summary
from ansible_collections.dockyard.images.plugins.module_utils._manifest import index_entries, read_config
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform, available_platforms
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._registry import Registry, RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._stores import ImageRecord, LayerRecord, Store, select_all, select_images


def store_facts(store: Store, names: Optional[list[str]], platform: Optional[Platform]) -> tuple[dict, list[str]]:
    """(the facts: store, images with their shared and unique bytes, summary; the names a pull with policy
    missing would bring: those that mean no image, and those whose every image lacks some of its blobs)."""
    records = store.images()
    if platform is not None:
        records = [record for record in records if record.platform is not None and record.platform.matches(platform)]
    missing = []
    if names:
        records, absent = select_all(records, names)
        missing = [text for text in names if text in absent or not any(record.complete for record in select_images(records, text))]
    sharing = sharing_by_image(records)
    images = [dict(record.to_dict(), shared_size=sharing[record.id].shared_size, unique_size=sharing[record.id].unique_size) for record in records]
    return {"store": store.describe(), "images": images, "summary": sharing_summary(records)}, missing


def remote_facts(client: RegistryClient, names: list[str], platform: Platform, digests_only: bool) -> list[dict]:
    """What the registries say each name is: its digest alone, or the image for `platform` with every
    platform it is published for. The first name that fails fails the whole call, naming it."""
    if not names:
        raise DockyardError("invalid_argument", "remote: true needs name, the references to inspect")
    images = []
    for text in names:
        reference = parse_reference(text)
        try:
            registry = client.for_reference(reference)
            images.append(_digest_of(registry, reference) if digests_only else _inspect(registry, reference, platform))
        except DockyardError as exc:
            raise exc.with_context(reference.familiar) from None
    return images


def _digest_of(registry: Registry, reference: Reference) -> dict:
    digest = reference.digest or registry.head_manifest(reference)
    if digest is None:  # the registry sent no Docker-Content-Digest: the manifest's own hash is its digest
        digest = registry.get_manifest(reference, reference.manifest_reference).digest
    return {"reference": reference.familiar, "canonical": reference.canonical, "digest": digest}


def _inspect(registry: Registry, reference: Reference, platform: Platform) -> dict:
    digest = None if reference.pinned else registry.head_manifest(reference)
    resolved = registry.resolve(reference, platform, digest, lambda _digest: None)
    config = read_config(registry.fetch_blob_bytes(reference, resolved.config), f"the config {resolved.config.digest}")
    found = resolved.platform or config.platform
    record = ImageRecord(
        reference=reference,
        id=resolved.config.digest,
        digest=resolved.digest,
        manifest_digest=resolved.manifest_digest,
        platform=found,
        created=config.created,
        layers=[LayerRecord(layer.digest, layer.size, layer.media_type) for layer in resolved.layers],
        config_size=resolved.config.size,
    )
    platforms = [str(found)] if found else []
    if resolved.index is not None:  # a multi-platform image: every platform its index lists
        platforms = available_platforms(index_entries(resolved.index.body, reference.familiar))
    return dict(record.to_dict(), platforms=platforms)
