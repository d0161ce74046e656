#!/usr/bin/python
# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_receive
short_description: The host's side of image_deliver - say which blobs the store holds, load what was sent
version_added: 0.1.0
description:
  - M(dockyard.images.image_deliver) runs this module on each host; playbooks use M(dockyard.images.image_deliver).
  - With O(step=inventory) it says which blobs of the images the host's store already holds, and which a delivery cut
    short left in the staging directory O(staging), with their full size (a file of another size, or anything but a
    file, is removed, to be sent again, and never followed).
  - With O(step=load) it loads the image layout staged in O(staging) (the blobs sent, and O(index)) into the store, as
    M(dockyard.images.image_load) loads an archive. Every blob is verified before the store takes it, only blobs the
    store lacks are copied, and an image is tagged only once all of it is in. The staging directory is removed
    whatever the outcome.
author:
  - Dockyard Images Maintainers (@dockyard)
extends_documentation_fragment:
  - dockyard.images.store
  - dockyard.images.attributes
attributes:
  check_mode:
    support: partial
    details:
      - With O(step=inventory), check mode removes nothing. O(step=load) needs what a real delivery staged, so
        M(dockyard.images.image_deliver) does its check mode with O(step=inventory) alone.
  diff_mode:
    support: full
    details:
      - With O(step=load), the diff shows each name's digest in the store before and after.
  idempotent:
    support: full
options:
  step:
    description: What to do.
    type: str
    choices: [inventory, load]
    required: true
  staging:
    description:
      - The staging directory, C(~/.cache/dockyard/deliver/store-) and 16 hex digits in the connection user's home, spelled
        as an absolute path with no link on the way.
    type: path
    required: true
  images:
    description:
      - With O(step=inventory), the images, each with its C(id), C(blobs) (each a C(digest) and C(size)), C(diff_ids),
        its layers' DiffIDs in order, and C(manifests) (each a C(digest) and C(size)), which may be staged too.
    type: list
    elements: dict
    default: []
  index:
    description: With O(step=load), the C(index.json) of the staged image layout.
    type: dict
  platform:
    description: With O(step=load), the platform to load, as C(os/arch[/variant]); defaults to the host's.
    type: str
  concurrency:
    description: With O(step=load), how many blobs to copy at the same time (1 to 64).
    type: int
    default: 3
seealso:
  - module: dockyard.images.image_deliver
"""

EXAMPLES = r"""
---
- name: Which blobs of an image the host's OCI store holds
  dockyard.images.image_receive:
    step: inventory
    staging: /home/deploy/.cache/dockyard/deliver/store-0123456789abcdef
    store: oci
    images:
      - id: sha256:fde7c0ee9690b6742e8db7f75d7bd5c189a6f5b8f7a4c2beb875661f418aee4c
        blobs:
          - digest: sha256:ab94ed34969b999b4912f8954ce44bdcbf4f92bd2a13d4f12058e798c3629b3a
            size: 3407872
"""

RETURN = r"""
held:
  description: With O(step=inventory), the digests of the blobs the store holds.
  returned: success
  type: list
  elements: str
staged:
  description: With O(step=inventory), the digests of the blobs staged already.
  returned: success
  type: list
  elements: str
platform:
  description: The host's platform, C(os/arch[/variant]).
  returned: success
  type: str
images:
  description: With O(step=load), one entry per name loaded, as M(dockyard.images.image_load) returns them.
  returned: success
  type: list
  elements: dict
loaded_bytes:
  description: With O(step=load), layer bytes loaded, over all images.
  returned: success
  type: int
store:
  description: The store used.
  returned: always
  type: dict
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
    fail_on_errors,
    merged_spec,
    run_and_exit,
    store_argument_spec,
    store_from_params,
    transfer_settings,
)
from ansible_collections.dockyard.images.plugins.module_utils._deliver import checked_staging, inventory, receive
from ansible_collections.dockyard.images.plugins.module_utils._platform import host_platform


def run(module: AnsibleModule) -> dict:
    params = module.params
    concurrency, platform = transfer_settings(params)
    staging = checked_staging(params["staging"])
    store = store_from_params(params, pool_size=concurrency + 2)
    if params["step"] == "inventory":
        return dict(inventory(store, params["images"], staging, module.check_mode), changed=False, platform=str(host_platform()), store=store.describe())
    from ansible_collections.dockyard.images.plugins.module_utils._archive import load_result

    _format, results = receive(store, staging, params["index"] or {}, platform, bool(params["platform"]), concurrency, module.check_mode)
    outcome = dict(load_result(results), store=store.describe())
    return fail_on_errors(module, outcome, [result.error for result in results if result.error is not None])


def main() -> None:
    module = DockyardModule(
        argument_spec=merged_spec(
            {
                "step": {"type": "str", "choices": ["inventory", "load"], "required": True},
                "staging": {"type": "path", "required": True},
                "images": {"type": "list", "elements": "dict", "default": []},
                "index": {"type": "dict"},
                "platform": {"type": "str"},
                "concurrency": {"type": "int", "default": 3},
            },
            store_argument_spec,
        ),
        required_if=[("step", "load", ("index",))],
        supports_check_mode=True,
    )
    run_and_exit(module, lambda: run(module))


if __name__ == "__main__":
    main()
