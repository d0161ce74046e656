#!/usr/bin/python
# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_pull
short_description: Pull container images onto a host, layer by layer, idempotently
version_added: 0.1.0
description:
  - Pulls one or more images from registries into the host's image store.
  - Only blobs the store lacks are downloaded; a layer that several images need is fetched once.
    Layers of all images download concurrently from one pool, interrupted downloads resume.
  - Every byte is verified against its digest before it is stored; the store is never left half-written.
  - With O(store=docker) or O(store=podman) the engine pulls (C(POST /images/create)), with credentials from
    O(registry_auth) or O(docker_config) passed as C(X-Registry-Auth); its progress stream gives each layer's status,
    and an error anywhere in the stream fails the task. Docker pulls several images at once and fetches a shared
    layer once; Podman pulls one image at a time so that it does too. O(mirrors) apply to the OCI store only;
    an engine uses its own mirror configuration.
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
      - Check mode resolves tags and reads manifests from the registry, compares them with the store
        and reports exactly which layers would be pulled and how many bytes, and fails with V(disk_full)
        when they would not fit; it downloads no layer and writes nothing.
      - On an engine, check mode predicts reuse from the ChainIDs of the layers the engine holds, as dockerd decides
        C(Already exists), and reads the manifests and config from the registry (a real run leaves that to the engine).
  diff_mode:
    support: full
    details:
      - The diff shows each reference's digest before and after.
  idempotent:
    support: full
options:
  name:
    description:
      - Image references to pull, such as V(redis:7), V(ghcr.io/org/app:1.2) or V(redis@sha256:...).
      - A name without tag or digest means V(latest); a single-component Docker Hub name means C(library/).
    type: list
    elements: str
    required: true
  platform:
    description:
      - The platform to pull, as C(os/arch[/variant]), such as V(linux/arm64).
      - Defaults to the host's platform. Aliases such as C(x86_64) or C(aarch64) are normalised, and
        compatible platforms are accepted when an exact one is missing (for example C(linux/arm/v6) on C(linux/arm/v7)).
    type: str
  policy:
    description:
      - V(missing) pulls only references the store does not hold, without contacting any registry for the others.
      - V(always) asks the registry where each tag points now (one HEAD request) and pulls only if it moved.
      - A reference pinned by digest is never resolved again.
    type: str
    choices: [missing, always]
    default: missing
  concurrency:
    description: How many blobs to download at the same time, across all images (1 to 64).
    type: int
    default: 3
seealso:
  - module: dockyard.images.image_facts
notes:
  - Failures carry RV(reason), one of V(invalid_reference), V(invalid_argument), V(not_found), V(unauthorized),
    V(denied), V(rate_limited), V(unreachable), V(tls), V(digest_mismatch), V(platform_not_found),
    V(store_locked), V(store_corrupt), V(unsupported_media_type), V(disk_full), V(engine_error).
  - With the OCI store, room on its disk is counted image by image in list order before any download; the images
    that fit are pulled, the others fail with V(disk_full).
"""

EXAMPLES = r"""
---
- name: Pre-warm the images of the next release
  dockyard.images.image_pull:
    name:
      - redis:7
      - ghcr.io/example/app:2.4.1
      - nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31

- name: Follow a moving tag, pulling only when it moved
  dockyard.images.image_pull:
    name: registry.internal:5000/team/api:stable
    policy: always
    registry_auth:
      - registry: registry.internal:5000
        username: deploy
        password: "{{ vault_registry_password }}"

- name: Pre-warm the Docker Engine where the containers will run
  dockyard.images.image_pull:
    name: [redis:7, nginx:1.27]
    store: docker

- name: Pull the arm64 variant into a store of its own
  dockyard.images.image_pull:
    name: alpine:3.20
    platform: linux/arm64
    store_path: /srv/images/arm64
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
      description: The fully qualified reference.
      type: str
      sample: docker.io/library/redis:7
    digest:
      description: What the registry calls the image (the index digest for multi-platform images).
      type: str
      sample: sha256:5b1b3f5b8e5c1c6d2a9b4d4bd41e3c9c16bb4f5e3c5b7a1e0f1c2d3e4f5a6b7c
    manifest_digest:
      description:
        - The digest of the platform's image manifest.
        - Null after a real pull on an engine, which does not report it.
      type: str
    id:
      description: The image id (digest of its config).
      type: str
    platform:
      description:
        - The platform pulled, C(os/arch[/variant]).
        - With the OCI store, null in check mode for an image published for one platform only whose config the store
          lacks, unless O(platform) is set; only its config names the platform, and a plan fetches no blob.
      type: str
      sample: linux/amd64
    platform_fallback:
      description: Whether a compatible platform was taken because the exact one is not published.
      type: bool
    size:
      description: Sum of the compressed layer sizes, in bytes.
      type: int
    layers:
      description:
        - Each layer with its C(digest), C(id) (the first 12 hex digits, as C(docker pull) prints them), C(size) and
          C(status), V(already_exists) or V(pull_complete), or V(missing) for a layer an image that failed does not have.
        - After a real pull on an engine, C(digest) is null (the engine names layers by C(id) only) and C(size) is
          what the engine reported downloading, null where it reported nothing.
        - For an image an engine already held, the layers are its DiffIDs with their uncompressed sizes.
      type: list
      elements: dict
    downloaded_bytes:
      description: Layer bytes downloaded for this image.
      type: int
    reused_bytes:
      description: Layer bytes the store already held or that another image of this task downloaded.
      type: int
    changed:
      description: Whether the store changed for this reference.
      type: bool
    reason:
      description: Why this image failed, when it did.
      type: str
      returned: on failure of this image
downloaded_bytes:
  description: Layer bytes downloaded, over all images.
  returned: always
  type: int
reused_bytes:
  description: Layer bytes reused, over all images.
  returned: always
  type: int
store:
  description:
    - The store used, with its C(type) (V(oci), V(docker) or V(podman)), and C(path) for the OCI store or
      C(docker_host), C(engine_version) and C(api_version) for an engine.
  returned: always
  type: dict
  sample: {type: oci, path: /var/lib/dockyard/oci}
rate_limit:
  description: The last rate-limit figures a registry sent (Docker Hub sends them), or null.
  returned: always
  type: dict
  sample: {limit: "100;w=21600", remaining: "76;w=21600", source: "198.51.100.7"}
reason:
  description: Why the task failed, when it did.
  returned: failure
  type: str
  sample: not_found
"""

import gc

gc.disable()  # a module process collects no garbage while it loads: see run_and_exit

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dockyard.images.plugins.module_utils._args import (
    DockyardModule,
    fail_on_errors,
    merged_spec,
    registry_argument_spec,
    run_and_exit,
    store_argument_spec,
    store_from_params,
    transfer_client,
    transfer_settings,
)
from ansible_collections.dockyard.images.plugins.module_utils._batch import resolve_workers
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import PullRequest


def run(module: AnsibleModule) -> dict:
    params = module.params
    concurrency, platform = transfer_settings(params)
    requests = [PullRequest(parse_reference(text), platform, bool(params["platform"]), params["policy"]) for text in params["name"]]
    store = store_from_params(params, pool_size=max(concurrency, resolve_workers(len(requests))) + 2)  # an engine is asked about every image at once
    client = transfer_client(params, len(requests))
    results = store.puller(client, concurrency, module.check_mode).pull(requests)
    images = [result.to_dict(text) for result, text in zip(results, params["name"])]
    for warning in client.warnings:
        module.warn(warning)
    outcome = {
        "changed": any(result.changed for result in results),
        "images": images,
        "downloaded_bytes": sum(result.downloaded_bytes for result in results),
        "reused_bytes": sum(result.reused_bytes for result in results),
        "store": store.describe(),
        "rate_limit": client.rate_limit(),
        "diff": {
            "before": {r.request.reference.canonical: r.before for r in results},
            "after": {r.request.reference.canonical: (r.digest if r.error is None else r.before) for r in results},
        },
    }
    return fail_on_errors(module, outcome, [result.error for result in results if result.error is not None])


def main() -> None:
    module = DockyardModule(
        argument_spec=merged_spec(
            {
                "name": {"type": "list", "elements": "str", "required": True},
                "platform": {"type": "str"},
                "policy": {"type": "str", "default": "missing", "choices": ["missing", "always"]},
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
