# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image stores: the records every backend returns, and the choice of backend.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, parse_reference


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
    layers: list = field(default_factory=list)
    config_size: int = 0
    containers: list = field(default_factory=list)
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


def select_images(records: list, text: str) -> list:
    """The records a name means, in every form image_facts and image_remove (name and keep) accept.

    - an image id (`sha256:` and 64 hex digits) or a prefix of at least 12 hex digits: every tag of that image;
    - a tag (`redis:7` is `docker.io/library/redis:7`): every platform held under it;
    - `repo@digest`: the images of that repository whose registry digest (the index digest of a
      multi-platform image) or platform manifest digest it is; an image held under no tag at all, as an
      engine keeps a pull by digest, is matched by the digest alone;
    - `repo:tag@digest`: the image held under that tag with that digest, as a pull of it stores it.
    """
    bare = text[len("sha256:") :] if text.startswith("sha256:") else text
    if len(bare) >= 12 and all(c in "0123456789abcdef" for c in bare):
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


def select_all(records: list, names: list) -> tuple:
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

    targets: list  # ImageRecords whose tags go
    remaining: list  # ImageRecords that stay
    missing: list = field(default_factory=list)
    in_use: list = field(default_factory=list)  # ImageRecords kept because containers use them (keep mode)
    deleted_layers: list = field(default_factory=list)  # LayerRecords deleted from disk
    kept_layers: list = field(default_factory=list)  # (LayerRecord, [names of remaining images using it])
    deleted_blobs: dict = field(default_factory=dict)  # digest → size, everything the store deletes

    @property
    def untagged(self) -> list:
        return [label(record) for record in self.targets]

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
            "kept_in_use": [{"image": label(record), "containers": list(record.containers)} for record in self.in_use],
            "bytes_freed": self.bytes_freed,
            "missing": list(self.missing),
        }


def label(record: ImageRecord) -> str:
    return record.reference.familiar if record.reference else (record.ref_name or record.id)


KEEP_MISSING = ("fail", "ignore")


def plan_targets(records: list, names: Optional[list], keep: Optional[list], keep_missing: str = "fail", where: str = "the store") -> tuple:
    """(targets, remaining, missing, kept in use) for `name` or for `keep` (everything else, unless in use).

    A keep entry that names no image, or an empty keep, fails before any target is chosen unless
    keep_missing is "ignore": a typo must never remove the image it meant. `where` names the store.
    """
    if keep is not None:
        kept, missing = select_all(records, keep)
        refuse_unsafe_keep(keep, missing, keep_missing, where)
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


def layer_fate(targets: list, remaining: list, deleted_keys: set) -> tuple:
    """(layers of the removed images that are deleted, those kept because remaining images use them)."""
    users = {}
    for record in remaining:
        for layer in record.layers:
            users.setdefault(layer.key, [])
            if label(record) not in users[layer.key]:
                users[layer.key].append(label(record))
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


def open_store(store: str = "auto", store_path: Optional[str] = None, docker_host: Optional[str] = None, timeout: float = 60.0, pool_size: int = 10):
    """The store a task works on.

    `auto` is the embedded OCI layout when store_path is given; otherwise the Docker or Podman
    engine whose socket answers (docker_host, DOCKER_HOST, then the usual sockets), else the OCI layout.
    """
    if store not in ("auto", "oci", "docker", "podman"):
        raise ValueError(f"unknown store {store!r}")
    if store in ("docker", "podman") or (store == "auto" and not store_path):
        engine = _open_engine(store, docker_host, timeout, pool_size)
        if engine is not None:
            return engine
    from ansible_collections.dockyard.images.plugins.module_utils._stores._oci import OciStore  # each backend loads when chosen

    return OciStore(store_path or default_store_path(), lock_timeout=timeout)


def _open_engine(store: str, docker_host: Optional[str], timeout: float, pool_size: int):
    """The engine `store` names; with `auto`, the first whose socket answers, or None."""
    from ansible_collections.dockyard.images.plugins.module_utils._stores._engine import EngineStore, default_docker_host

    if store != "auto":
        engine = EngineStore(docker_host or default_docker_host(store), store, timeout, pool_size)
    else:
        candidates = [docker_host] if docker_host else [default_docker_host("docker"), default_docker_host("podman")]
        engines = (EngineStore(host, "docker", timeout, pool_size) for host in dict.fromkeys(candidates))
        engine = next((candidate for candidate in engines if candidate.client.ping()), None)
        if engine is None:
            return None
    engine.kind = engine.client.info().name
    return engine
