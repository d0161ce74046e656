# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: group_by_platform
short_description: Group a list of images by the platform to pull them for
version_added: 0.1.0
description:
  - Takes images given as references, or as dicts with C(name) and an optional C(platform), and returns one group per
    platform, in first-seen order, each with the C(names) to pull for it; references without a platform get O(platform).
  - The role P(dockyard.images.prewarm#role) uses it to pull every image of a host with one M(dockyard.images.image_pull) task per platform.
positional: _input, platform
options:
  _input:
    description: The images.
    type: list
    elements: raw
    required: true
  platform:
    description: The platform for images that name none; empty means the host's own.
    type: str
    default: ""
author:
  - Dockyard Images Maintainers (@dockyard)
"""

EXAMPLES = r"""
---
- name: Show the groups
  ansible.builtin.debug:
    msg: "{{ ['redis:7', {'name': 'alpine:3.20', 'platform': 'linux/arm64'}] | dockyard.images.group_by_platform }}"
  # [{"platform": "", "names": ["redis:7"]}, {"platform": "linux/arm64", "names": ["alpine:3.20"]}]
"""

RETURN = r"""
_value:
  description: One C(platform) and its C(names) per group.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError


def group_by_platform(images, platform=""):
    if not isinstance(images, list):
        raise AnsibleFilterError("group_by_platform expects a list of references or of dicts with name and platform")
    groups = {}
    for image in images:
        if isinstance(image, str):
            name, wanted = image, platform
        elif isinstance(image, dict) and isinstance(image.get("name"), str):
            name, wanted = image["name"], image.get("platform") or platform
        else:
            raise AnsibleFilterError(f"group_by_platform: {image!r} is neither a reference nor a dict with a name")
        groups.setdefault(wanted or "", []).append(name)
    return [{"platform": key, "names": names} for key, names in groups.items()]


class FilterModule:
    def filters(self):
        return {"group_by_platform": group_by_platform}
