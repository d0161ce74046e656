# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image stores: the records every backend returns, and the choice of backend.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform, runs_on
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, image_id_prefix, parse_reference

if TYPE_CHECKING:  # for annotations only: the registry client is the pullers' business
    from ansible_collections.dockyard.images.plugins.module_utils._archive import ArchiveSource, Exported
    from ansible_collections.dockyard.images.plugins.module_utils._manifest import Descriptor
    from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient

# -- what a pull asks for and reports, whatever the store --------------------------------------

ALREADY_EXISTS = "already_exists"
PULL_COMPLETE = "pull_complete"
MISSING = "missing"  # only in the results of an image that failed


@dataclass(frozen=True)
class PullRequest:
    """One image a pull asks for, and for which platform."""

    reference: Reference
    platform: Platform
    platform_explicit: bool = False
    policy: str = "missing"

    def refuse_other_platform(self, found: Optional[Platform]) -> None:
        """Fail when the task asked for a platform and the image's config names another it does not run on."""
        if self.platform_explicit and found is not None and not runs_on(found, self.platform):
            raise DockyardError(
                "platform_not_found",
                f"the image is for {found} only, not {self.platform}; set platform to {found} or use another image",
                platforms_available=[str(found)],
            )


@dataclass
class Held:
    """What a store holds under a pull request's name: the registry digest it is tagged with, whether
    every blob of it is there, and the store's own handle on it (an index.json entry, say)."""

    digest: str
    complete: bool
    handle: Any = None


@dataclass(frozen=True)
class Wanted:
    """An image a delivery asks a store about: its id (the config's digest), every blob it needs (layers,
    then config), and its layers' DiffIDs in order (what an engine keeps them by)."""

    id: str
    blobs: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...] = ()

    @property
    def layers(self) -> list[Descriptor]:
        return [descriptor for descriptor in self.blobs if descriptor.digest != self.id]


@dataclass(frozen=True)
class Holding:
    """What a store holds of the images a delivery asks about: the blobs a load into it need not be sent, the
    ids of the images it holds whole (an engine may hold an image and still need a blob of it sent for another),
    and (stored name, id) for each name it gives one of those images."""

    blobs: frozenset
    images: frozenset
    names: frozenset

    @classmethod
    def per_blob(cls, images: list, holds: Callable[[Descriptor], bool], records: list) -> Holding:
        """For a store that keeps blobs as they are: a blob is held when the store has it, an image when every
        blob is; `records` are the store's images, for their names."""
        held = frozenset(d.digest for image in images for d in image.blobs if holds(d))
        whole = frozenset(image.id for image in images if all(d.digest in held for d in image.blobs))
        return cls(held, whole, frozenset((r.reference.stored_name, r.id) for r in records if r.reference is not None and r.id in whole))


@dataclass
class LayerStatus:
    """A layer of a pulled image and whether the pull fetched it, reused it, or lacks it."""

    digest: str
    size: Optional[int]
    status: str

    def to_dict(self) -> dict:
        return {"digest": self.digest, "id": self.digest.split(":")[-1][:12], "size": self.size, "status": self.status}


@dataclass
class PullResult:
    """What the pull did for one image: its digests before and after, and its layers."""

    request: PullRequest
    before: Optional[str] = None
    digest: Optional[str] = None
    manifest_digest: Optional[str] = None
    id: Optional[str] = None
    platform: Optional[str] = None
    platform_fallback: bool = False
    layers: list[LayerStatus] = field(default_factory=list)
    changed: bool = False
    error: Optional[DockyardError] = None

    @property
    def size(self) -> int:
        return sum(layer.size or 0 for layer in self.layers)

    @property
    def downloaded_bytes(self) -> int:
        return sum(layer.size or 0 for layer in self.layers if layer.status == PULL_COMPLETE)

    @property
    def reused_bytes(self) -> int:
        return sum(layer.size or 0 for layer in self.layers if layer.status == ALREADY_EXISTS)

    def to_dict(self, requested: str) -> dict:
        result = {
            "reference": requested,
            "canonical": self.request.reference.canonical,
            "digest": self.digest,
            "manifest_digest": self.manifest_digest,
            "id": self.id,
            "platform": self.platform,
            "platform_fallback": self.platform_fallback,
            "size": self.size,
            "layers": [layer.to_dict() for layer in self.layers],
            "downloaded_bytes": self.downloaded_bytes,
            "reused_bytes": self.reused_bytes,
            "changed": self.changed,
        }
        if self.error is not None:
            result.update(self.error.to_result(), failed=True)
        return result


# -- what a store holds ----------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRecord:
    """A layer a store holds."""

    digest: str
    size: int
    media_type: str = ""
    chain_id: str = ""  # engines keep layers by ChainID: the same content at another depth is another layer

    @property
    def key(self) -> str:
        """What makes two layers one on disk."""
        return self.chain_id or self.digest


@dataclass
class ImageRecord:
    """One tagged image in a store, for one platform."""

    reference: Optional[Reference]
    id: str
    digest: Optional[str]
    manifest_digest: Optional[str]
    platform: Optional[Platform]
    created: Optional[str]
    layers: list[LayerRecord] = field(default_factory=list)
    config_size: int = 0
    containers: list[dict] = field(default_factory=list)
    ref_name: Optional[str] = None
    handle: Any = field(default=None, repr=False, compare=False)  # the backend's own entry for this image

    @property
    def size(self) -> int:
        return self.config_size + sum(layer.size for layer in self.layers)

    def to_dict(self) -> dict:
        ref = self.reference
        return {
            "reference": ref.familiar if ref else None,
            "canonical": ref.canonical if ref else None,
            "repository": ref.familiar_name if ref else None,
            "tag": ref.tag if ref else self.ref_name,
            "id": self.id,
            "digest": self.digest,
            "manifest_digest": self.manifest_digest,
            "repo_digests": [f"{ref.familiar_name}@{self.digest}"] if ref and self.digest else [],
            "platform": str(self.platform) if self.platform else None,
            "created": self.created,
            "size": self.size,
            "layers": [_layer_dict(layer) for layer in self.layers],
            "containers": list(self.containers),
        }


def _layer_dict(layer: LayerRecord) -> dict:
    result = {"digest": layer.digest, "size": layer.size, "media_type": layer.media_type}
    if layer.chain_id:
        result["chain_id"] = layer.chain_id
    return result


def select_images(records: list[ImageRecord], text: str) -> list[ImageRecord]:
    """The records a name means, in every form image_facts and image_remove (name and keep) accept.

    - an image id (`sha256:` and 64 hex digits) or a prefix of at least 12 hex digits: every tag of that image;
    - a tag (`redis:7` is `docker.io/library/redis:7`): every platform held under it;
    - `repo@digest`: the images of that repository whose registry digest (the index digest of a
      multi-platform image) or platform manifest digest it is; an image held under no tag at all, as an
      engine keeps a pull by digest, is matched by the digest alone;
    - `repo:tag@digest`: the image held under that tag with that digest, as a pull of it stores it.
    """
    bare = image_id_prefix(text)
    if bare is not None:
        return [r for r in records if r.id.split(":", 1)[-1].startswith(bare)]
    wanted = parse_reference(text)

    def means(record: ImageRecord) -> bool:
        held = record.reference
        if wanted.digest is None:
            return held is not None and (held.name, held.tag) == (wanted.name, wanted.tag)
        digests = (record.digest, record.manifest_digest, held.digest if held else None)
        if wanted.digest not in digests:
            return False
        if held is None:
            return wanted.tag is None
        return held.name == wanted.name and (wanted.tag is None or held.tag == wanted.tag)

    return [r for r in records if means(r)]


def selected_or_fail(records: list[ImageRecord], names: list[str], where: str) -> list[ImageRecord]:
    """The records `names` mean; not_found naming every name that means none."""
    chosen, missing = select_all(records, names)
    if missing:
        raise DockyardError("not_found", f"{where} holds no image named {', '.join(missing)}; pull them first, or check the names", missing=missing)
    return chosen


def select_all(records: list[ImageRecord], names: list[str]) -> tuple[list[ImageRecord], list[str]]:
    """(records any of `names` means, in store order; names that mean none)."""
    chosen, missing = [], []
    for text in names:
        matches = select_images(records, text)
        if not matches:
            missing.append(text)
        chosen.extend(record for record in matches if not any(record is c for c in chosen))
    return chosen, missing


@dataclass
class RemovalPlan:
    """What a removal does: the same plan serves check mode and the real run."""

    targets: list[ImageRecord]  # whose tags go
    remaining: list[ImageRecord]  # that stay
    missing: list[str] = field(default_factory=list)
    in_use: list[ImageRecord] = field(default_factory=list)  # kept because containers use them (keep mode)
    deleted_layers: list[LayerRecord] = field(default_factory=list)  # deleted from disk
    kept_layers: list[tuple[LayerRecord, list[str]]] = field(default_factory=list)  # with the remaining images using each
    deleted_blobs: dict[str, int] = field(default_factory=dict)  # digest: size, everything the store deletes

    @property
    def untagged(self) -> list:
        return [image_label(record) for record in self.targets]

    @property
    def deleted_images(self) -> list:
        left = {record.id for record in self.remaining}
        return list(dict.fromkeys(record.id for record in self.targets if record.id not in left))

    @property
    def bytes_freed(self) -> int:
        return sum(self.deleted_blobs.values())

    @property
    def changed(self) -> bool:
        return bool(self.targets or self.deleted_blobs)

    def to_dict(self) -> dict:
        return {
            "changed": self.changed,
            "untagged": self.untagged,
            "deleted_images": self.deleted_images,
            "deleted_layers": [{"digest": layer.key, "size": layer.size} for layer in self.deleted_layers],
            "kept_layers": [{"digest": layer.key, "size": layer.size, "images": names} for layer, names in self.kept_layers],
            "kept_in_use": [{"image": image_label(record), "containers": list(record.containers)} for record in self.in_use],
            "bytes_freed": self.bytes_freed,
            "missing": list(self.missing),
        }


def image_label(record: ImageRecord) -> str:
    """What results call an image: its reference, else the name a store gave it, else its id."""
    return record.reference.familiar if record.reference else (record.ref_name or record.id)


KEEP_MISSING = ("fail", "ignore")


def plan_targets(records: list[ImageRecord], request: RemovalRequest, where: str = "the store") -> tuple:
    """(targets, remaining, missing, kept in use) for the request's names or for its keep (everything
    else, unless in use).

    A keep entry that names no image, or an empty keep, fails before any target is chosen unless
    keep_missing is "ignore": a typo must never remove the image it meant. `where` names the store.
    """
    names, keep = request.names, request.keep
    if keep is not None:
        kept, missing = select_all(records, keep)
        refuse_unsafe_keep(keep, missing, request.keep_missing, where)
        candidates = [r for r in records if not any(r is k for k in kept)]
        in_use = [r for r in candidates if r.containers]
        targets = [r for r in candidates if not r.containers]
    else:
        targets, missing = select_all(records, names or [])
        in_use = []
    remaining = [r for r in records if not any(r is t for t in targets)]
    return targets, remaining, missing, in_use


def refuse_unsafe_keep(keep: list, missing: list, keep_missing: str, where: str) -> None:
    """Fail when `keep` would remove images its author meant to keep, unless told to ignore that."""
    if keep_missing not in KEEP_MISSING:
        raise DockyardError("invalid_argument", f"keep_missing must be one of {', '.join(KEEP_MISSING)}, not {keep_missing!r}")
    if keep_missing == "ignore":
        return
    if not keep:
        raise DockyardError(
            "invalid_argument",
            f"keep is empty, which would remove every image in {where} that no container uses; nothing was removed. "
            "List the images to keep, or set keep_missing: ignore to remove them all",
        )
    if missing:
        entries = f"keep entry {missing[0]} names" if len(missing) == 1 else f"keep entries {', '.join(missing)} name"
        raise DockyardError(
            "invalid_argument",
            f"{entries} no image in {where}; nothing was removed. Fix each entry "
            "(a tag, repository@digest, tag@digest, image id or id prefix, as image_facts lists them), "
            "or set keep_missing: ignore to remove every image the other entries do not name",
            missing=list(missing),
        )


def refuse_in_use(targets: list[ImageRecord], remaining: list[ImageRecord], force: bool, where: str, how: str) -> None:
    """Fail when a removal would delete an image that containers use (an image that keeps another tag
    stays, so its containers do not block), naming each image and its containers; `how` says how to
    remove a container of this store. With `force`, nothing is refused."""
    left = {record.id for record in remaining}
    busy = [record for record in targets if record.containers and record.id not in left]
    if busy and not force:
        raise DockyardError(
            "in_use",
            "; ".join(f"{image_label(record)} is used by containers {_containers_text(record.containers)}" for record in busy)
            + f" in {where}; remove those containers first ({how}), or set force: true",
            containers=[dict(container, image=image_label(record)) for record in busy for container in record.containers],
        )


def _containers_text(containers: list[dict]) -> str:
    """`web-1 (3f2a9c1b7d4e, running), ...`: each container's name with its id (where the store has one) and state."""
    described = []
    for container in containers:
        details = ", ".join(value for value in (container.get("id"), container.get("state")) if value)
        described.append(f"{container.get('name')} ({details})")
    return ", ".join(described)


def layer_fate(targets: list[ImageRecord], remaining: list[ImageRecord], deleted_keys: set[str]) -> tuple[list[LayerRecord], list]:
    """(layers of the removed images that are deleted, those kept because remaining images use them)."""
    users = {}
    for record in remaining:
        for layer in record.layers:
            users.setdefault(layer.key, [])
            if image_label(record) not in users[layer.key]:
                users[layer.key].append(image_label(record))
    deleted, kept, seen = [], [], set()
    for record in targets:
        for layer in record.layers:
            if layer.key in seen:
                continue
            seen.add(layer.key)
            if layer.key in users:
                kept.append((layer, users[layer.key]))
            elif layer.key in deleted_keys:
                deleted.append(layer)
    return deleted, kept


def default_store_path() -> str:
    if os.geteuid() == 0:
        return "/var/lib/dockyard/oci"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "dockyard", "oci")


# -- the seam ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemovalRequest:
    """What a removal asks of any store: the images `names` means, or every image `keep` does not."""

    names: Optional[list[str]] = None
    keep: Optional[list[str]] = None
    prune: bool = True  # delete the layers nothing else uses
    force: bool = False  # remove images that containers use (engines only: nothing runs from the OCI store)
    keep_missing: str = "fail"


class Puller(Protocol):
    """A store's own way of bringing images in: blobs it receives itself (the one fetching path of _pull,
    with the store's Receiver at its end: OCI, containerd), or a pull it asks its engine for (_engine_pull)."""

    def pull(self, requests: list[PullRequest]) -> list[PullResult]: ...


class Store(Protocol):
    """What every image store does, with the same signatures; modules and orchestrators use nothing else.

    Sharing is read from the records: two layers are one on disk when their `LayerRecord.key` is the same.
    Adding a store is one module in this package that implements this, and its entry in OPENERS (and in
    PROBES when `store: auto` should find it); its name and options go into the modules' shared options,
    store_argument_spec in _args and its twin, the store doc fragment.
    """

    name: str  # the store's type, as results name it: oci, docker, podman
    root: str  # where it is: a directory, or an engine's address

    def describe(self) -> dict: ...

    def images(self) -> list[ImageRecord]: ...

    def puller(self, client: RegistryClient, concurrency: int, check_mode: bool) -> Puller: ...

    def loader(self, source: ArchiveSource, concurrency: int, check_mode: bool) -> Puller: ...  # the images of an archive

    def exporter(self, names: list[str]) -> Exported: ...  # the images `names` mean, and their blobs, for an archive

    def holding(self, images: list[Wanted]) -> Holding: ...  # of these images, what a delivery need not send

    def plan_removal(self, request: RemovalRequest) -> RemovalPlan: ...

    def remove(self, request: RemovalRequest, check_mode: bool) -> RemovalPlan: ...


@dataclass(frozen=True)
class StoreOptions:
    """Where the task's store is, from its options."""

    path: Optional[str] = None  # the OCI store's directory
    docker_host: Optional[str] = None
    timeout: float = 60.0
    pool_size: int = 10
    containerd_address: Optional[str] = None  # containerd's socket; its default when None
    containerd_namespace: Optional[str] = None  # k8s.io when None


def _open_oci(_kind: str, options: StoreOptions) -> Store:
    from ansible_collections.dockyard.images.plugins.module_utils._stores._oci import OciStore  # each backend loads when chosen

    return OciStore(options.path or default_store_path(), lock_timeout=options.timeout)


def _open_engine(kind: str, options: StoreOptions) -> Store:
    from ansible_collections.dockyard.images.plugins.module_utils._stores._engine import open_engine

    return open_engine(kind, options.docker_host, options.timeout, options.pool_size)


def _probe_engine(options: StoreOptions) -> Optional[Store]:
    from ansible_collections.dockyard.images.plugins.module_utils._stores._engine import probe_engine

    return probe_engine(options.docker_host, options.timeout, options.pool_size)


def _open_containerd(_kind: str, options: StoreOptions) -> Store:
    from ansible_collections.dockyard.images.plugins.module_utils._stores._containerd import open_containerd

    return open_containerd(options.containerd_address, options.containerd_namespace, options.timeout)


def _probe_containerd(options: StoreOptions) -> Optional[Store]:
    from ansible_collections.dockyard.images.plugins.module_utils._stores._containerd import probe_containerd

    return probe_containerd(options.containerd_address, options.containerd_namespace, options.timeout)


OPENERS = {"oci": _open_oci, "docker": _open_engine, "podman": _open_engine, "containerd": _open_containerd}
PROBES = (_probe_engine, _probe_containerd)  # what `store: auto` tries, in order, when no store_path is given; else the OCI store


def open_store(store: str = "auto", options: StoreOptions = StoreOptions()) -> Store:
    """The store a task works on. `auto` is the embedded OCI layout when a store_path is given;
    otherwise the first store a probe finds answering (a Docker or Podman engine), else the OCI layout."""
    if store == "auto":
        answering = () if options.path else (probe(options) for probe in PROBES)
        return next((found for found in answering if found is not None), None) or _open_oci("oci", options)
    if store not in OPENERS:
        raise DockyardError("invalid_argument", f"store must be auto or one of {', '.join(OPENERS)}, not {store!r}")
    return OPENERS[store](store, options)
