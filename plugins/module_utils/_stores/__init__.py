# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image stores: the records every backend returns, and the choice of backend.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference


@dataclass(frozen=True)
class LayerRecord:
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
    from ansible_collections.dockyard.images.plugins.module_utils._stores._engine import EngineStore, default_docker_host
    from ansible_collections.dockyard.images.plugins.module_utils._stores._oci import OciStore

    if store == "oci" or (store == "auto" and store_path):
        return OciStore(store_path or default_store_path(), lock_timeout=timeout)
    if store in ("docker", "podman"):
        engine = EngineStore(docker_host or default_docker_host(store), store, timeout, pool_size)
        engine.kind = engine.client.info().name
        return engine
    if store != "auto":
        raise ValueError(f"unknown store {store!r}")
    candidates = [docker_host] if docker_host else [default_docker_host("docker"), default_docker_host("podman")]
    for host in dict.fromkeys(candidates):
        engine = EngineStore(host, "docker", timeout, pool_size)
        if engine.client.ping():
            engine.kind = engine.client.info().name
            return engine
    return OciStore(default_store_path(), lock_timeout=timeout)
