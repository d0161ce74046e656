#!/usr/bin/python
# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_search
short_description: Find images in Docker Hub or any registry, with their tags
version_added: 0.1.0
description:
  - Searches a registry for repositories matching O(term), as C(docker search) does.
  - Docker Hub (and any registry that answers C(/v1/search)) is searched with its search endpoint; other registries
    through their catalog (C(/v2/_catalog), every page), matching the term anywhere in the repository name.
  - Optionally lists each result's tags (C(/v2/<name>/tags/list), every page), filtered by a regular expression.
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
      - The module only reads, so it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  term:
    description: What to look for; on Docker Hub a leading C(library/) is ignored.
    type: str
    required: true
  registry:
    description: The registry to search, as C(host[:port]); V(docker.io) is Docker Hub.
    type: str
    default: docker.io
  limit:
    description: The most results to return, from 1 to 100.
    type: int
    default: 25
  filters:
    description: Keep only results that match, as C(docker search --filter) does.
    type: dict
    suboptions:
      is_official:
        description: Only official images (V(true)) or only others (V(false)).
        type: bool
      is_automated:
        description: Only automated builds. Docker Hub no longer marks any, so V(true) finds nothing there.
        type: bool
      stars:
        description: At least this many stars.
        type: int
  list_tags:
    description: Also list each result's tags.
    type: bool
    default: false
  tag_pattern:
    description: With O(list_tags=true), keep only tags this regular expression matches (anywhere in the tag).
    type: str
seealso:
  - module: dockyard.images.image_facts
notes:
  - The store options are accepted so that one C(module_defaults) group serves every module; searching uses no store.
"""

EXAMPLES = r"""
---
- name: Find official redis images on Docker Hub
  dockyard.images.image_search:
    term: redis
    filters:
      is_official: true

- name: Which 2.x releases of our api does the private registry hold?
  dockyard.images.image_search:
    term: api
    registry: registry.example.com
    list_tags: true
    tag_pattern: '^2\.'
    registry_auth:
      - registry: registry.example.com
        username: ci
        password: "{{ vault_registry_password }}"
"""

RETURN = r"""
results:
  description: The repositories found, best match first as the registry orders them.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Repository name within the registry, such as C(redis) or C(bitnami/redis).
      type: str
    description:
      description: Description (Docker Hub only).
      type: str
    star_count:
      description: Stars (Docker Hub only).
      type: int
    is_official:
      description: Whether it is an official image.
      type: bool
    is_automated:
      description: Whether it is an automated build.
      type: bool
    tags:
      description: Tags, sorted, when O(list_tags=true).
      type: list
      elements: str
      returned: when O(list_tags=true)
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
    registry_client,
    run_and_exit,
    store_argument_spec,
)
from ansible_collections.dockyard.images.plugins.module_utils._search import SearchRequest, search


def run(params: dict) -> dict:
    request = SearchRequest(params["term"], params["limit"], params["filters"] or {}, params["list_tags"], params["tag_pattern"])
    registry = registry_client(params).registry(params["registry"])
    return {"changed": False, "results": [result.to_dict() for result in search(registry, request)]}


def main() -> None:
    module: AnsibleModule = DockyardModule(
        argument_spec=merged_spec(
            {
                "term": {"type": "str", "required": True},
                "registry": {"type": "str", "default": "docker.io"},
                "limit": {"type": "int", "default": 25},
                "filters": {
                    "type": "dict",
                    "options": {"is_official": {"type": "bool"}, "is_automated": {"type": "bool"}, "stars": {"type": "int"}},
                },
                "list_tags": {"type": "bool", "default": False},
                "tag_pattern": {"type": "str"},
            },
            store_argument_spec,
            registry_argument_spec,
        ),
        supports_check_mode=True,
    )
    run_and_exit(module, lambda: run(module.params))


if __name__ == "__main__":
    main()
