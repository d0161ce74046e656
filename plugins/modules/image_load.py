#!/usr/bin/python
# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_load
short_description: Load images from an oci-archive or docker-archive file into the host's store
version_added: 0.1.0
description:
  - Reads an image archive on the host and loads every image it holds, under every name it gives them, into the host's
    image store. Archives written by C(docker save) (before and after Docker 25), C(podman save), C(skopeo copy ...
    docker-archive:/oci-archive:) and M(dockyard.images.image_export) are read, with compressed layers or not, and
    a tar that is itself compressed with gzip.
  - The archive is read where it lies, never unpacked on disk. Every blob is verified against its digest before the
    store takes it, and a layer of C(docker save)'s older shape against the DiffID the image's config names.
  - With the OCI store and containerd, only the blobs the store lacks are copied, and an image is tagged only once all
    its blobs are in. With Docker Engine or Podman the engine loads the images (C(POST /images/load)); images it holds
    already are not sent.
  - An archive that cannot be read fails with reason V(invalid_archive) before the store is touched. An image whose
    bytes are corrupt fails with V(digest_mismatch) and is not tagged; the other images of the archive are loaded.
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
      - Check mode reads the archive's catalog and the store, and reports which layers would be loaded and how many
        bytes; it copies nothing.
  diff_mode:
    support: full
    details:
      - The diff shows each name's digest in the store before and after.
  idempotent:
    support: full
options:
  path:
    description: The archive on the host.
    type: path
    required: true
  platform:
    description:
      - The platform to load from an archive that holds several, as C(os/arch[/variant]).
      - Defaults to the host's platform; an archive of images for one other platform only is loaded as it is, unless
        this is set.
    type: str
  repository:
    description:
      - The repository, such as V(registry.example.com/team/app), to name images the archive names by a bare tag only
        (as C(skopeo copy ... oci-archive:FILE:TAG) writes them); each keeps its tag.
      - Without it such an archive fails with reason V(invalid_argument).
    type: str
  concurrency:
    description: How many blobs to copy at the same time (1 to 64).
    type: int
    default: 3
seealso:
  - module: dockyard.images.image_export
notes:
  - Failures carry RV(reason), one of V(invalid_archive), V(invalid_argument), V(not_found), V(digest_mismatch),
    V(platform_not_found), V(store_locked), V(store_corrupt), V(unsupported_media_type), V(disk_full),
    V(unreachable), V(engine_error).
"""

EXAMPLES = r"""
---
- name: Load the images a release ships as an archive
  dockyard.images.image_load:
    path: /srv/releases/2.4.1/images.tar

- name: Load an archive of skopeo's oci-archive:FILE:TAG into Docker Engine, under a repository
  dockyard.images.image_load:
    path: /srv/releases/app-oci.tar
    repository: registry.example.com/team/app
    store: docker
"""

RETURN = r"""
archive:
  description: The archive read, with its C(path) and C(format) (V(oci-archive) or V(docker-archive)).
  returned: always
  type: dict
  sample: {path: /srv/releases/2.4.1/images.tar, format: docker-archive}
images:
  description: One entry per name the archive gives an image.
  returned: always
  type: list
  elements: dict
  contains:
    reference:
      description: The name, as the archive gives it.
      type: str
      sample: registry.example.com/team/app:2.4.1
    canonical:
      description: The fully qualified name.
      type: str
    digest:
      description: The digest the archive gives the image (its manifest's, or its index's).
      type: str
    id:
      description: The image id (digest of its config).
      type: str
    platform:
      description: The platform loaded, C(os/arch[/variant]).
      type: str
    layers:
      description:
        - Each layer with its C(digest), C(id), C(size) and C(status), V(loaded) or V(already_exists), or V(missing)
          for a layer of an image that failed.
      type: list
      elements: dict
    loaded_bytes:
      description: Layer bytes this image brought into the store.
      type: int
    reused_bytes:
      description: Layer bytes the store already held or that another image of the archive brought.
      type: int
    changed:
      description: Whether the store changed for this name.
      type: bool
    reason:
      description: Why this image failed, when it did.
      type: str
      returned: on failure of this image
loaded_bytes:
  description: Layer bytes loaded, over all images.
  returned: always
  type: int
reused_bytes:
  description: Layer bytes reused, over all images.
  returned: always
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

from ansible_collections.dockyard.images.plugins.module_utils._archive import load_archive, load_result
from ansible_collections.dockyard.images.plugins.module_utils._args import (
    DockyardModule,
    fail_on_errors,
    merged_spec,
    run_and_exit,
    store_argument_spec,
    store_from_params,
    transfer_settings,
)


def run(module: AnsibleModule) -> dict:
    params = module.params
    concurrency, platform = transfer_settings(params)
    store = store_from_params(params, pool_size=concurrency + 2)
    archive_format, results = load_archive(store, params["path"], platform, bool(params["platform"]), params["repository"], concurrency, module.check_mode)
    outcome = load_result(results)
    outcome.update(archive={"path": params["path"], "format": archive_format}, store=store.describe())
    return fail_on_errors(module, outcome, [result.error for result in results if result.error is not None])


def main() -> None:
    module = DockyardModule(
        argument_spec=merged_spec(
            {
                "path": {"type": "path", "required": True},
                "platform": {"type": "str"},
                "repository": {"type": "str"},
                "concurrency": {"type": "int", "default": 3},
            },
            store_argument_spec,
        ),
        supports_check_mode=True,
    )
    run_and_exit(module, lambda: run(module))


if __name__ == "__main__":
    main()
