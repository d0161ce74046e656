#!/usr/bin/python
# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_deliver
short_description: Deliver images from the controller to hosts that reach no registry, sending only the layers each lacks
version_added: 0.1.0
description:
  - For air-gapped hosts. The controller holds the images in an OCI store (filled by M(dockyard.images.image_pull)
    with O(source_path) as its C(store_path) where a registry is reachable, or by M(dockyard.images.image_load) from
    archives). For each host, one run of M(dockyard.images.image_receive) says which blobs of those images its store
    already holds; only the others are sent, over the task's own connection (its file transfer, such as SSH, docker or
    local), into a staging directory under the connection user's C(~/.cache/dockyard/deliver/); a second run loads
    them into the host's store, verifying every blob before the store takes it, and removes the staging directory.
  - A second delivery of the same images sends nothing. A delivery cut short (a lost connection) resumes without
    sending again the blobs that arrived whole.
  - With O(store=docker) or O(store=podman) on the host, an image the engine already holds is not sent, and of an
    image it lacks, only the layers it does not hold. Docker knows a layer by its ChainID (the layer and all below
    it); Podman by its DiffID, wherever it lies in the image.
  - This is an action plugin; the controller needs nothing but the collection, the host what the store needs (Python,
    C(requests) for an engine).
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
      - Check mode asks the host what it holds and says what would be sent, in bytes; it sends and loads nothing.
  diff_mode:
    support: partial
    details:
      - A delivery that loads images shows each name's digest in the host's store before and after; check mode and a
        delivery with nothing to send show none.
  idempotent:
    support: full
options:
  name:
    description:
      - The images to deliver, as the controller's store holds them (a tag, V(repository@sha256:...) or an image id).
      - A name the controller's store does not hold fails the task with reason V(not_found) before anything is sent.
    type: list
    elements: str
    required: true
  source_path:
    description:
      - The controller's OCI store.
      - Defaults to C(/var/lib/dockyard/oci) when Ansible runs as root on the controller, otherwise
        C(~/.local/share/dockyard/oci).
    type: path
  platform:
    description:
      - The platform to deliver, as C(os/arch[/variant]); defaults to each host's own.
      - The controller's store must hold the images for that platform (or one that runs on it).
    type: str
  concurrency:
    description: How many blobs the host copies into its store at the same time (1 to 64).
    type: int
    default: 3
seealso:
  - module: dockyard.images.image_receive
  - module: dockyard.images.image_pull
  - module: dockyard.images.image_load
notes:
  - The staging directory belongs to the connection's user; with C(become), become C(root) (or no one), so that the
    module reads what that user wrote.
"""

EXAMPLES = r"""
---
- name: Fill the controller's store where a registry is reachable
  dockyard.images.image_pull:
    name: [registry.example.com/team/app:2.4.1, registry.example.com/team/worker:2.4.1]
    store_path: /srv/dockyard/oci
  delegate_to: localhost
  run_once: true

- name: Send each air-gapped host only the layers it lacks
  dockyard.images.image_deliver:
    name: [registry.example.com/team/app:2.4.1, registry.example.com/team/worker:2.4.1]
    source_path: /srv/dockyard/oci
    store: docker
"""

RETURN = r"""
images:
  description: One entry per name delivered, as M(dockyard.images.image_load) returns them.
  returned: success
  type: list
  elements: dict
sent_bytes:
  description: The bytes sent over the connection.
  returned: success
  type: int
sent_blobs:
  description: How many blobs were sent.
  returned: success
  type: int
resumed_bytes:
  description: The bytes an earlier delivery, cut short, had sent already.
  returned: success
  type: int
held_bytes:
  description: The layer bytes not sent because the host's store held them.
  returned: success
  type: int
platform:
  description: The platform delivered.
  returned: success
  type: str
staging:
  description: The staging directory on the host; it is gone once the images are loaded, and stays only when a delivery is cut short.
  returned: success
  type: str
store:
  description: The host's store.
  returned: success
  type: dict
reason:
  description: Why the task failed, when it did.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dockyard.images.plugins.module_utils._args import merged_spec, store_argument_spec
from ansible_collections.dockyard.images.plugins.module_utils._deliver import DELIVER_OPTIONS


def main() -> None:
    module = AnsibleModule(argument_spec=merged_spec(DELIVER_OPTIONS, store_argument_spec), supports_check_mode=True)
    module.fail_json(msg="image_deliver runs on the controller, as an action plugin; call it as dockyard.images.image_deliver", reason="invalid_argument")


if __name__ == "__main__":
    main()
