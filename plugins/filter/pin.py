# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: pin
short_description: Pin an image reference to the digest a lockfile gives for it
version_added: 0.1.0
description:
  - Returns C(reference@digest) when O(pins) has a digest for the reference (compared in canonical form, so C(redis:7)
    and C(docker.io/library/redis:7) are the same), else the reference unchanged.
  - M(dockyard.images.image_pull) keeps a tag pinned this way as the tag, with the pinned content.
positional: _input, pins
options:
  _input:
    description: The reference.
    type: str
    required: true
  pins:
    description: Canonical reference (tag form) to digest, as read from a lockfile.
    type: dict
    required: true
author:
  - Dockyard Images Maintainers (@dockyard)
"""

EXAMPLES = r"""
---
- name: Pin
  ansible.builtin.debug:
    msg: "{{ 'redis:7' | dockyard.images.pin({'docker.io/library/redis:7': 'sha256:...'}) }}"
  # redis:7@sha256:...
"""

RETURN = r"""
_value:
  description: The reference, pinned when the lockfile has it.
  type: str
"""

from ansible_collections.dockyard.images.plugins.plugin_utils._references import filter_reference


def pin(text, pins):
    reference = filter_reference(text)
    digest = (pins or {}).get(reference.stored_name)
    if reference.digest or not digest:
        return text
    return f"{text}@{digest}"


class FilterModule:
    def filters(self):
        return {"pin": pin}
