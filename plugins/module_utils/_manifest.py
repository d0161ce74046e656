# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Media types, manifests, indexes and image configs: the one reader of what registries and stores hold.

Everything here reads untrusted bytes. Any shape it does not understand becomes a DockyardError
with reason `unsupported_media_type` that names the image; nothing else escapes.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

from ansible_collections.dockyard.images.plugins.module_utils._auth import shown
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, is_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
REF_NAME = "org.opencontainers.image.ref.name"  # the annotation that names an image in an OCI layout's index
CONTAINERD_NAME = "io.containerd.image.name"  # the full name containerd (and ctr import) reads there
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def _refuse(what: str, why: str) -> DockyardError:
    return DockyardError("unsupported_media_type", f"{what}: {why}")


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor from a manifest: what a blob is, its digest and its size."""

    media_type: str
    digest: str
    size: int
    urls: tuple = ()
    annotations: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data, what: str = "a manifest") -> Descriptor:
        """A descriptor, checked: a digest this collection accepts, a size that is a count of bytes."""
        if not isinstance(data, dict):
            raise _refuse(what, f"a descriptor is not a JSON object: {shown(data, 200)}")
        digest, size, media_type = data.get("digest"), data.get("size"), data.get("mediaType", "")
        if not is_digest(digest):
            raise _refuse(what, f"the registry served a descriptor whose digest {shown(digest)} is not a sha256 or sha512 digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _refuse(what, f"the registry served a descriptor of {digest} whose size {shown(size)} is not a count of bytes")
        urls, annotations = data.get("urls") or (), data.get("annotations") or {}
        if not isinstance(media_type, str) or not isinstance(urls, (list, tuple)) or not isinstance(annotations, dict):
            raise _refuse(what, f"the registry served a malformed descriptor of {digest}")
        return cls(media_type, digest, size, tuple(str(url) for url in urls), annotations)


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as served: its bytes, its media type and the digest of those bytes."""

    body: bytes
    media_type: str
    digest: str

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class ImageConfig:
    """What the collection reads from an image config: the platform it names, when it was created, its layers' DiffIDs."""

    platform: Optional[Platform]
    created: Optional[str]
    diff_ids: tuple = ()


def json_object(body: bytes, what: str) -> dict:
    """`body` parsed as a JSON object, or unsupported_media_type saying what it is not."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise _refuse(what, "the registry returned something that is not a JSON object")
    return data


def manifest_media_type(body: bytes, header_type: str, what: str) -> str:
    """The manifest's type from Content-Type, checked against the body's own mediaType."""
    data = json_object(body, what)
    body_type = data.get("mediaType") or ""
    if not isinstance(body_type, str):
        raise _refuse(what, f"the manifest's mediaType {shown(body_type)} is not a string")
    if header_type in SCHEMA1_TYPES or body_type in SCHEMA1_TYPES or data.get("schemaVersion") == 1:
        raise _refuse(what, "Docker schema1 manifests are not supported; push the image again with a current client")
    if body_type and header_type and header_type in INDEX_TYPES + MANIFEST_TYPES and body_type != header_type:
        raise _refuse(what, f"the registry labelled a {body_type} manifest as {header_type}")
    return body_type or header_type or (OCI_INDEX if "manifests" in data else OCI_MANIFEST)


def index_entries(body: bytes, what: str) -> list:
    """The manifest descriptors an index lists, as JSON objects whose digest, size, media type and platform are checked."""
    entries = json_object(body, what).get("manifests") or []
    if not isinstance(entries, list):
        raise _refuse(what, "the index's manifests are not a list of descriptors")
    for entry in entries:
        Descriptor.from_json(entry, what)
        platform_of(entry, what)
    return entries


def platform_of(data: dict, what: str) -> Optional[Platform]:
    """The platform an index entry names, or None; a platform of the wrong shape is refused."""
    try:
        return Platform.from_descriptor(data.get("platform"))
    except DockyardError as exc:
        raise exc.with_context(what) from None


def image_blobs(manifest: Manifest, what: str) -> tuple:
    """(config, layers) that an image manifest names."""
    if manifest.media_type not in MANIFEST_TYPES:
        raise _refuse(what, f"manifest type {manifest.media_type} is not supported")
    data = json_object(manifest.body, what)
    if "config" not in data:
        raise _refuse(what, f"manifest {manifest.digest} has no config")
    layers = data.get("layers") or []
    if not isinstance(layers, list):
        raise _refuse(what, f"the layers of manifest {manifest.digest} are not a list")
    return Descriptor.from_json(data["config"], what), tuple(Descriptor.from_json(layer, what) for layer in layers)


def read_config(body: bytes, what: str) -> ImageConfig:
    """The platform and creation time an image config names."""
    data = json_object(body, what)
    try:
        platform = Platform.from_descriptor(data)
    except DockyardError as exc:
        raise exc.with_context(what) from None
    created = data.get("created")
    rootfs = data.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") or [] if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(is_digest(diff_id) for diff_id in diff_ids):
        raise _refuse(what, "the config's rootfs.diff_ids are not a list of digests")
    return ImageConfig(platform, created if isinstance(created, str) else None, tuple(diff_ids))


@dataclass(frozen=True)
class ResolvedImage:
    """What a registry (or an archive) says a reference is, for one platform: the manifest it names (an index or
    the image's own), the platform's image manifest, and the blobs that manifest names."""

    reference: Reference
    top: Manifest
    manifest: Manifest
    config: Descriptor
    layers: tuple
    platform: Optional[Platform]
    platform_fallback: bool

    @property
    def digest(self) -> str:
        """What the registry calls the image: its index digest, or its manifest digest."""
        return self.top.digest

    @property
    def manifest_digest(self) -> str:
        return self.manifest.digest

    @property
    def index(self) -> Optional[Manifest]:
        return self.top if self.top.is_index else None
