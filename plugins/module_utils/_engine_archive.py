# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image archives and the engines: Docker Engine and Podman save and load images themselves.

Export. The engine saves the images (`GET /images/get`, what `docker save` asks) into a private temporary
file, which is read like any archive; the images go into the archive under the names asked for, with the
engine's ids. The file is removed when the archive is written, or when anything fails.

Load. Only the images the engine does not hold under their names go to it, as one docker-archive written
while it streams into `POST /images/load`, every blob checked against its digest on the way; an image the
engine holds under another name is tagged, not sent. What the engine reuses of the layers it is sent is
predicted from the ChainIDs it holds, as for a pull through it.

Its own file, so that the engine stores load this code only for image_load and image_export.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Optional

from ansible_collections.dockyard.images.plugins.module_utils._archive import (
    DOCKER_ARCHIVE,
    ArchiveImage,
    ArchiveReader,
    ArchiveSource,
    Exported,
    archive_chunks,
    exported,
    exported_image,
    plan_archive,
)
from ansible_collections.dockyard.images.plugins.module_utils._batch import safely
from ansible_collections.dockyard.images.plugins.module_utils._engine_pull import engine_state, first_brings_shared_layers, predicted_layers
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import Descriptor, read_config
from ansible_collections.dockyard.images.plugins.module_utils._platform import host_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import (
    ALREADY_EXISTS,
    MISSING,
    ImageRecord,
    LayerStatus,
    PullRequest,
    PullResult,
    image_label,
    selected_or_fail,
)
from ansible_collections.dockyard.images.plugins.module_utils._stores._engine import EngineStore, chain_ids, chain_set, engine_reason, full_image_id

KEEP, TAG, LOAD = "keep", "tag", "load"  # what a load does for a name: nothing, tag an image the engine holds, send the image


def _is_image(inspect: dict, image: ArchiveImage) -> bool:
    """Whether the engine's image is the archive's: the same id (an engine on containerd's image store names
    an image by its manifest's or index's digest rather than its config's)."""
    return full_image_id(inspect.get("Id", "")) in (image.id, image.top.digest, image.manifest.digest)


# -- export ---------------------------------------------------------------------------------------------


def export_from_engine(store: EngineStore, names: list) -> Exported:
    """The images `names` mean, from the engine's save of them; closing it removes the save."""
    where = f"the {store.kind} engine at {store.root}"
    records = selected_or_fail(store.images(), names, where)
    with contextlib.ExitStack() as cleanup:
        folder = tempfile.mkdtemp(prefix="dockyard-save-")
        cleanup.callback(shutil.rmtree, folder, True)
        path = os.path.join(folder, "images.tar")
        _save(store, records, path, where)
        try:
            reader = cleanup.enter_context(ArchiveReader(path, host_platform()))
        except DockyardError as exc:
            raise DockyardError("engine_error", f"{where} saved the images in a shape this collection cannot read: {exc.message}") from None
        images = [exported_image(record, _saved_image(reader, record, where).manifest, f"{where}: the image {image_label(record)}") for record in records]
        return exported(images, lambda descriptor: reader.open_blob(descriptor.digest), cleanup.pop_all().close)


def _save(store: EngineStore, records: list, path: str, where: str) -> None:
    """Have the engine save the records' images (each once, by id) into the file at `path`."""
    folder = os.path.dirname(path)
    # a lower bound: the layers' bytes as the engine counts them, each once, without the tar around them
    needed = sum({layer.key: layer.size for record in records for layer in record.layers}.values())
    free = shutil.disk_usage(folder).free
    advice = "free some space there, or point TMPDIR at a larger disk"
    if needed > free:
        raise DockyardError(
            "disk_full",
            f"{where} saves these images into {folder} first: they need at least {needed} bytes, and it has {free} free; {advice}",
            bytes_needed=needed,
            bytes_free=free,
        )
    ids = list(dict.fromkeys(record.id for record in records))
    try:
        with open(path, "wb") as out:
            store.client.download("/images/get", out, params=[("names", image_id) for image_id in ids])
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DockyardError("disk_full", f"{folder} filled up while {where} saved the images there; {advice}", bytes_needed=needed) from None
        raise DockyardError("engine_error", f"writing what {where} saved to {path} failed: {exc}") from None


def _saved_image(reader: ArchiveReader, record: ImageRecord, where: str) -> ArchiveImage:
    for image in reader.images:
        if record.id in (image.id, image.top.digest, image.manifest.digest):
            return image
    raise DockyardError("engine_error", f"{where} was asked to save the image {record.id} ({image_label(record)}) but its archive does not hold it")


# -- load -----------------------------------------------------------------------------------------------


@dataclass
class _Load:
    """One name of the archive on its way into the engine: the image the archive gives it, and what is done for it."""

    result: PullResult
    image: ArchiveImage
    action: str = KEEP
    diff_ids: list = field(default_factory=list)  # from the image's config

    @property
    def request(self) -> PullRequest:
        return self.result.request


class EngineLoader:
    """Loads an archive's images into a Docker or Podman engine; check mode predicts what the engine would take."""

    def __init__(self, store: EngineStore, source: ArchiveSource, check_mode: bool = False):
        self.store = store
        self.source = source
        self.check_mode = check_mode
        self._held = None  # the DiffIDs of each image the engine holds, read once
        self._chains = None  # their ChainIDs

    def pull(self, requests: list) -> list:
        loads = [_Load(PullResult(request), self.source.by_name[request.reference.stored_name]) for request in requests]
        for load in loads:
            load.result.error = safely(self._plan)(load)
        first_brings_shared_layers([load.result for load in loads if load.result.error is None])
        if not self.check_mode:
            for load in loads:
                if load.action == TAG and load.result.error is None:
                    load.result.error = safely(self._tag)(load)
            sending = [load for load in loads if load.action == LOAD and load.result.error is None]
            failure = self._send_all(sending) if sending else None
            for load in sending:
                if load.result.error is None:
                    load.result.error = safely(self._confirm)(load, failure)
        failed = [load for load in loads if load.result.error is not None]
        if failed:
            held = self._held_chain_ids() if self.check_mode else self.store.present_chain_ids()  # after the load: what it left
            for load in failed:
                _report_failure(load, held)
        return [load.result for load in loads]

    def _plan(self, load: _Load) -> None:
        """What the name needs: nothing when the engine holds the image under it; else a tag when it holds the
        image under another name, or the image itself, whose layers it reuses up to the first ChainID it lacks."""
        reference, image, result = load.request.reference, load.image, load.result
        result.digest, result.manifest_digest, result.id = image.top.digest, image.manifest.digest, image.id
        result.platform = str(image.platform) if image.platform else None
        before = self._held_under(reference, image)
        result.before = engine_state(before, reference)
        if before is not None and _is_image(before, image):
            # the engine keeps no digest of a loaded image: the name stands for the archive's image, as after the load
            result.before = result.digest
            result.layers = [LayerStatus(layer.digest, layer.size, ALREADY_EXISTS) for layer in image.layers]
            return
        config = read_config(self.source.fetch_blob_bytes(reference, image.config), f"the config {image.config.digest}")
        load.diff_ids = list(config.diff_ids)
        result.layers = predicted_layers(image.layers, load.diff_ids, self._held_chain_ids())
        result.changed = True
        elsewhere = self.store.client.inspect_image(image.id)
        load.action = TAG if elsewhere is not None and _is_image(elsewhere, image) else LOAD

    def _held_under(self, reference: Reference, image: ArchiveImage) -> Optional[dict]:
        """The engine's image under the name; for a name without a tag (an engine names a loaded image by no
        digest), the image itself when the engine holds it."""
        found = self.store.find(reference)
        if found is None and reference.tag is None:
            found = self.store.client.inspect_image(image.id)
        return found

    def _held_stacks(self) -> list:
        """The DiffIDs of each image the engine holds, read once."""
        if self._held is None:
            self._held = [diff_ids for _id, _tags, diff_ids in self.store.held_images()]
        return self._held

    def _held_chain_ids(self) -> set:
        if self._chains is None:
            self._chains = chain_set(self._held_stacks())
        return self._chains

    def _tag(self, load: _Load) -> None:
        self.store.tag(load.image.id, load.request.reference)
        self._confirm(load, None)

    def _confirm(self, load: _Load, failure: Optional[DockyardError]) -> None:
        """The engine must now hold the archive's image under the name; else the load's failure, or an engine_error."""
        after = self._held_under(load.request.reference, load.image)
        if after is None or not _is_image(after, load.image):
            held = "nothing" if after is None else f"the image {full_image_id(after.get('Id', ''))}"
            raise failure or DockyardError("engine_error", f"the engine took the archive but holds {held} under this name, not the image {load.image.id}")

    def _send_all(self, loads: list) -> Optional[DockyardError]:
        """Send the images the loads need; the engine's failure, if it reported one. An image whose bytes the
        archive spoils fails alone, and the others are sent again without it (the engine took none of a cut-off archive)."""
        while loads:
            blobs = _ArchiveBlobs(self.source.reader)
            try:
                return self._send(_images_to_send(loads), blobs, self._reused_layers(loads))
            except DockyardError as exc:
                if blobs.spoiled is None:
                    return exc
                digest, error = blobs.spoiled
                spoiled = [load for load in loads if any(descriptor.digest == digest for descriptor in load.image.blobs)]
                if not spoiled:
                    return exc
                for load in spoiled:
                    load.result.error = error.with_context(load.request.reference.familiar)
                loads = [load for load in loads if load.result.error is None]
        return None

    def _send(self, images: list, blobs: _ArchiveBlobs, reused: set) -> Optional[DockyardError]:
        """Stream a docker-archive of `images` into the engine; the failure it reports in its answer, on any line
        (both engines can answer 200 and say inside that the load failed)."""
        plan = plan_archive(images, DOCKER_ARCHIVE)
        # Docker opens no file of a layer it holds, so it need not be there; Podman looks every file up first
        plan = plan.without(reused) if self.store.kind == "docker" else plan.emptied(reused)
        with contextlib.closing(archive_chunks(plan, blobs.open)) as body:
            answer = self.store.client.stream("POST", "/images/load", params={"quiet": "1"}, headers={"Content-Type": "application/x-tar"}, data=body)
            for event in answer:
                message = event.get("error") or (event.get("errorDetail") or {}).get("message")
                if message:
                    return DockyardError(engine_reason(message), f"the engine failed to load the archive: {message}")
        return None

    def _reused_layers(self, loads: list) -> set:
        """The layer blobs the engine's load will not read, which a delivery does not send: Docker's opens a
        layer's file only for a ChainID it lacks, Podman's reuses a layer whose DiffID it holds (it stops the
        load if such a file is missing, but never reads it: the archive carries an empty file in its place)."""
        images = [([layer.digest for layer in load.image.layers], load.diff_ids) for load in loads]
        return self.store.layers_unread(images, self._held_stacks())


def _images_to_send(loads: list) -> list:
    """Each image once, under the names it is loaded for, with its platform's manifest on top: an engine loads one platform."""
    named = {}
    for load in loads:
        named.setdefault(load.image.manifest.digest, (load.image, []))[1].append(load.request.reference)
    return [dataclasses.replace(image, top=image.manifest, names=tuple(names)) for image, names in named.values()]


def _report_failure(load: _Load, held: set) -> None:
    """A name that failed changed nothing; a layer of its image that the engine lacks is missing."""
    load.result.changed = False
    for layer, chain in zip(load.result.layers, chain_ids(load.diff_ids)):
        if chain not in held:
            layer.status = MISSING


class _ArchiveBlobs:
    """The archive's blobs as the writer reads them, remembering the first one the archive spoils: cut short,
    or holding other bytes than its digest names."""

    def __init__(self, reader: ArchiveReader):
        self.reader = reader
        self.spoiled = None  # (digest, DockyardError)

    @contextlib.contextmanager
    def open(self, descriptor: Descriptor) -> Iterator[BinaryIO]:
        try:
            with self.reader.open_blob(descriptor.digest) as handle:
                yield handle
        except (DockyardError, OSError, tarfile.TarError, zlib.error, EOFError) as exc:
            raise self._spoil(descriptor, exc) from None

    def _spoil(self, descriptor: Descriptor, exc: Exception) -> DockyardError:
        """The archive's error for a blob it spoils, remembered when it is the first."""
        where = f"{self.reader.path}: the blob {descriptor.digest}"
        if not isinstance(exc, DockyardError):
            error = DockyardError("invalid_archive", f"{where} is cut short or cannot be read ({exc})")
        elif exc.reason == "store_corrupt":  # the writer blames a store for bytes that are not their digest's: here the archive holds them
            error = DockyardError("digest_mismatch", f"{where} holds other bytes than its digest names")
        else:
            error = exc
        self.spoiled = self.spoiled or (descriptor.digest, error)
        return error
