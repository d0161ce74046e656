# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pull images through a Docker or Podman engine, reported like pulls into the OCI layout store.

Its own file, so that a pull into the OCI store does not load the engine's code.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ansible_collections.dockyard.images.plugins.module_utils._auth import engine_auth_header
from ansible_collections.dockyard.images.plugins.module_utils._batch import each
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import read_config
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform, runs_on
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import ALREADY_EXISTS, PULL_COMPLETE, LayerStatus, PullRequest, PullResult
from ansible_collections.dockyard.images.plugins.module_utils._stores._engine import (
    EngineStore,
    chain_ids,
    engine_pull_error,
    full_image_id,
    inspect_platform,
    repository_digests,
)

if TYPE_CHECKING:  # a load into an engine uses this file's predictions, and needs no registry client loaded
    from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient

_LAYER_ID = re.compile(r"[0-9a-f]{12}\Z")
_LAYER_STATUS = {"Already exists": ALREADY_EXISTS, "Pull complete": PULL_COMPLETE}


@dataclass
class EngineLayerStatus(LayerStatus):
    """A layer as an engine's progress stream names it: the first 12 hex digits of its digest, and
    its size only when the engine reported downloading it."""

    def to_dict(self) -> dict:
        return {"digest": None, "id": self.digest, "size": self.size, "status": self.status}


class EnginePuller:
    """Pulls through a Docker or Podman engine; check mode predicts from the registry's manifests.

    The engine does the pull, so a real run asks the registry nothing but, with `policy: always`,
    one HEAD (Docker Hub counts manifest GETs, and the engine makes its own), and after Podman pulled
    an image of several layers, its manifest by digest (see `_in_image_order`).
    """

    def __init__(self, store: EngineStore, client: RegistryClient, concurrency: int = 3, check_mode: bool = False):
        self.store = store
        self.client = client
        self.concurrency = max(1, concurrency)
        self.check_mode = check_mode
        self._held = None
        self._held_lock = threading.Lock()

    def pull(self, requests: list) -> list:
        results = [PullResult(request) for request in requests]
        # Every image is looked at at once, up to eight at a time (the engine's inspect, and for a held tag
        # with policy always a HEAD), so a run that moves nothing waits on a round of HEADs for every eight
        # images, not for every `concurrency`. Then the engine pulls what must move.
        befores = self._look(results)
        firsts, later = {}, []  # an image named twice is pulled once; the second name is looked at again after
        for result in results:
            if id(result) not in befores:
                continue
            key = (result.request.reference.stored_name, str(result.request.platform), result.request.platform_explicit)
            if key in firsts:
                later.append(result)
            else:
                firsts[key] = result
        self._engine_pulls(list(firsts.values()), befores)
        self._engine_pulls(later, self._look(later))
        first_brings_shared_layers(results)
        return results

    def _look(self, results: list) -> dict:
        """`_decide` for each result at once; of those the engine must pull, the id of each and what the engine held of it."""
        befores = {}
        for result, failure in each(results, lambda result: self._decide(result, befores)):
            result.error = failure
        return befores

    def _engine_pulls(self, results: list, befores: dict) -> None:
        """The engine pulls `results`: dockerd `concurrency` at a time, as it fetches a layer once for concurrent
        pulls; Podman one at a time, as it would fetch it once per pull."""
        workers = self.concurrency if self.store.kind == "docker" else 1
        waiting = [result for result in results if id(result) in befores]
        for result, failure in each(waiting, lambda result: self._pull_one(result, *befores[id(result)]), workers):
            result.error = failure

    def _decide(self, result: PullResult, engine_pulls: dict) -> None:
        """Fill in `result` where the engine need not pull: it holds the image, or check mode predicts the pull.
        Otherwise note in `engine_pulls` what the engine held before."""
        request = result.request
        before = self.store.find(request.reference)
        if before is not None and request.platform_explicit and not _runs_on(before, request.platform):
            before = None  # the engine holds the tag for another platform
        result.before = engine_state(before, request.reference)
        pin = request.reference.digest
        held = before is not None and (pin is None or _holds_digest(before, request.reference, pin) is not None)
        if held and (request.policy == "missing" or request.reference.pinned):
            self._report_present(result, before)
            return
        registry = self.client.for_reference(request.reference)
        # a HEAD tells whether a held tag moved; check mode reads a tag the engine lacks with one GET
        head_digest = None if request.reference.pinned or before is None else registry.head_manifest(request.reference)
        if before is not None and head_digest and _holds_digest(before, request.reference, head_digest):
            self._report_present(result, before)
            return
        if self.check_mode:
            self._predict(result, registry, head_digest, before)
        else:
            engine_pulls[id(result)] = (before, held)

    def _pull_one(self, result: PullResult, before: Optional[dict], held: bool) -> None:
        self._engine_pull(result, before)
        result.changed = result.changed or not held

    def _report_present(self, result: PullResult, inspect: dict) -> None:
        record = self.store.record_for(inspect, None, {})
        result.id = record.id
        result.digest = _holds_digest(inspect, result.request.reference, None)
        result.platform = str(record.platform) if record.platform else None
        result.layers = [LayerStatus(layer.digest, layer.size, ALREADY_EXISTS) for layer in record.layers]

    def _predict(self, result: PullResult, registry, head_digest: Optional[str], before: Optional[dict]) -> None:
        """What the engine would do, from the registry's manifest and config."""
        request = result.request
        resolved = registry.resolve(request.reference, request.platform, head_digest, lambda digest: None)
        config = read_config(registry.fetch_blob_bytes(request.reference, resolved.config), f"the config {resolved.config.digest}")
        result.layers = predicted_layers(resolved.layers, list(config.diff_ids), self._held_chain_ids())
        found = resolved.platform or config.platform
        result.digest, result.manifest_digest, result.id = resolved.digest, resolved.manifest_digest, resolved.config.digest
        result.platform = str(found) if found else None
        result.changed = before is None or full_image_id(before.get("Id", "")) != resolved.config.digest

    def _held_chain_ids(self) -> set:
        with self._held_lock:
            if self._held is None:
                self._held = self.store.present_chain_ids()
            return self._held

    def _engine_pull(self, result: PullResult, before: Optional[dict]) -> None:
        request = result.request
        reference = request.reference
        params = {"fromImage": reference.name, "tag": reference.digest or reference.tag}
        if request.platform_explicit:
            params["platform"] = str(request.platform)
        headers = {}
        auth = engine_auth_header(self.client.credentials.lookup(reference.domain), reference.domain)
        if auth:
            headers["X-Registry-Auth"] = auth
        order, statuses, sizes = [], {}, {}
        for event in self.store.client.stream("POST", "/images/create", params=params, headers=headers):
            if event.get("error") or event.get("errorDetail"):
                message = event.get("error") or (event.get("errorDetail") or {}).get("message") or "unknown error"
                raise engine_pull_error(message)
            layer_id, status = event.get("id") or "", event.get("status") or ""
            if status.startswith("Digest: "):
                result.digest = status[len("Digest: ") :].strip()
            if not _LAYER_ID.match(layer_id):
                continue
            if layer_id not in statuses:
                order.append(layer_id)
                statuses[layer_id] = PULL_COMPLETE
            if status in _LAYER_STATUS:
                statuses[layer_id] = _LAYER_STATUS[status]
            total = (event.get("progressDetail") or {}).get("total")
            if status == "Downloading" and total:
                sizes[layer_id] = total
        if reference.digest and reference.tag:
            self.store.tag(f"{reference.name}@{reference.digest}", reference)  # a pull by digest leaves no tag
        after = self.store.find(reference)
        if after is None:
            raise DockyardError("engine_error", f"the engine finished pulling {reference.familiar} but does not hold it")
        if request.platform_explicit and not _runs_on(after, request.platform):  # engines take what there is without a word
            found = inspect_platform(after)
            raise DockyardError(
                "platform_not_found",
                f"the image is for {found} only, not {request.platform}, and the engine pulled that one; set platform to {found} or use another image",
                platforms_available=[str(found)],
            )
        record = self.store.record_for(after, None, {})
        result.id = record.id
        result.platform = str(record.platform) if record.platform else None
        result.digest = result.digest or _holds_digest(after, reference, None)
        named = [layer_id for layer_id in order if layer_id != _short_id(record.id)]  # Podman lists the config among the layers
        if self.store.kind == "podman" and len(named) > 1:
            named = self._in_image_order(named, request, result.digest)
        result.layers = [EngineLayerStatus(layer_id, sizes.get(layer_id), statuses[layer_id]) for layer_id in named]
        result.changed = before is None or before.get("Id") != after.get("Id")

    def _in_image_order(self, layer_ids: list, request: PullRequest, digest: Optional[str]) -> list:
        """The layer ids in the order the manifest of the image the engine pulled (`digest`) lists them.

        dockerd names every layer in the manifest's order before it downloads any, so its stream's
        order is the image's. Podman copies blobs concurrently and names each as its copy starts, so
        its order is chance: the manifest, read by digest (one GET), gives the image's.
        """
        try:
            registry = self.client.for_reference(request.reference)
            resolved = registry.resolve(request.reference, request.platform, digest, lambda _digest: None)
        except DockyardError:
            return layer_ids  # the engine pulled the image; a manifest this host cannot read leaves the stream's order
        position = {_short_id(layer.digest): index for index, layer in enumerate(resolved.layers)}
        return sorted(layer_ids, key=lambda layer_id: position.get(layer_id, len(position)))  # stable: what it lacks stays last, in the stream's order


def predicted_layers(layers: tuple, diff_ids: list, held: set) -> list:
    """What an engine does with an image's layers: it reuses them up to the first ChainID it lacks, as
    dockerd does, and takes every layer after that one (`held` is the ChainIDs it holds)."""
    statuses, reusing = [], True
    for layer, chain in zip(layers, chain_ids(diff_ids)):
        reusing = reusing and chain in held
        statuses.append(LayerStatus(layer.digest, layer.size, ALREADY_EXISTS if reusing else PULL_COMPLETE))
    return statuses


def first_brings_shared_layers(results: list) -> None:
    """Images of one call share what the engine takes of a layer: the first image in the list brings it, the others reuse it."""
    brought = set()
    for result in results:
        for layer in result.layers:
            if layer.status == PULL_COMPLETE and layer.digest in brought:
                layer.status = ALREADY_EXISTS
            brought.add(layer.digest)


def _short_id(digest: str) -> str:
    """A digest as engines name layers and images: the first 12 hex digits."""
    return digest.split(":")[-1][:12]


def _runs_on(inspect: dict, platform: Platform) -> bool:
    found = inspect_platform(inspect)
    return found is None or runs_on(found, platform)


def _holds_digest(inspect: dict, reference: Reference, digest: Optional[str]) -> Optional[str]:
    """With a digest: it, if the engine's RepoDigests list it for this repository. Without: the first they list."""
    held = repository_digests(reference, inspect.get("RepoDigests") or [])
    if digest is None:
        return held[0] if held else None
    return digest if digest in held else None


def engine_state(inspect: Optional[dict], reference: Reference) -> Optional[str]:
    """What a name stands for in the engine, as a diff shows it: the digest it was pulled by, else the image id; None when it holds nothing there."""
    if inspect is None:
        return None
    return _holds_digest(inspect, reference, None) or full_image_id(inspect.get("Id", ""))
