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
  - With O(required), a tag O(pins) has no digest for is an error that names it, rather than the tag unchanged.
positional: _input, pins, required
options:
  _input:
    description: The reference.
    type: str
    required: true
  pins:
    description: Canonical reference (tag form) to digest, as read from a lockfile.
    type: dict
    required: true
  required:
    description: Fail on a tag that O(pins) lacks, for a lockfile that must pin every image.
    type: bool
    default: false
author:
  - Dockyard Images Maintainers (@dockyard)
"""

EXAMPLES = r"""
---
- name: Pin
  ansible.builtin.debug:
    msg: "{{ 'redis:7' | dockyard.images.pin({'docker.io/library/redis:7': 'sha256:...'}) }}"
  # redis:7@sha256:...

- name: Pin every image, failing on one the lockfile lacks
  ansible.builtin.debug:
    msg: "{{ ['redis:7', 'nginx:1'] | map('dockyard.images.pin', pins, true) | list }}"
  vars:
    pins: "{{ (lookup('ansible.builtin.file', 'images.lock.yml') | from_yaml).images | items2dict(key_name='reference', value_name='digest') }}"
"""

RETURN = r"""
_value:
  description: The reference, pinned when the lockfile has it.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.dockyard.images.plugins.plugin_utils._references import filter_reference


def pin(text, pins, required=False):
    reference = filter_reference(text)
    if reference.digest:
        return text
    digest = (pins or {}).get(reference.stored_name)
    if digest:
        return f"{text}@{digest}"
    if required:
        message = f"{text} has no digest in the lockfile: resolve the tags again (with the prewarm role, prewarm_lock=true) or leave it out of the list"
        raise AnsibleFilterError(message)
    return text


class FilterModule:
    def filters(self):
        return {"pin": pin}
