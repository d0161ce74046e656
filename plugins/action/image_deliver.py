# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""image_deliver: images from the controller's OCI store to hosts that reach no registry, only the blobs each lacks.

One module run asks the host what its store holds and what a delivery cut short left staged; the
missing blobs go over the task's own connection (its file transfer: SSH, docker, local) into the
staging directory; a second module run loads them into the host's store, verified, and removes the
staging directory. See module_utils/_deliver.py.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import shlex

from ansible.plugins.action import ActionBase

from ansible_collections.dockyard.images.plugins.module_utils._archive import OCI_ARCHIVE, plan_archive
from ansible_collections.dockyard.images.plugins.module_utils._args import merged_spec, store_argument_spec
from ansible_collections.dockyard.images.plugins.module_utils._deliver import DELIVER_OPTIONS, STAGING_ROOT, best_for, blob_path, staging_name
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._manifest import read_config
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._stores import default_store_path, select_images
from ansible_collections.dockyard.images.plugins.module_utils._stores._oci import OciStore

RECEIVER = "dockyard.images.image_receive"
STORE_OPTIONS = ("store", "store_path", "docker_host", "containerd_address", "containerd_namespace")


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        _spare_the_collector()
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=merged_spec(DELIVER_OPTIONS, store_argument_spec))
        try:
            result.update(self._deliver(args, task_vars or {}))
        except DockyardError as exc:
            result.update(exc.to_result(), failed=True)
        return result

    def _deliver(self, args: dict, task_vars: dict) -> dict:
        source = OciStore(args["source_path"] or default_store_path())
        store = {key: args[key] for key in STORE_OPTIONS if args[key] is not None}
        host_args = dict(store, concurrency=args["concurrency"])
        records = source.images() if source.exists() else []
        by_name = {}
        for name in args["name"]:
            held = select_images(records, name)
            if not held:
                raise DockyardError(
                    "not_found", f"the controller's store at {source.root} holds no image named {name}; pull it there first (image_pull with store_path)"
                )
            by_name[name] = held
        staging = self._remote_expand_user(f"{STAGING_ROOT}/{staging_name(store)}", sudoable=False)
        everything = {record.id: record for held in by_name.values() for record in held}
        inventory = self._run_receiver(
            dict(host_args, step="inventory", staging=staging, images=[_candidate(source, record) for record in everything.values()]), task_vars
        )
        platform = parse_platform(args["platform"]) if args["platform"] else parse_platform(inventory["platform"])
        chosen = []
        for name, held in by_name.items():
            record = best_for(held, platform)
            if record is None:
                offered = ", ".join(sorted(str(r.platform) for r in held if r.platform))
                raise DockyardError(
                    "platform_not_found", f"{name}: the controller holds it for {offered or 'no platform'}, not {platform}; pull that platform there first"
                )
            if record.reference is None:
                raise DockyardError("invalid_argument", f"{name} names an image the controller holds under no name; deliver it by a name it holds")
            if record not in chosen:
                chosen.append(record)
        held_blobs, staged, tagged = set(inventory["held"]), set(inventory["staged"]), set(inventory["tagged"])
        present = [record for record in chosen if record.reference.stored_name in tagged]
        images = [source.archive_image(record) for record in chosen if record not in present]
        sending = {}  # digest: size, each once
        for image in images:
            for manifest in (image.top, image.manifest):  # the host reads manifests and configs from the staging directory
                sending.setdefault(manifest.digest, len(manifest.body))
            for descriptor in image.blobs:
                if descriptor is image.config or descriptor.digest not in held_blobs:
                    sending.setdefault(descriptor.digest, descriptor.size)
        to_send = {digest: size for digest, size in sending.items() if digest not in staged}
        summary = {
            "sent_bytes": sum(to_send.values()),
            "sent_blobs": len(to_send),
            "resumed_bytes": sum(size for digest, size in sending.items() if digest in staged),
            "held_bytes": sum({layer.digest: layer.size for record in chosen for layer in record.layers if layer.digest in held_blobs}.values()),
            "platform": str(platform),
            "staging": staging,
        }
        unchanged = [{"reference": name.familiar, "id": record.id, "changed": False} for record in present for name in [record.reference]]
        if not images or self._task.check_mode:
            coming = [{"reference": name.familiar, "id": image.id, "changed": True} for image in images for name in image.names]
            return dict(summary, changed=bool(images), images=unchanged + coming)
        self._make_staging(staging, to_send)
        for digest in sorted(to_send, key=lambda digest: -to_send[digest]):
            self._transfer_file(source.blob_path(digest), blob_path(staging, digest))
        index = json.loads(dict(plan_archive(images, OCI_ARCHIVE).members)["index.json"])
        loaded = self._run_receiver(dict(host_args, step="load", staging=staging, index=index, platform=str(platform)), task_vars)
        loaded["images"] = unchanged + list(loaded.get("images") or [])
        return dict(loaded, **summary)

    def _make_staging(self, staging: str, blobs: dict) -> None:
        """The staging directory and its blob folders, owned by the connection's user, who writes the blobs."""
        folders = sorted({blob_path(staging, digest).rsplit("/", 1)[0] for digest in blobs} | {staging})
        done = self._low_level_execute_command("umask 077 && mkdir -p " + " ".join(shlex.quote(folder) for folder in folders), sudoable=False)
        if done.get("rc") != 0:
            raise DockyardError("invalid_argument", f"cannot create the staging directory {staging} on the host: {done.get('stderr', '').strip()[:300]}")

    def _run_receiver(self, module_args: dict, task_vars: dict) -> dict:
        answer = self._execute_module(module_name=RECEIVER, module_args=module_args, task_vars=task_vars)
        if answer.get("failed") and module_args["step"] == "inventory":
            raise DockyardError(answer.get("reason") or "engine_error", answer.get("msg") or "the host could not say what its store holds")
        return answer


def _spare_the_collector() -> None:
    """In the worker process Ansible forks for the task, leave what it inherited out of every garbage collection:
    building the host module's payload parses its files into many objects, and each full collection would
    otherwise walk the whole of ansible-playbook's memory again (about 0.1 s a delivery). The worker ends with
    the task, so nothing it leaves uncollected outlives it; in any other process, nothing changes. Once: the
    items of a loop run in the same worker, and what one leaves behind is for the collector again."""
    if multiprocessing.parent_process() is not None and gc.get_freeze_count() == 0:
        gc.freeze()


def _candidate(source: OciStore, record) -> dict:
    """An image as the host's inventory is asked about it: its id, every blob it needs, and its layers' DiffIDs
    (by which an engine knows the layers it holds)."""
    config = source.read_blob(record.id)
    if config is None:
        raise DockyardError("store_corrupt", f"the controller's store at {source.root} lacks the config {record.id}; pull the image there again")
    blobs = [{"digest": layer.digest, "size": layer.size} for layer in record.layers]
    blobs.append({"digest": record.id, "size": record.config_size})
    names = [record.reference.stored_name] if record.reference is not None else []
    diff_ids = list(read_config(config, f"the config {record.id}").diff_ids)
    return {"id": record.id, "names": names, "blobs": blobs, "diff_ids": diff_ids, "manifests": _manifests(source, record)}


def _manifests(source: OciStore, record) -> list:
    """The manifests (and index) the controller may send for an image, each with its size: a host says which of
    them a delivery cut short left staged, as for blobs."""
    found = []
    for digest in dict.fromkeys(d for d in (record.handle["digest"], record.digest, record.manifest_digest) if d):
        try:
            found.append({"digest": digest, "size": os.stat(source.blob_path(digest)).st_size})
        except (OSError, DockyardError):  # not kept: never sent
            continue
    return found
