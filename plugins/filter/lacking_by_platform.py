# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: lacking_by_platform
short_description: Gather what a fleet lacks, one group per platform
version_added: 0.1.0
description:
  - Takes the results that M(dockyard.images.image_facts) registered on every host of a fleet, in a loop over groups
    made by P(dockyard.images.group_by_platform#filter), and returns one group per platform the fleet pulls, in
    first-seen order, each with the C(names) some host of that platform lacks, each name once. Platforms are
    normalised, so V(arm64), V(linux/arm64) and V(linux/arm64/v8) are one group.
  - A group that names no platform is pulled for the host's own, so its names count for that host's RV(dockyard.images.image_facts#module:host_platform).
  - The role P(dockyard.images.prewarm#role) uses it to seed a mirror, from one host, with every platform the whole
    fleet is about to pull.
positional: _input, only_missing
options:
  _input:
    description: The registered loop results of every host, flattened; each has C(item) (C(platform) and C(names)), C(missing) and C(host_platform).
    type: list
    elements: dict
    required: true
  only_missing:
    description: Count only the names a host lacks (V(true)), or every name each host pulls (V(false)).
    type: bool
    default: true
author:
  - Dockyard Images Maintainers (@dockyard)
"""

EXAMPLES = r"""
---
- name: What the fleet lacks
  ansible.builtin.debug:
    msg: "{{ ansible_play_hosts | map('extract', hostvars, ['held', 'results']) | flatten | dockyard.images.lacking_by_platform }}"
  # [{"platform": "linux/amd64", "names": ["redis:7"]}, {"platform": "linux/arm64", "names": ["redis:7", "nginx:1"]}]
"""

RETURN = r"""
_value:
  description: One C(platform) and its C(names) per group.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import parse_platform


def lacking_by_platform(results, only_missing=True):
    if not isinstance(results, list):
        raise AnsibleFilterError("lacking_by_platform expects the list of results image_facts registered in a loop")
    groups = {}
    for result in results:
        try:
            group = result["item"]
            platform = group.get("platform") or result["host_platform"]
            names = result["missing"] if only_missing else group["names"]
        except (KeyError, TypeError, AttributeError):
            raise AnsibleFilterError(f"lacking_by_platform: {result!r:.200} is not a result of image_facts in a loop over platform groups") from None
        try:
            platform = str(parse_platform(platform))  # amd64, linux/amd64 and linux/x86_64 are one platform
        except DockyardError as exc:
            raise AnsibleFilterError(exc.message) from None
        groups.setdefault(platform, {}).update(dict.fromkeys(names))  # a dict keeps each name once, in first-seen order
    return [{"platform": platform, "names": list(names)} for platform, names in groups.items() if names]


class FilterModule:
    def filters(self):
        return {"lacking_by_platform": lacking_by_platform}
