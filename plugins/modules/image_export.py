#!/usr/bin/python
# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_export
short_description: Write images from the host's store into an oci-archive or docker-archive file
version_added: 0.1.0
description:
  - Writes the images O(name) names, from any store, into one tar archive on the host. Layers the images share are
    written once.
  - V(docker-archive) is what C(docker save) writes since Docker 25 (an OCI image layout with C(manifest.json) and
    C(repositories) beside it); C(docker load), C(podman load), C(skopeo copy docker-archive:...) and
    C(skopeo copy oci-archive:...) all read it. V(oci-archive) is the OCI image layout alone, for C(skopeo),
    C(podman load), C(ctr images import) and M(dockyard.images.image_load).
  - The archive is written beside O(path) and moved there only when complete, so O(path) never holds half an archive.
    Every blob is checked against its digest as it is written.
  - An archive that already holds exactly these images in this format is not written again (V(changed=false)), since
    the same images always make the same bytes, in whatever order O(name) lists them.
author:
  - Dockyard Images Maintainers (@dockyard)
extends_documentation_fragment:
  - dockyard.images.store
  - dockyard.images.attributes
  - dockyard.images.attributes.actiongroup_images
attributes:
  check_mode:
    support: full
    details:
      - Check mode reads the store and the archive at O(path), and says whether it would be written and how many bytes
        it would hold; it writes nothing.
  diff_mode:
    support: full
    details:
      - The diff lists the names of the images in the archive before and after.
  idempotent:
    support: full
options:
  name:
    description:
      - The images to write, in any form M(dockyard.images.image_remove) accepts (a tag, V(repository@sha256:...), an
        image id or a prefix of one). Each image goes in under the names given for it.
      - A name the store does not hold fails the task with reason V(not_found), naming it, before anything is written.
    type: list
    elements: str
    required: true
  path:
    description: The archive to write on the host. Its directory must exist.
    type: path
    required: true
  format:
    description: The archive's format.
    type: str
    choices: [docker-archive, oci-archive]
    default: docker-archive
seealso:
  - module: dockyard.images.image_load
notes:
  - Failures carry RV(reason), one of V(not_found), V(invalid_argument), V(store_corrupt), V(disk_full),
    V(unreachable), V(engine_error).
"""

EXAMPLES = r"""
---
- name: Write the images of a release into one archive for docker load
  dockyard.images.image_export:
    name:
      - registry.example.com/team/app:2.4.1
      - registry.example.com/team/worker:2.4.1
    path: /srv/releases/2.4.1/images.tar

- name: Write an image from containerd as an oci-archive
  dockyard.images.image_export:
    name: registry.example.com/team/app:2.4.1
    path: /srv/releases/app.oci.tar
    format: oci-archive
    store: containerd
"""

RETURN = r"""
path:
  description: The archive.
  returned: always
  type: str
format:
  description: Its format.
  returned: always
  type: str
  sample: docker-archive
bytes:
  description: The bytes of the blobs (manifests, configs, layers) the archive holds, each counted once.
  returned: always
  type: int
images:
  description: The images the archive holds.
  returned: always
  type: list
  elements: dict
  contains:
    names:
      description: The names it carries.
      type: list
      elements: str
    id:
      description: The image id (digest of its config).
      type: str
    digest:
      description: The digest of its manifest in the archive.
      type: str
    platform:
      description: Its platform, C(os/arch[/variant]).
      type: str
    size:
      description: Sum of its layer sizes, in bytes.
      type: int
    layers:
      description: How many layers it has.
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

from ansible_collections.dockyard.images.plugins.module_utils._archive import export_archive
from ansible_collections.dockyard.images.plugins.module_utils._args import DockyardModule, merged_spec, run_and_exit, store_argument_spec, store_from_params


def run(module: AnsibleModule) -> dict:
    params = module.params
    store = store_from_params(params)
    result = export_archive(store, params["name"], params["path"], params["format"], module.check_mode)
    result["store"] = store.describe()
    return result


def main() -> None:
    module = DockyardModule(
        argument_spec=merged_spec(
            {
                "name": {"type": "list", "elements": "str", "required": True},
                "path": {"type": "path", "required": True},
                "format": {"type": "str", "choices": ["docker-archive", "oci-archive"], "default": "docker-archive"},
            },
            store_argument_spec,
        ),
        supports_check_mode=True,
    )
    run_and_exit(module, lambda: run(module))


if __name__ == "__main__":
    main()
