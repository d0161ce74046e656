#!/usr/bin/python
# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_copy
short_description: Copy container images from their registries into another registry
version_added: 0.1.0
description:
  - Copies one or more images, one platform each or every platform, from the registries that publish them into the
    registry at O(destination), under the same repository paths and tags, registry to registry, without any image store.
  - Only blobs the destination lacks move. A blob is fetched from its source at most once per task however many
    images share it, verified against its digest, and uploaded; a repository of the destination that needs a blob
    another one already holds gets it by a cross-repository mount instead.
  - Manifests the destination already holds are read from it rather than from the source, so a copy that has
    nothing to do costs the source one C(HEAD) request per tag, and a C(GET) of the index of each multi-platform
    image, which the destination does not hold (it holds the platform's manifest).
  - This is how the P(dockyard.images.prewarm#role) role seeds a P(dockyard.images.registry_mirror#role) mirror so that the upstream
    registry serves each blob once for a whole fleet.
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
      - Check mode resolves the images at their sources, asks the destination which manifests and blobs it holds,
        and reports which blobs would be copied or mounted; it fetches no blob and pushes nothing.
  diff_mode:
    support: full
    details:
      - The diff shows what each tag names at the destination before and after.
  idempotent:
    support: full
options:
  name:
    description:
      - Image references to copy, such as V(redis:7) or V(registry.internal:5000/team/app@sha256:...).
    type: list
    elements: str
    required: true
  destination:
    description:
      - The registry to copy into, as V(http://host:port), V(https://host:port) or V(host:port). A bare V(host:port) means
        https, or plain HTTP when the host is on loopback or in O(insecure_registries) and does not speak TLS.
      - Credentials for it come from O(registry_auth) or O(docker_config) under its C(host:port).
      - A pull-through cache does not accept pushes; copy into its seed endpoint
        (O(dockyard.images.registry_mirror#role:main:registry_mirror_seed_listen)).
    type: str
    required: true
  platform:
    description:
      - The platform to copy out of a multi-platform image, as C(os/arch[/variant]), or V(all). Defaults to the host's platform.
      - With a platform, only that platform's manifest is copied, and the tag at the destination names it, as C(skopeo copy)
        does without C(--all).
      - With V(all), the index and every manifest it lists (attestations too) are copied as they are, so the tag at the
        destination names the same digest as at the source and pulls by that digest work there, as with
        C(skopeo copy --all) or C(crane copy). Every platform's blobs are copied, and Docker Hub counts a pull for each
        platform's manifest fetched.
    type: str
  concurrency:
    description: How many blobs to transfer at the same time, across all images (1 to 64).
    type: int
    default: 3
seealso:
  - module: dockyard.images.image_pull
notes:
  - The store options are accepted so that one C(module_defaults) group serves every module; copying uses no store.
  - O(mirrors) apply to the sources, so leave them out to copy straight from the upstream registries.
  - Each blob passes through an anonymous temporary file on the host running the module (in C(TMPDIR)) while it is
    verified and uploaded, so that only verified bytes reach the destination; up to O(concurrency) at a time.
  - Failures carry RV(reason), one of V(invalid_reference), V(invalid_argument), V(not_found), V(unauthorized),
    V(denied), V(rate_limited), V(unreachable), V(tls), V(digest_mismatch), V(platform_not_found), V(unsupported_media_type).
"""

EXAMPLES = r"""
---
- name: Seed the mirror's cache with the next release, fetching each layer from Docker Hub once
  dockyard.images.image_copy:
    name: [redis:7, nginx:1.27]
    destination: https://mirror.internal:5001
    registry_auth:
      - registry: mirror.internal:5001
        username: seeder
        password: "{{ vault_seed_password }}"

- name: Copy the arm64 build into an air-gapped registry
  dockyard.images.image_copy:
    name: ghcr.io/example/app:2.4.1
    platform: linux/arm64
    destination: registry.airgap.internal:5000

- name: Mirror every platform, so that pins to the upstream digest resolve in the air-gapped registry
  dockyard.images.image_copy:
    name: ghcr.io/example/app:2.4.1
    platform: all
    destination: registry.airgap.internal:5000
"""

RETURN = r"""
images:
  description: One entry per requested reference, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    reference:
      description: The reference as requested.
      type: str
      sample: redis:7
    canonical:
      description: The fully qualified source reference.
      type: str
      sample: docker.io/library/redis:7
    destination:
      description: The repository it was copied into.
      type: str
      sample: mirror.internal:5001/library/redis
    digest:
      description: What the source calls the image (the index digest for multi-platform images).
      type: str
    manifest_digest:
      description:
        - The digest of the platform's image manifest, which the destination now holds.
        - With O(platform=all), the image's own digest for a single-platform image, and null for a multi-platform one.
      type: str
    platform:
      description: The platform copied out of a multi-platform image; null for a single-platform one, and with O(platform=all).
      type: str
      sample: linux/amd64
    platforms:
      description: With O(platform=all) and a multi-platform image, the platforms of the manifests its index lists, attestations left out; otherwise null.
      type: list
      elements: str
      sample: [linux/amd64, linux/arm64]
    blobs:
      description:
        - The config and each layer with its C(digest), C(size) and C(status), V(copied) (fetched from the source
          and uploaded), V(mounted) (linked from another repository of the destination) or V(exists).
      type: list
      elements: dict
    copied_bytes:
      description: Bytes fetched from the source and uploaded for this image.
      type: int
    reused_bytes:
      description: Bytes the destination already held or mounted.
      type: int
    changed:
      description: Whether the destination changed for this reference.
      type: bool
    reason:
      description: Why this image failed, when it did.
      type: str
      returned: on failure of this image
copied_bytes:
  description: Bytes fetched and uploaded, over all images; a blob shared by several images counts once.
  returned: always
  type: int
rate_limit:
  description: The last rate-limit figures a source registry sent (Docker Hub sends them), or null.
  returned: always
  type: dict
reason:
  description: Why the task failed, when it did.
  returned: failure
  type: str
  sample: denied
"""

import gc

gc.disable()  # a module process collects no garbage while it loads: see run_and_exit

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dockyard.images.plugins.module_utils._args import (
    DockyardModule,
    fail_on_errors,
    merged_spec,
    registry_argument_spec,
    registry_client,
    run_and_exit,
    store_argument_spec,
    transfer_settings,
)
from ansible_collections.dockyard.images.plugins.module_utils._copy import COPIED, Copier, CopyRequest, copy_connections
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference


def run(module: AnsibleModule) -> dict:
    params = module.params
    every_platform = (params["platform"] or "").lower() == "all"
    concurrency, platform = transfer_settings({**params, "platform": None} if every_platform else params)
    requests = [CopyRequest(parse_reference(text), None if every_platform else platform) for text in params["name"]]
    client = registry_client(params, pool_size=copy_connections(concurrency, len(requests)) + 2)
    destination = client.destination(params["destination"])
    results = Copier(client, destination, concurrency, module.check_mode).copy(requests)
    for warning in client.warnings:
        module.warn(warning)
    tagged = {f"{r.request.reference.path}:{r.request.reference.tag}": r for r in results if r.request.reference.tag}
    copied = {blob.digest: blob.size for result in results for blob in result.blobs if blob.status == COPIED}
    outcome = {
        "changed": any(result.changed for result in results),
        "images": [result.to_dict(text, destination.name) for result, text in zip(results, params["name"])],
        "copied_bytes": sum(copied.values()),
        "rate_limit": client.rate_limit(),
        "diff": {
            "before": {f"{destination.name}/{tag}": result.tag_before for tag, result in tagged.items()},
            "after": {f"{destination.name}/{tag}": result.tag_after for tag, result in tagged.items()},
        },
    }
    return fail_on_errors(module, outcome, [result.error for result in results if result.error is not None])


def main() -> None:
    module = DockyardModule(
        argument_spec=merged_spec(
            {
                "name": {"type": "list", "elements": "str", "required": True},
                "destination": {"type": "str", "required": True},
                "platform": {"type": "str"},
                "concurrency": {"type": "int", "default": 3},
            },
            store_argument_spec,
            registry_argument_spec,
        ),
        supports_check_mode=True,
    )
    run_and_exit(module, lambda: run(module))


if __name__ == "__main__":
    main()
