# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Delivery of images over the Ansible connection: what the controller and the host each do.

The controller holds the images in an OCI store. It asks the host (image_receive, `step: inventory`)
which of the images' blobs its store holds and which a delivery cut short left in the host's staging
directory; sends only the others, each as a file over the connection into that directory; then has the
host load the staged image layout into its store (`step: load`), which verifies every blob before
the store takes it, copies only what the store lacks, tags, and removes the staging directory.
A blob that arrived stays staged until a load takes it, so a delivery cut short resumes where it was.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
from typing import Optional

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import Descriptor
from ansible_collections.dockyard.images.plugins.module_utils._platform import Platform, best_running_on
from ansible_collections.dockyard.images.plugins.module_utils._reference import is_digest
from ansible_collections.dockyard.images.plugins.module_utils._stores import Wanted

DELIVER_OPTIONS = {  # image_deliver's own options, beside the store's (the action plugin and its documentation's twin)
    "name": {"type": "list", "elements": "str", "required": True},
    "source_path": {"type": "path"},
    "platform": {"type": "str"},
    "concurrency": {"type": "int", "default": 3},
}
STAGING_ROOT = "~/.cache/dockyard/deliver"  # under the connection user's home: the controller writes there without privileges
_STAGING_RE = re.compile(r"store-[0-9a-f]{16}\Z")


def staging_name(store: dict) -> str:
    """The staging directory's name for one host store (its options): the same on every run, so a delivery resumes."""
    return "store-" + hashlib.sha256(json.dumps(store, sort_keys=True).encode()).hexdigest()[:16]


def blob_path(staging: str, digest: str) -> str:
    from ansible_collections.dockyard.images.plugins.module_utils._archive import blob_member

    return os.path.join(staging, blob_member(digest))


def checked_staging(path: str) -> str:
    """The staging directory the controller named: `<home>/.cache/dockyard/deliver/store-<16 hex digits>`, spelled
    plainly (no `..`, no link on the way), nothing else: the load removes it."""
    parts = path.split("/")
    plain = os.path.isabs(path) and os.path.normpath(path) == path and os.path.realpath(path) == path
    if not plain or parts[-4:-1] != [".cache", "dockyard", "deliver"] or not _STAGING_RE.match(parts[-1]):
        raise DockyardError("invalid_argument", f"{path!r:.200} is not a delivery staging directory (~/.cache/dockyard/deliver/store-<16 hex digits>)")
    return path


def _checked_blobs(images: list, staged: list) -> list:
    """The images the controller asks about, every digest checked before a path is made of it; what of them may
    be staged (blobs and manifests) added to `staged`."""
    wanted = []
    for image in images:
        blobs, manifests, diff_ids = image.get("blobs") or [], image.get("manifests") or [], image.get("diff_ids") or []
        described = [blob for blob in blobs + manifests if isinstance(blob, dict)]
        digests = [image.get("id"), *(blob.get("digest") for blob in described)]
        sizes = [blob.get("size") for blob in described]
        shaped = len(described) == len(blobs + manifests) and isinstance(diff_ids, list) and all(is_digest(d) for d in digests + diff_ids)
        if not shaped or not all(isinstance(s, int) and s >= 0 for s in sizes):
            raise DockyardError("invalid_argument", f"images must each be an id, blobs and manifests of digest and size, and diff_ids, not {image!r:.200}")
        wanted.append(Wanted(image["id"], tuple(Descriptor("", blob["digest"], blob["size"]) for blob in blobs), tuple(diff_ids)))
        staged.extend(Descriptor("", blob["digest"], blob["size"]) for blob in blobs + manifests)
    return wanted


def _plain_directories(staging: str, algorithms: set) -> None:
    """Whatever stands where the staging directory's folders go and is not a folder (a link, say) is removed, not followed."""
    for path in (staging, os.path.join(staging, "blobs"), *(os.path.join(staging, "blobs", algorithm) for algorithm in algorithms)):
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(found.st_mode):
            os.unlink(path)
            return


def inventory(store, images: list, staging: str, check_mode: bool = False) -> dict:
    """Of the blobs of `images` ({id, names, blobs and manifests: [{digest, size}], diff_ids}), those the store
    need not be sent; of those and the manifests, those staged already with their full size (a file of another
    size is a transfer cut short: removed, to be sent again); and which of their names the store holds as that
    very image, whole."""
    may_be_staged = []
    wanted = _checked_blobs(images, may_be_staged)
    holding = store.holding(wanted)
    tagged = sorted({name for image in images for name in image.get("names") or () if (name, image["id"]) in holding.names})
    staged = []
    blobs = {d.digest: d for d in may_be_staged}.values()
    if not check_mode:
        _plain_directories(staging, {d.digest.split(":")[0] for d in blobs})
    for descriptor in blobs if os.path.isdir(staging) else ():
        path = blob_path(staging, descriptor.digest)
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DockyardError("invalid_argument", f"cannot read the staging directory {staging}: {exc.strerror}") from None
        if stat.S_ISREG(found.st_mode) and found.st_size == descriptor.size:
            staged.append(descriptor.digest)
        elif not check_mode:  # a transfer cut short (or anything but a file): sent again
            os.unlink(path)
    return {"held": sorted(holding.blobs), "staged": sorted(staged), "tagged": tagged}


def receive(store, staging: str, index: dict, platform: Platform, platform_explicit: bool, concurrency: int, check_mode: bool) -> tuple:
    """Load the image layout staged in `staging` (its blobs sent, `index` given) into the store; the staging
    directory is removed whatever the outcome, unless check mode."""
    from ansible_collections.dockyard.images.plugins.module_utils._archive import LAYOUT, load_archive

    try:
        if not check_mode:
            _write(os.path.join(staging, "oci-layout"), LAYOUT)
            _write(os.path.join(staging, "index.json"), json.dumps(index).encode())
        return load_archive(store, staging, platform, platform_explicit, None, concurrency, check_mode, complete=False)
    finally:
        if not check_mode:
            shutil.rmtree(staging, ignore_errors=True)


def _write(path: str, data: bytes) -> None:
    """A new file at `path`, whatever stood there before removed first, never followed."""
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as handle:
            handle.write(data)
    except OSError as exc:
        reason = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "invalid_argument"
        raise DockyardError(reason, f"cannot write {path}: {exc.strerror}") from None


def best_for(records: list, platform: Platform) -> Optional[object]:
    """Of the records of one name (one per platform held), the one that runs best on `platform`, else None."""
    best = best_running_on([(record, record.platform) for record in records], platform)
    return best[1] if best is not None else None
