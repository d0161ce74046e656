#!/usr/bin/python
# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_remove
short_description: Remove images safely, counting only the bytes really freed
version_added: 0.1.0
description:
  - Removes images from the host's store by reference or id, or every image not named in O(keep).
  - As with C(docker rmi), removing a tag that other tags share only untags; removing the last tag deletes the image;
    layers other images still use stay, and are reported in RV(kept_layers). RV(bytes_freed) counts only what is
    really deleted, never a shared layer.
  - On an engine, an image that a container uses (running or stopped) is refused with reason V(in_use), naming the
    containers, before anything is deleted, unless O(force=true).
  - In the OCI store the removal holds the store's exclusive lock, so a concurrent pull cannot lose blobs to it.
author:
  - Dockyard Images Maintainers (@dockyard)
extends_documentation_fragment:
  - dockyard.images.store
  - dockyard.images.registry
  - dockyard.images.attributes
  - dockyard.images.attributes.actiongroup_images
attributes:
  check_mode:
    support: full
    details:
      - Check mode computes the same plan as a real run, the in-use check included, and deletes nothing.
  diff_mode:
    support: full
    details:
      - The diff lists the images before and after, one a line.
  idempotent:
    support: full
options:
  name:
    description:
      - References (every platform of a tag; V(repository@sha256:...) for the images with that registry or manifest
        digest) or image ids (or a prefix of at least 12 hex digits) to remove, in the forms O(keep) describes.
      - Names the store does not hold are listed in RV(missing); removing them changes nothing.
    type: list
    elements: str
  keep:
    description:
      - Remove every image except those these entries name, and except images containers use.
      - An entry keeps every image it names, in any form that O(name) and M(dockyard.images.image_facts) accept, after
        normalisation (V(redis:7) is V(docker.io/library/redis:7)). A tag names every platform held under it;
        V(repository@sha256:...) the images of that repository whose registry digest (the index digest of a
        multi-platform image) or platform manifest digest it is; V(repository:tag@sha256:...) the image held under that
        tag with that digest; V(sha256:...) an image id; 12 or more hex digits (with or without V(sha256:)) an id prefix.
      - An entry that names no image in the store fails the task with reason V(invalid_argument) before anything is
        removed, in check mode too, so that a typo never removes the image it meant to keep. So does an empty list,
        which would remove every image that no container uses. O(keep_missing=ignore) allows both.
    type: list
    elements: str
  keep_missing:
    description:
      - What to do, with O(keep), when an entry names no image in the store, or when O(keep) is empty.
      - V(fail) fails the task with reason V(invalid_argument), naming those entries, before anything is removed.
      - V(ignore) removes every image the other entries do not name (every image not in use, if O(keep) is empty), and lists
        the entries in RV(missing).
      - Ignored with O(name).
    type: str
    choices: [fail, ignore]
    default: fail
  force:
    description:
      - Remove images even when containers use them (engines only; the containers keep running on the image they have).
    type: bool
    default: false
  prune:
    description:
      - Delete the blobs (OCI store) that no remaining image needs. With V(false) the OCI store only untags; an engine is
        asked not to delete untagged parent images.
    type: bool
    default: true
seealso:
  - module: dockyard.images.image_facts
  - module: dockyard.images.image_pull
notes:
  - Failures carry RV(reason), such as V(in_use), V(invalid_argument) (a O(keep) entry that names no image, or an empty
    O(keep)), V(invalid_reference), V(store_locked) or V(engine_error).
  - The registry options are accepted so that one C(module_defaults) group serves every module; removal asks no registry,
    and O(timeout) is how long to wait for the store's lock.
"""

EXAMPLES = r"""
---
- name: Remove an old release
  dockyard.images.image_remove:
    name:
      - registry.example.com/team/api:2.3.0
      - registry.example.com/team/worker:2.3.0

- name: Keep only what the next release needs, never what is running
  dockyard.images.image_remove:
    keep: "{{ release_images }}"
    store: docker
  register: cleanup

- name: Say what that freed
  ansible.builtin.debug:
    msg: "{{ cleanup.bytes_freed }} bytes freed; kept in use: {{ cleanup.kept_in_use | map(attribute='image') }}"

- name: Keep an image pinned by digest, as it was pulled, and the image whose id starts so
  dockyard.images.image_remove:
    keep:
      - registry.example.com/team/api@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31
      - sha256:5f0f0f2a9c6b

- name: Remove every image no container uses, on purpose
  dockyard.images.image_remove:
    keep: []
    keep_missing: ignore
"""

RETURN = r"""
untagged:
  description: The references removed (or ids, for untagged images).
  returned: always
  type: list
  elements: str
deleted_images:
  description: Ids of the images deleted, because their last tag went.
  returned: always
  type: list
  elements: str
deleted_layers:
  description: Layers deleted from disk, with C(digest) (a ChainID on engines) and C(size).
  returned: always
  type: list
  elements: dict
kept_layers:
  description: Layers of removed images kept because remaining images use them, with those C(images).
  returned: always
  type: list
  elements: dict
kept_in_use:
  description: With O(keep), images not kept but left because containers use them, with the C(containers).
  returned: always
  type: list
  elements: dict
bytes_freed:
  description:
    - Bytes deleted from disk (compressed blobs in the OCI store, layer sizes on an engine). Shared layers never count.
  returned: always
  type: int
missing:
  description:
    - Names the store does not hold. With O(keep), the entries that named no image; when that fails the task, the
      failure lists them too.
  returned: always
  type: list
  elements: str
store:
  description: The store used.
  returned: always
  type: dict
containers:
  description: With reason V(in_use), the containers that block the removal, each with C(image), C(id), C(name) and C(state).
  returned: failure
  type: list
  elements: dict
reason:
  description: Why the task failed, when it did.
  returned: failure
  type: str
"""

import gc

gc.disable()  # a module process collects no garbage while it loads: see run_and_exit

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dockyard.images.plugins.module_utils._args import (
    DockyardModule,
    merged_spec,
    registry_argument_spec,
    run_and_exit,
    store_argument_spec,
    store_from_params,
)
from ansible_collections.dockyard.images.plugins.module_utils._stores import RemovalRequest, image_label


def run(module: AnsibleModule) -> dict:
    params = module.params
    store = store_from_params(params)
    request = RemovalRequest(names=params["name"], keep=params["keep"], prune=params["prune"], force=params["force"], keep_missing=params["keep_missing"])
    plan = store.remove(request, module.check_mode)
    result = plan.to_dict()
    result["store"] = store.describe()
    result["diff"] = {  # one image a line: text, as Ansible's diff output expects
        "before": "".join(f"{name}\n" for name in sorted(image_label(record) for record in plan.targets + plan.remaining)),
        "after": "".join(f"{name}\n" for name in sorted(image_label(record) for record in plan.remaining)),
    }
    return result


def main() -> None:
    module = DockyardModule(
        argument_spec=merged_spec(
            {
                "name": {"type": "list", "elements": "str"},
                "keep": {"type": "list", "elements": "str"},
                "keep_missing": {"type": "str", "choices": ["fail", "ignore"], "default": "fail"},
                "force": {"type": "bool", "default": False},
                "prune": {"type": "bool", "default": True},
            },
            store_argument_spec,
            registry_argument_spec,
        ),
        mutually_exclusive=[("name", "keep")],
        required_one_of=[("name", "keep")],
        supports_check_mode=True,
    )
    run_and_exit(module, lambda: run(module))


if __name__ == "__main__":
    main()
