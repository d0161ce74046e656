# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Image archives: `oci-archive` (an OCI image layout in a tar) and `docker-archive` (what `docker save` writes).

Reading. An archive is read where it lies, never extracted: members are looked up by name (links are
followed inside the archive, a few hops at most), JSON members are bounded like manifests, and a blob
is streamed to whoever asks, who verifies it. Three shapes are read:
- an OCI image layout (`oci-layout`, `index.json`, `blobs/`): skopeo's and podman's oci-archive, ours,
  and `docker save` from Docker 25 on, which writes `manifest.json` beside it;
- `manifest.json` with `blobs/sha256/...` paths (the same, without the layout);
- `manifest.json` with `<id>/layer.tar` and `<id>.json` paths: `docker save` before Docker 25 and
  `podman save`. These name no compressed digests and no manifest: each layer's digest is its DiffID
  from the image config when the layer is a plain tar (as they always are there), else its bytes are
  hashed once, and checked against the DiffID when unpacked; the manifest is written for the image.
An ArchiveSource answers like a registry (head_manifest, resolve, fetch_blob) so that a store loads an
archive through the same fetching path as a pull: only blobs it lacks move, each verified.

Writing. One writer for both formats: an OCI image layout whose blobs (configs, layers, manifests) are
each written once however many images share them, with `index.json` naming every image (both the
containerd and the OCI annotation, as docker save and containerd write them); `docker-archive` adds the
`manifest.json` and `repositories` that `docker load` reads. The bytes are the same for the same images,
so an archive that already holds them is recognised and not rewritten.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import posixpath
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, ContextManager, Iterator, Optional

from ansible_collections.dockyard.images.plugins.module_utils._blob import CHUNK, BlobSink, MemorySink, sha256_digest
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import (
    CONTAINERD_NAME,
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    REF_NAME,
    Descriptor,
    Manifest,
    ResolvedImage,
    image_blobs,
    index_entries,
    json_object,
    read_config,
)
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform, choose_manifest, runs_on
from ansible_collections.dockyard.images.plugins.module_utils._reference import Reference, is_digest, parse_reference_or_none
from ansible_collections.dockyard.images.plugins.module_utils._stores import PULL_COMPLETE, PullRequest

OCI_ARCHIVE = "oci-archive"
DOCKER_ARCHIVE = "docker-archive"
FORMATS = (OCI_ARCHIVE, DOCKER_ARCHIVE)
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
MAX_LINK_HOPS = 8
MAX_IMAGES = 10_000


def _corrupt(path: str, why: str) -> DockyardError:
    return DockyardError("invalid_archive", f"{path} is not an image archive this collection can read: {why}")


@dataclass(frozen=True)
class ArchiveImage:
    """One image of an archive (or to be written into one): the names it carries, its manifest for one
    platform, and the blobs that manifest names."""

    names: tuple  # Reference values: the full names the image is tagged with, none for an unnamed image
    top: Manifest  # what the names point at: an index, or the image manifest itself
    manifest: Manifest
    config: Descriptor
    layers: tuple
    platform: Optional[Platform]
    tag: Optional[str] = None  # a bare tag the archive names it by (skopeo's oci-archive:FILE:TAG), when it gives no full name

    @property
    def blobs(self) -> tuple:
        return (self.config, *self.layers)

    @property
    def id(self) -> str:
        return self.config.digest


# -- reading ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _File:
    """A regular file of an image layout in a directory, as the reader looks at members."""

    size: int

    @staticmethod
    def isfile() -> bool:
        return True


def _directory_members(root: str) -> dict:
    """The regular files under `root` (an OCI image layout being received), by their path inside it; links are not followed."""
    members = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            found = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(found.st_mode):
                members[_clean(os.path.relpath(os.path.join(folder, name), root))] = _File(found.st_size)
    return members


class ArchiveReader:
    """The images of one archive file (or of an image layout in a directory), for one platform (the host's, or the task's)."""

    def __init__(self, path: str, platform: Platform, platform_explicit: bool = False, complete: bool = True):
        self.path = path
        self.complete = complete  # every layer is in it (an archive); else the store holds those it lacks (a delivery's staging)
        self.platform = platform
        self.platform_explicit = platform_explicit
        self.tar = None
        self._spool = None  # a compressed archive, unpacked once into a plain tar that blobs are read from at once
        try:
            found = os.stat(path)
            if stat.S_ISDIR(found.st_mode):
                if not any(os.path.isfile(os.path.join(path, name)) for name in ("index.json", "manifest.json")):
                    raise _corrupt(path, "it is a directory without an image layout (index.json) or docker save's manifest.json")
                self.members = _directory_members(path)
            elif not stat.S_ISREG(found.st_mode):
                raise DockyardError("invalid_argument", f"{path} is not a regular file; give the path of an image archive")
            else:
                try:
                    self.tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
                except tarfile.ReadError:  # not a plain tar: a compressed one, unpacked once
                    self.tar = self._plain(path)
                self.members = {_clean(member.name): member for member in self.tar.getmembers()}
        except PermissionError as exc:
            raise DockyardError("invalid_argument", f"cannot read {path}: {exc.strerror}; run the task as a user who may") from None
        except FileNotFoundError:
            raise DockyardError("not_found", f"no archive at {path}; give the path of a file docker save, podman save, skopeo or image_export wrote") from None
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            raise _corrupt(path, f"it cannot be read as a tar ({exc})") from None
        self._blobs = {}  # digest: member name, for archives that do not keep blobs by digest
        self._made = {}  # digest: bytes of manifests written for images a docker archive names no manifest for
        self._layers = {}  # (path, DiffID): the descriptor of a docker archive's layer, hashed once however often it is named
        self.format, self.images = self._read()

    def _plain(self, path: str) -> tarfile.TarFile:
        """The tar a compressed archive holds, unpacked once into a private temporary file (removed on close),
        never more than the room its disk has."""
        self._spool = tempfile.NamedTemporaryFile(prefix="dockyard-archive-", suffix=".tar")  # noqa: SIM115 - closed (and so removed) by close()
        room = _free_bytes(os.path.dirname(self._spool.name))
        with tarfile.open(path, "r:*") as packed:
            unpacked = packed.fileobj
            unpacked.seek(0)
            try:
                for chunk in iter(lambda: unpacked.read(CHUNK), b""):
                    self._spool.write(chunk)
                    if room is not None and self._spool.tell() > room:
                        raise OSError(errno.ENOSPC, "no room for the unpacked archive")
            except OSError as exc:
                self._spool.close()
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    where = os.path.dirname(self._spool.name)
                    raise DockyardError(
                        "disk_full", f"{self.path} is compressed, and unpacked it needs more room than {where} has; free some, or set TMPDIR"
                    ) from None
                raise
        self._spool.flush()
        self._spool.seek(0)
        return tarfile.open(fileobj=self._spool, mode="r:")

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
        if self._spool is not None:
            self._spool.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- members -------------------------------------------------------------------------------------

    def _member(self, name: str) -> Optional[tarfile.TarInfo]:
        """The regular file `name` names, following links inside the archive; None if there is none."""
        name = _clean(name)
        for _hop in range(MAX_LINK_HOPS):
            member = self.members.get(name)
            if member is None or member.isfile():
                return member
            if member.issym():
                name = _clean(posixpath.join(posixpath.dirname(name), member.linkname))
            elif member.islnk():
                name = _clean(member.linkname)
            else:
                return None
        return None

    def _open(self, name: str) -> BinaryIO:
        member = self._member(name)
        if member is None:
            raise _corrupt(self.path, f"it lacks {name!r:.200}")
        try:
            if self.tar is None:  # a file of the directory, never a link it was swapped for since it was listed
                return os.fdopen(os.open(os.path.join(self.path, _clean(name)), os.O_RDONLY | os.O_NOFOLLOW), "rb")
            # each blob is read through a handle of its own, so that several are read at once
            handle = open(self.path if self._spool is None else self._spool.name, "rb")  # noqa: SIM115 - closed with the slice
            handle.seek(member.offset_data)
            return _Slice(handle, member.size)
        except (tarfile.TarError, OSError, zlib.error, EOFError) as exc:
            raise _corrupt(self.path, f"{name!r:.200} cannot be read ({exc})") from None

    def _size(self, name: str) -> Optional[int]:
        member = self._member(name)
        return member.size if member is not None else None

    def _read_small(self, name: str) -> bytes:
        """A JSON member, bounded like a manifest."""
        size = self._size(name)
        if size is not None and size > MAX_MANIFEST_BYTES:
            raise _corrupt(self.path, f"{name!r:.200} is {size} bytes, more than a manifest or config may be")
        with self._open(name) as handle:
            try:
                return handle.read(MAX_MANIFEST_BYTES + 1)
            except (tarfile.TarError, OSError, zlib.error, EOFError) as exc:
                raise _corrupt(self.path, f"{name!r:.200} is cut short ({exc})") from None

    def _json(self, name: str):
        try:
            return json.loads(self._read_small(name))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _corrupt(self.path, f"{name!r:.200} is not JSON") from None

    def open_blob(self, digest: str) -> BinaryIO:
        """The bytes of a blob, unverified: whoever reads them checks their digest."""
        if digest in self._made:
            return io.BytesIO(self._made[digest])
        return self._open(self._blobs.get(digest) or blob_member(digest))

    def has_blob(self, descriptor: Descriptor) -> bool:
        if descriptor.digest in self._made:
            return True
        return self._size(self._blobs.get(descriptor.digest) or blob_member(descriptor.digest)) == descriptor.size

    def blob_bytes(self, descriptor: Descriptor) -> bytes:
        """A small blob (a manifest, a config) into memory, verified; no larger than a manifest may be."""
        if descriptor.size > MAX_MANIFEST_BYTES:
            raise _corrupt(self.path, f"the manifest or config {descriptor.digest} is {descriptor.size} bytes, more than {MAX_MANIFEST_BYTES}")
        sink = MemorySink(descriptor.digest)
        self.copy_blob(descriptor, sink)
        return bytes(sink.data)

    def copy_blob(self, descriptor: Descriptor, sink: BlobSink) -> None:
        """Stream a blob into `sink`, then verify its size and digest; an archive that holds other bytes fails."""
        what = f"{self.path}: the blob {descriptor.digest}"
        with self.open_blob(descriptor.digest) as handle:
            try:
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    sink.write(chunk)
                    if sink.offset > descriptor.size:
                        break
            except (tarfile.TarError, OSError, zlib.error, EOFError) as exc:
                raise _corrupt(self.path, f"the blob {descriptor.digest} is cut short ({exc})") from None
        if sink.offset != descriptor.size or sink.digest() != descriptor.digest:
            found = f"{sink.offset} bytes" if sink.offset != descriptor.size else f"bytes that hash to {sink.digest()}"
            sink.restart()
            raise DockyardError("digest_mismatch", f"{what} holds {found}, not the {descriptor.size} bytes its manifest names; nothing was stored")

    # -- shapes --------------------------------------------------------------------------------------

    def _read(self) -> tuple:
        if "index.json" in self.members and "oci-layout" in self.members:
            shape, images = OCI_ARCHIVE, self._read_layout()
        elif "manifest.json" in self.members:
            shape, images = DOCKER_ARCHIVE, self._read_docker()
        else:
            raise _corrupt(self.path, "it holds neither an OCI image layout (oci-layout, index.json) nor docker save's manifest.json")
        if not images:
            raise _corrupt(self.path, "it holds no image")
        for image in images if self.complete else ():  # every blob is there, with its size, before anything is loaded from it
            for descriptor in image.blobs:
                if not self.has_blob(descriptor):
                    label = image.names[0].familiar if image.names else image.tag or image.id
                    raise _corrupt(
                        self.path, f"it lacks {self._blobs.get(descriptor.digest) or blob_member(descriptor.digest)} of {label}, or holds it with another size"
                    )
        return shape, images

    def _read_layout(self) -> list:
        layout = self._json("oci-layout")
        if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
            raise _corrupt(self.path, "its oci-layout is not imageLayoutVersion 1.0.0")
        try:
            entries = index_entries(self._read_small("index.json"), "index.json")
        except DockyardError as exc:
            raise _corrupt(self.path, exc.message) from None
        if len(entries) > MAX_IMAGES:
            raise _corrupt(self.path, f"its index names {len(entries)} images, more than {MAX_IMAGES}")
        docker_names = self._docker_names() if "manifest.json" in self.members else {}
        named = {}  # the name (or bare tag, or digest) of each entry: its entries, one per platform
        for entry in entries:
            annotations = entry.get("annotations") or {}
            full = parse_reference_or_none(str(annotations.get(CONTAINERD_NAME) or ""))
            ref_name = str(annotations.get(REF_NAME) or "")
            if full is None and ref_name:
                full = parse_reference_or_none(ref_name) if "/" in ref_name or ":" in ref_name else None
            key = ("name", full.stored_name) if full is not None else ("tag", ref_name) if ref_name else ("digest", entry["digest"])
            named.setdefault(key, (full, ref_name, []))[2].append(entry)
        images = []
        for (kind, _key), (full, ref_name, choices) in named.items():
            top_descriptor = self._choose(choices)
            top = self._manifest(Descriptor.from_json(top_descriptor))
            image = self._image(top, () if full is None else (full,), tag=ref_name if kind == "tag" else None)
            extra = docker_names.get(image.config.digest, ())
            images.append(_with_names(image, extra) if full is None and kind == "digest" else image)
        return _merged(images)

    def _choose(self, entries: list) -> dict:
        """Of the index entries that name one image, the one for the platform (entries of an index that
        lack their manifest, as `docker save` leaves other platforms, are not candidates)."""
        present = [entry for entry in entries if self.has_blob(Descriptor.from_json(entry))]
        if len(present) == 1 and not self.platform_explicit:
            return present[0]
        try:
            return choose_manifest(present, self.platform, INDEX_TYPES + MANIFEST_TYPES).descriptor
        except DockyardError as exc:
            raise exc.with_context(self.path) from None

    def _manifest(self, descriptor: Descriptor) -> Manifest:
        if descriptor.size > MAX_MANIFEST_BYTES:
            raise _corrupt(self.path, f"the manifest {descriptor.digest} is {descriptor.size} bytes, more than a manifest may be")
        body = self.blob_bytes(descriptor)
        data = json_object(body, f"{self.path}: {descriptor.digest}")
        media_type = data.get("mediaType") if isinstance(data.get("mediaType"), str) else ""
        return Manifest(body, media_type or descriptor.media_type or (OCI_INDEX if "manifests" in data else DOCKER_MANIFEST), descriptor.digest)

    def _image(self, top: Manifest, names: tuple, tag: Optional[str] = None) -> ArchiveImage:
        what = f"{self.path}: the image {names[0].familiar if names else tag or top.digest}"
        manifest, platform = top, None
        if top.is_index:
            entries = [entry for entry in index_entries(top.body, what) if entry.get("mediaType") in MANIFEST_TYPES]
            chosen = self._choose(entries)
            manifest = self._manifest(Descriptor.from_json(chosen))
            platform = Platform.from_descriptor(chosen.get("platform"))
        config, layers = image_blobs(manifest, what)
        config_body = self.blob_bytes(config)
        found = platform or read_config(config_body, f"{what}: its config").platform
        self._refuse_other_platform(found, what)
        return ArchiveImage(names, top, manifest, config, layers, found, tag)

    def _refuse_other_platform(self, found: Optional[Platform], what: str) -> None:
        if self.platform_explicit and found is not None and not runs_on(found, self.platform):
            raise DockyardError("platform_not_found", f"{what} is for {found} only, not {self.platform}; set platform to {found} or load another archive")

    def _docker_names(self) -> dict:
        """config digest: the names manifest.json gives (RepoTags), for a layout whose index names no image."""
        names = {}
        for entry in self._docker_entries():
            config = self._blobs_digest(entry["Config"])
            if config is not None:
                names[config] = entry["RepoTags"]
        return names

    def _docker_entries(self) -> list:
        data = self._json("manifest.json")
        if not isinstance(data, list) or len(data) > MAX_IMAGES:
            raise _corrupt(self.path, "its manifest.json is not a list of images")
        entries = []
        for entry in data:
            config, layers, tags = (entry.get(key) for key in ("Config", "Layers", "RepoTags")) if isinstance(entry, dict) else (None, None, None)
            if not isinstance(config, str) or not isinstance(layers, list) or not all(isinstance(layer, str) for layer in layers):
                raise _corrupt(self.path, "an image of its manifest.json lacks Config or Layers")
            if tags is not None and (not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags)):
                raise _corrupt(self.path, "the RepoTags of an image of its manifest.json are not names")
            references = tuple(parse_reference_or_none(tag) for tag in tags or ())
            if None in references:
                raise _corrupt(self.path, f"its manifest.json tags an image {tags!r:.200}, which is not an image name")
            entries.append({"Config": config, "Layers": layers, "RepoTags": references})
        return entries

    @staticmethod
    def _blobs_digest(path: str) -> Optional[str]:
        """The digest a `blobs/<algorithm>/<hex>` path names, else None."""
        parts = posixpath.normpath(path).split("/")
        digest = f"{parts[1]}:{parts[2]}" if len(parts) == 3 and parts[0] == "blobs" else None
        return digest if digest is not None and is_digest(digest) else None

    def _read_docker(self) -> list:
        images = []
        for entry in self._docker_entries():
            images.append(self._docker_image(entry))
        return _merged(images)

    def _docker_image(self, entry: dict) -> ArchiveImage:
        """An image of manifest.json: its config and layers by path, and a manifest written for it."""
        config_path = entry["Config"]
        config_body = self._read_small(config_path)
        config = Descriptor(DOCKER_CONFIG, sha256_digest(config_body), len(config_body))
        expected = self._blobs_digest(config_path)
        if expected is not None and expected != config.digest:
            raise DockyardError("digest_mismatch", f"{self.path}: {config_path} hashes to {config.digest}; the archive is corrupt")
        names = entry["RepoTags"]
        what = f"{self.path}: the image {names[0].familiar if names else config.digest}"
        image_config = read_config(config_body, f"{what}: its config")
        self._refuse_other_platform(image_config.platform, what)
        if len(image_config.diff_ids) != len(entry["Layers"]):
            raise _corrupt(self.path, f"{what.split(': ', 1)[1]} lists {len(entry['Layers'])} layers but its config {len(image_config.diff_ids)} DiffIDs")
        self._blobs[config.digest] = config_path
        layers = tuple(self._docker_layer(path, diff_id, what) for path, diff_id in zip(entry["Layers"], image_config.diff_ids))
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
                "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size} for layer in layers],
            },
            separators=(",", ":"),
        ).encode()
        manifest = Manifest(body, DOCKER_MANIFEST, sha256_digest(body))
        self._made[manifest.digest] = body
        return ArchiveImage(names, manifest, manifest, config, layers, image_config.platform)

    def _docker_layer(self, path: str, diff_id: str, what: str) -> Descriptor:
        """A layer of a docker archive: a plain tar is its DiffID; a compressed one is hashed (once), and its content checked against the DiffID."""
        key = (_clean(path), diff_id)
        if key not in self._layers:
            self._layers[key] = self._new_docker_layer(path, diff_id, what)
        return self._layers[key]

    def _new_docker_layer(self, path: str, diff_id: str, what: str) -> Descriptor:
        size = self._size(path)
        if size is None:
            raise _corrupt(self.path, f"{what.split(': ', 1)[1]} names the layer {path!r:.200}, which the archive lacks")
        with self._open(path) as handle:
            magic = handle.read(4)
        named = self._blobs_digest(path)
        if magic[:2] == b"\x1f\x8b" or magic == b"\x28\xb5\x2f\xfd":
            media_type = DOCKER_LAYER_GZIP if magic[:2] == b"\x1f\x8b" else DOCKER_LAYER_ZSTD
            digest = named or self._hash_compressed(path, diff_id, media_type, what)
        else:
            media_type, digest = DOCKER_LAYER, named or diff_id
            if digest != diff_id:
                raise DockyardError("digest_mismatch", f"{what}: the layer {path} is stored as {digest} but its config names it {diff_id}")
        self._blobs[digest] = path
        return Descriptor(media_type, digest, size)

    def _hash_compressed(self, path: str, diff_id: str, media_type: str, what: str) -> str:
        if media_type != DOCKER_LAYER_GZIP:
            raise DockyardError("unsupported_media_type", f"{what}: the layer {path} is zstd-compressed, which a docker archive does not name by digest")
        packed, unpacked = hashlib.sha256(), hashlib.sha256()
        inflater = zlib.decompressobj(wbits=47)
        with self._open(path) as handle:
            try:
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    packed.update(chunk)
                    pending = chunk
                    while pending:  # never more than CHUNK unpacked at once, however well the bytes pack
                        unpacked.update(inflater.decompress(pending, CHUNK))
                        pending = inflater.unconsumed_tail
                        if inflater.eof and not pending and inflater.unused_data:  # gzip members one after another
                            pending = inflater.unused_data
                            inflater = zlib.decompressobj(wbits=47)
            except zlib.error as exc:
                raise _corrupt(self.path, f"the layer {path} is not valid gzip ({exc})") from None
        if "sha256:" + unpacked.hexdigest() != diff_id:
            raise DockyardError("digest_mismatch", f"{what}: the layer {path} unpacks to sha256:{unpacked.hexdigest()}, not its DiffID {diff_id}")
        return "sha256:" + packed.hexdigest()


class _Slice:
    """`size` bytes of an open file, from where it stands: one member of a plain tar."""

    def __init__(self, handle: BinaryIO, size: int):
        self.handle, self.left = handle, size

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(self.left if size < 0 else min(size, self.left))
        self.left -= len(chunk)
        return chunk

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> _Slice:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _clean(name: str) -> str:
    """A member's name as a path inside the archive: `./a`, `/a` and `x/../a` are all `a`; nothing leads out of it."""
    return posixpath.normpath("/" + name).lstrip("/")


def blob_member(digest: str) -> str:
    """Where an image layout keeps a blob: blobs/<algorithm>/<encoded>."""
    algorithm, _colon, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def _with_names(image: ArchiveImage, names: tuple) -> ArchiveImage:
    return ArchiveImage(tuple(names), image.top, image.manifest, image.config, image.layers, image.platform, image.tag)


def _merged(images: list) -> list:
    """One image per manifest: an image listed once per name is one image with all its names."""
    merged = {}
    for image in images:
        key = (image.top.digest, image.tag)
        if key in merged:
            known = merged[key]
            image = _with_names(known, known.names + tuple(name for name in image.names if name not in known.names))
        merged[key] = image
    return list(merged.values())


class ArchiveSource:
    """An archive that answers like a registry, so that a store loads it through the fetching path of a pull."""

    def __init__(self, reader: ArchiveReader, by_name: dict):
        self.reader = reader
        self.by_name = by_name  # stored name: ArchiveImage
        self.warnings = []

    def for_reference(self, reference: Reference) -> ArchiveSource:
        return self

    def _image(self, reference: Reference) -> ArchiveImage:
        image = self.by_name.get(reference.stored_name)
        if image is None:
            raise DockyardError("not_found", f"{self.reader.path} holds no image named {reference.familiar}")
        return image

    def head_manifest(self, reference: Reference) -> Optional[str]:
        return self._image(reference).top.digest

    def resolve(self, reference: Reference, platform: Platform, known_digest: Optional[str], local_manifest: Callable):
        image = self._image(reference)
        return ResolvedImage(
            reference=reference,
            top=image.top,
            manifest=image.manifest,
            config=image.config,
            layers=image.layers,
            platform=image.platform,
            platform_fallback=False,
        )

    def fetch_blob(self, reference: Reference, descriptor: Descriptor, sink: BlobSink) -> None:
        self.reader.copy_blob(descriptor, sink)

    def fetch_blob_bytes(self, reference: Reference, descriptor: Descriptor, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        if descriptor.size > limit:
            raise DockyardError("unsupported_media_type", f"{reference.familiar}: blob {descriptor.digest} is too large to read into memory")
        return self.reader.blob_bytes(descriptor)


# -- writing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """What a store gives an archive: the images, each once with the names asked for it, and a way to read
    each of their blobs (a context manager giving a binary stream; the writer verifies what it reads).
    `close` lets go of what the store set aside to give them (an engine's save), once the archive is written."""

    images: list
    open_blob: Callable[[Descriptor], ContextManager[BinaryIO]]
    close: Callable[[], None] = lambda: None


def exported_image(record, manifest: Manifest, what: str, top: Optional[Manifest] = None) -> ArchiveImage:
    """The image a store's record names, as an archive carries it: its manifest (and the index that names it,
    when the store kept the registry's, so that the image keeps the digest the registry gives it), under the
    record's name."""
    config, layers = image_blobs(manifest, what)
    names = (record.reference,) if record.reference is not None else ()
    return ArchiveImage(names, top or manifest, manifest, config, layers, record.platform)


def exported(images: list, open_blob: Callable, close: Callable[[], None] = lambda: None) -> Exported:
    """The images in one order whatever order they were asked in, so that the same images make the same archive."""
    merged = [_with_names(image, tuple(sorted(image.names, key=lambda name: name.canonical))) for image in _merged(images)]
    return Exported(sorted(merged, key=lambda image: ([name.canonical for name in image.names], image.id)), open_blob, close)


@dataclass(frozen=True)
class ArchivePlan:
    """What an archive of some images holds, member by member: (name, bytes) for what is written from
    memory, (name, Descriptor) for blobs streamed from the store."""

    members: list

    @property
    def size(self) -> int:
        return sum(len(source) if isinstance(source, bytes) else source.size for _name, source in self.members)

    def without(self, digests: set) -> ArchivePlan:
        """The same archive less the blobs `digests` names (what its reader holds already)."""
        return ArchivePlan([(name, source) for name, source in self.members if isinstance(source, bytes) or source.digest not in digests])

    def emptied(self, digests: set) -> ArchivePlan:
        """The same archive with an empty file in place of each blob `digests` names (a reader that must find
        every file it names, but reuses what it holds without reading it)."""
        return ArchivePlan([(name, b"" if not isinstance(source, bytes) and source.digest in digests else source) for name, source in self.members])

    def listing(self) -> list:
        """(name, size) of every member, and the bytes of those written from memory: what tells two archives apart."""
        return [(name, source if isinstance(source, bytes) else source.size) for name, source in self.members]


def plan_archive(images: list, archive_format: str) -> ArchivePlan:
    """The members of an archive of `images`, each blob once, in an order that depends only on the images."""
    blobs = {}
    index = []
    for image in images:
        for manifest in {image.top.digest: image.top, image.manifest.digest: image.manifest}.values():
            blobs.setdefault(manifest.digest, manifest.body)
        for descriptor in image.blobs:
            blobs.setdefault(descriptor.digest, descriptor)
        descriptor = {"mediaType": image.top.media_type, "digest": image.top.digest, "size": len(image.top.body)}
        if image.platform is not None and not image.top.is_index:
            descriptor["platform"] = image.platform.to_oci()
        for name in image.names or (None,):
            annotations = {} if name is None else {CONTAINERD_NAME: name.stored_name, REF_NAME: name.tag or name.digest or "latest"}
            index.append({**descriptor, "annotations": annotations} if annotations else descriptor)
    members = [("oci-layout", LAYOUT), ("index.json", _json_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}))]
    if archive_format == DOCKER_ARCHIVE:
        members += _docker_members(images)
    members += [(blob_member(digest), source) for digest, source in sorted(blobs.items())]
    return ArchivePlan(members)


def _docker_members(images: list) -> list:
    """manifest.json and repositories, as `docker load` reads them."""
    entries, repositories = [], {}
    for image in images:
        tags = [name.familiar for name in image.names if name.tag]
        entries.append({"Config": blob_member(image.config.digest), "RepoTags": tags or None, "Layers": [blob_member(layer.digest) for layer in image.layers]})
        for name in image.names:
            if name.tag and image.layers:
                repository = name.familiar.rsplit(":", 1)[0]
                repositories.setdefault(repository, {})[name.tag] = image.layers[-1].digest.split(":", 1)[1]
    return [("manifest.json", _json_bytes(entries)), ("repositories", _json_bytes(repositories))]


def _json_bytes(data) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def write_archive(out: BinaryIO, plan: ArchivePlan, open_blob: Callable[[Descriptor], BinaryIO]) -> None:
    """Write the archive `plan` describes into `out` (a file): see archive_chunks."""
    for chunk in archive_chunks(plan, open_blob):
        out.write(chunk)


def archive_chunks(plan: ArchivePlan, open_blob: Callable[[Descriptor], BinaryIO]) -> Iterator[bytes]:
    """The archive `plan` describes, as the bytes of a tar stream in order (the same bytes `tarfile` writes:
    PAX headers, members padded to 512-byte blocks, the archive padded to whole records): directories, then
    members. Every blob's bytes are checked against its digest as they go, so a store that holds other bytes
    than it names fails with store_corrupt before the archive's end, instead of spoiling it; one shorter than
    its size fails with an OSError. A blob goes in chunks of CHUNK bytes, straight from its file."""
    written = 0

    def member(name: str, size: int, kind: bytes = tarfile.REGTYPE, mode: int = 0o644) -> bytes:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.size = kind, mode, 0, size
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    parents = sorted({posixpath.dirname(name) for name, _source in plan.members if "/" in name})
    for folder in dict.fromkeys(part for parent in parents for part in _parents(parent)):
        header = member(folder, 0, tarfile.DIRTYPE, 0o755)
        written += len(header)
        yield header
    for name, source in plan.members:
        size = len(source) if isinstance(source, bytes) else source.size
        header = member(name, size)
        yield header
        if not isinstance(source, bytes):
            with open_blob(source) as handle:
                yield from _verified_chunks(handle, source)
        elif source:
            yield source
        padding = -size % tarfile.BLOCKSIZE
        if padding:  # no empty chunk: a request body sent in chunks ends at one
            yield tarfile.NUL * padding
        written += len(header) + size + padding
    end = tarfile.BLOCKSIZE * 2
    yield tarfile.NUL * (end + -(written + end) % tarfile.RECORDSIZE)


def _parents(folder: str) -> list:
    parts = folder.split("/")
    return ["/".join(parts[: index + 1]) for index in range(len(parts))]


def _verified_chunks(handle: BinaryIO, descriptor: Descriptor) -> Iterator[bytes]:
    """The blob's `size` bytes from `handle`, in chunks; store_corrupt before the last of them when they are not
    the bytes its digest names, an OSError when the stream ends short of its size."""
    hasher = hashlib.new(descriptor.digest.split(":", 1)[0])
    left = descriptor.size
    while True:
        asked = min(CHUNK, left)
        chunk = handle.read(asked) if left else b""
        if left and not chunk:
            raise OSError(errno.EIO, f"the blob {descriptor.digest} ends {left} bytes short of its size {descriptor.size}")
        if len(chunk) > asked:
            raise OSError(errno.EIO, f"reading the blob {descriptor.digest} gave {len(chunk)} bytes where {asked} were asked for")
        hasher.update(chunk)
        left -= len(chunk)
        if not left and f"{hasher.name}:{hasher.hexdigest()}" != descriptor.digest:
            raise DockyardError("store_corrupt", f"the blob {descriptor.digest} the store holds is not what its digest names; pull the image again")
        if chunk:
            yield chunk
        if not left:
            return


def archive_holds(path: str, plan: ArchivePlan) -> bool:
    """Whether the file at `path` is already the archive `plan` describes (same members, sizes and catalogs)."""
    try:
        with tarfile.open(path, "r:") as tar:
            found = [(member.name, member.size) for member in tar.getmembers() if member.isfile()]
            expected = plan.listing()
            if [(name, len(value) if isinstance(value, bytes) else value) for name, value in expected] != found:
                return False
            for name, value in expected:
                if isinstance(value, bytes):
                    handle = tar.extractfile(name)
                    if handle is None or handle.read() != value:
                        return False
            return True
    except (OSError, tarfile.TarError, EOFError, KeyError):
        return False


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[BinaryIO]:
    """A file written beside `path` and moved over it only once complete and synced; removed in every other outcome.
    It keeps the mode of the file it replaces; a new one is readable by all but written by its owner, less the umask."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o644 & ~umask
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".partial")
    except OSError as exc:
        raise DockyardError("invalid_argument", f"cannot write beside {path}: {exc.strerror}; create its directory, or choose another path") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


# -- what image_load and image_export do ----------------------------------------------------------------


def load_archive(
    store, path: str, platform: Platform, platform_explicit: bool, repository: Optional[str], concurrency: int, check_mode: bool, complete: bool = True
) -> tuple:
    """(the archive's format, a PullResult for each name of its images): every image the archive holds,
    under every name it gives, loaded through the store's own loader."""
    with ArchiveReader(path, platform, platform_explicit, complete) as reader:
        by_name, unnamed = {}, []
        for image in reader.images:
            names = image.names
            if not names and image.tag and repository:
                names = (_named(repository, image.tag),)
            if not names:
                unnamed.append(image.tag or image.id)
            for name in names:
                if name.digest is not None and name.digest not in (image.top.digest, image.manifest.digest):
                    raise DockyardError(
                        "digest_mismatch", f"{path} names an image {name.familiar}, but that image's digest is {image.top.digest}; nothing was loaded"
                    )
                by_name[name.stored_name] = (name, image)  # a name given twice is the last image's, as docker load has it
        if unnamed:
            raise DockyardError(
                "invalid_argument",
                f"{path} names {', '.join(unnamed)} by no image name; set repository to name them (each keeps its tag), or load it into an engine by id",
            )
        source = ArchiveSource(reader, {key: image for key, (_name, image) in by_name.items()})
        requests = [PullRequest(name, platform, platform_explicit, "always") for name, _image in by_name.values()]
        return reader.format, store.loader(source, concurrency, check_mode).pull(requests)


def load_result(results: list) -> dict:
    """What image_load returns for the PullResults of a load: a layer the store took is `loaded`, not pulled."""
    images = []
    for result in results:
        image = result.to_dict(result.request.reference.familiar)
        for layer in image["layers"]:
            layer["status"] = "loaded" if layer["status"] == PULL_COMPLETE else layer["status"]
        image["loaded_bytes"] = image.pop("downloaded_bytes")
        images.append(image)
    return {
        "changed": any(result.changed for result in results),
        "images": images,
        "loaded_bytes": sum(result.downloaded_bytes for result in results),
        "reused_bytes": sum(result.reused_bytes for result in results),
        "diff": {
            "before": {r.request.reference.canonical: r.before for r in results},
            "after": {r.request.reference.canonical: (r.digest if r.error is None else r.before) for r in results},
        },
    }


def _named(repository: str, tag: str) -> Reference:
    from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference

    reference = parse_reference_or_none(f"{repository}:{tag}")
    if reference is None or reference.digest is not None:
        parse_reference(f"{repository}:{tag}")  # says what is wrong with it
        raise DockyardError("invalid_argument", f"repository {repository!r:.200} with the tag {tag!r:.100} is not an image name")
    return reference


def export_archive(store, names: list, path: str, archive_format: str, check_mode: bool) -> dict:
    """Write the images `names` mean into an archive at `path`, unless it already holds exactly them."""
    folder = os.path.dirname(os.path.abspath(path))
    if not names:
        raise DockyardError("invalid_argument", "name lists no image to write")
    if not os.path.isdir(folder):
        raise DockyardError("invalid_argument", f"{folder} does not exist; create it, or write the archive elsewhere")
    if os.path.isdir(path) or path.endswith("/"):
        raise DockyardError("invalid_argument", f"{path} is a directory; give the archive's file name")
    source = store.exporter(names)
    try:
        return _write_exported(source, path, archive_format, check_mode)
    finally:
        source.close()


def _write_exported(source: Exported, path: str, archive_format: str, check_mode: bool) -> dict:
    plan = plan_archive(source.images, archive_format)
    before = _archive_names(path)
    result = {
        "changed": not archive_holds(path, plan),
        "path": path,
        "format": archive_format,
        "bytes": plan.size,
        "images": [_image_dict(image) for image in source.images],
        "diff": {"before": {"images": before}, "after": {"images": sorted(name.familiar for image in source.images for name in image.names)}},
    }
    if not result["changed"] or check_mode:
        return result
    folder = os.path.dirname(os.path.abspath(path))
    free = _free_bytes(folder)
    if free is not None and free < plan.size:
        raise DockyardError("disk_full", f"the archive needs {plan.size} bytes, but {folder} has {free} free", bytes_needed=plan.size, bytes_free=free)
    try:
        with atomic_file(path) as out:
            write_archive(out, plan, source.open_blob)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DockyardError("disk_full", f"{folder} filled up while the archive was written; nothing was left at {path}") from None
        raise DockyardError("engine_error", f"writing {path} failed: {exc}; nothing was left there") from None
    return result


def _free_bytes(folder: str) -> Optional[int]:
    try:
        found = os.statvfs(folder)
    except OSError:
        return None
    return found.f_bavail * found.f_frsize


def _archive_names(path: str) -> Optional[list]:
    """The names of the images an existing archive holds (for the diff), or None when there is none to read."""
    if not os.path.isfile(path):
        return None
    try:
        with ArchiveReader(path, Platform("linux", "amd64")) as reader:
            return sorted(name.familiar for image in reader.images for name in image.names)
    except DockyardError:
        return None


def _image_dict(image: ArchiveImage) -> dict:
    return {
        "names": [name.familiar for name in image.names],
        "id": image.id,
        "digest": image.top.digest,
        "platform": str(image.platform) if image.platform else None,
        "size": sum(layer.size for layer in image.layers),
        "layers": len(image.layers),
    }
