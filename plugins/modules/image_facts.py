#!/usr/bin/python
# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_facts
short_description: Tell which images a host holds, layer by layer, and how much they share
version_added: 0.1.0
description:
  - Lists the images in the host's store (all, or those in O(name)) with their layers and sizes, and a
    sharing summary like C(docker system df -v) with total, unique and shared bytes, and which layers
    are shared by which images.
  - Sets C(ansible_facts.dockyard_images) so that plays can aggregate across hosts.
  - With O(remote=true), inspects the references in their registry instead, without pulling anything.
author:
  - Dockyard Images Maintainers (@dockyard)
extends_documentation_fragment:
  - dockyard.images.store
  - dockyard.images.registry
  - dockyard.images.attributes
  - dockyard.images.attributes.actiongroup_images
  - dockyard.images.attributes.facts
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
  facts:
    support: full
options:
  name:
    description:
      - References (or image ids) to report. All images in the store when omitted.
      - Required with O(remote=true).
    type: list
    elements: str
  remote:
    description:
      - Inspect O(name) in the registry (digest, platforms available, config, layers and sizes, created)
        instead of the local store. Only manifests and configs are read; no layer is downloaded.
    type: bool
    default: false
  platform:
    description:
      - With O(remote=true), the platform whose manifest to inspect, as C(os/arch[/variant]); defaults to the host's.
      - In the store (O(remote=false)), only images for this platform are reported, and a name the store holds
        only for other platforms is in RV(missing); images for every platform when omitted.
    type: str
  digests_only:
    description:
      - With O(remote=true), only resolve each reference to the digest its tag points at now, with one HEAD request
        each. No manifest is fetched, so Docker Hub counts nothing against its pull rate limit.
      - Each entry of RV(images) then has only C(reference), C(canonical) and C(digest).
    type: bool
    default: false
seealso:
  - module: dockyard.images.image_pull
"""

EXAMPLES = r"""
---
- name: What does this host hold?
  dockyard.images.image_facts:

- name: Show the images and how much they share
  ansible.builtin.debug:
    msg: "{{ ansible_facts.dockyard_images.summary }}"

- name: Is there a newer redis:7 than the one we hold?
  dockyard.images.image_facts:
    name: redis:7
    remote: true
  register: upstream
"""

RETURN = r"""
images:
  description: The images, one entry per tag (and platform).
  returned: always
  type: list
  elements: dict
  contains:
    reference:
      description: Familiar form of the reference, such as C(redis:7).
      type: str
    canonical:
      description: Fully qualified reference.
      type: str
    repository:
      description: Repository in familiar form.
      type: str
    tag:
      description: The tag.
      type: str
    id:
      description: Image id, the digest of its config.
      type: str
    digest:
      description: The registry's digest of the image (index digest for multi-platform images).
      type: str
    manifest_digest:
      description: The registry's digest of the platform manifest.
      type: str
    repo_digests:
      description: C(repository@digest) forms.
      type: list
      elements: str
    platform:
      description: C(os/arch[/variant]).
      type: str
    platforms:
      description: With O(remote=true), every platform the registry offers for the reference.
      type: list
      elements: str
      returned: when O(remote=true)
    created:
      description: Creation time from the image config.
      type: str
    size:
      description: Bytes of the config and the compressed layers; on an engine, the uncompressed size it reports.
      type: int
    shared_size:
      description: Bytes of this image's layers that other images in the store also use.
      type: int
      returned: when O(remote=false)
    unique_size:
      description: Bytes only this image uses.
      type: int
      returned: when O(remote=false)
    layers:
      description:
        - Layers in order, each with C(digest), C(size) and C(media_type).
        - On an engine the digests are DiffIDs, the sizes uncompressed, and each layer has its C(chain_id),
          which is what the engine shares between images.
      type: list
      elements: dict
    containers:
      description:
        - Containers using the image, running or stopped, each with C(id), C(name) and C(state).
        - Always empty in the OCI store, which runs no containers.
      type: list
      elements: dict
missing:
  description:
    - The names asked for that a pull of them with O(dockyard.images.image_pull#module:policy=missing) would bring,
      by the pull's own rule, for O(platform) (the host's when not given) - names the store does not hold, holds
      only in part (some blobs gone), or holds under another digest than the name pins.
    - Found without asking any registry.
  returned: always
  type: list
  elements: str
host_platform:
  description: The managed host's platform, which pulls and copies choose when given none.
  returned: always
  type: str
  sample: linux/amd64
summary:
  description:
    - Sharing over the images reported, as C(docker system df -v) counts it.
    - C(total_size) sums the images' sizes, C(unique_size) counts every blob once, C(saved_size) is the
      difference, C(shared_size) the bytes of layers used by more than one image.
  returned: when O(remote=false)
  type: dict
  sample:
    images: 2
    tags: 2
    layers: 3
    total_size: 6291456
    unique_size: 4194304
    shared_size: 2097152
    saved_size: 2097152
    shared_layers: [{digest: "sha256:...", size: 2097152, images: [app:1, worker:1]}]
store:
  description: The store read.
  returned: when O(remote=false)
  type: dict
ansible_facts:
  description: Facts for later plays.
  returned: when O(remote=false)
  type: dict
  contains:
    dockyard_images:
      description: The store, C(images) and C(summary) as above.
      type: dict
"""

import gc

gc.disable()  # a module process collects no garbage while it loads: see run_and_exit

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dockyard.images.plugins.module_utils._args import (
    DockyardModule,
    merged_spec,
    registry_argument_spec,
    registry_client,
    run_and_exit,
    store_argument_spec,
    store_from_params,
)
from ansible_collections.dockyard.images.plugins.module_utils._facts import remote_facts, store_facts
from ansible_collections.dockyard.images.plugins.module_utils._platform import host_platform, parse_platform


def run(params: dict) -> dict:
    platform = parse_platform(params["platform"]) if params["platform"] else None
    here = str(host_platform())
    if params["remote"]:
        client = registry_client(params)
        images = remote_facts(client, params["name"], platform or host_platform(), params["digests_only"])
        return {"changed": False, "images": images, "missing": [], "host_platform": here, "rate_limit": client.rate_limit()}
    facts, missing = store_facts(store_from_params(params), params["name"], platform)
    return dict(facts, missing=missing, host_platform=here, changed=False, ansible_facts={"dockyard_images": facts})


def main() -> None:
    module: AnsibleModule = DockyardModule(
        argument_spec=merged_spec(
            {
                "name": {"type": "list", "elements": "str"},
                "remote": {"type": "bool", "default": False},
                "platform": {"type": "str"},
                "digests_only": {"type": "bool", "default": False},
            },
            store_argument_spec,
            registry_argument_spec,
        ),
        supports_check_mode=True,
    )
    run_and_exit(module, lambda: run(module.params))


if __name__ == "__main__":
    main()
