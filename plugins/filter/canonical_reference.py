# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: canonical_reference
short_description: The fully qualified form of a container image reference
version_added: 0.1.0
description:
  - Normalises an image reference as P(dockyard.images.parse_reference#filter) does and returns its canonical form,
    the one the modules report and record, so that references written differently compare equal.
  - Fails with a message naming the rule the reference breaks.
positional: _input
options:
  _input:
    description: The reference, such as V(redis), V(ghcr.io/org/app:1.2) or V(localhost:5000/app@sha256:...).
    type: str
    required: true
author:
  - Dockyard Images Maintainers (@dockyard)
"""

EXAMPLES = r"""
---
- name: Compare references written differently
  ansible.builtin.assert:
    that:
      - "'redis:7' | dockyard.images.canonical_reference == 'docker.io/library/redis:7'"
      - "'library/redis' | dockyard.images.canonical_reference == 'docker.io/library/redis:latest'"
"""

RETURN = r"""
_value:
  description: The canonical reference, such as C(docker.io/library/redis:7).
  type: str
"""

from ansible_collections.dockyard.images.plugins.plugin_utils._references import filter_reference


def canonical_reference(text):
    return filter_reference(text).canonical


class FilterModule:
    def filters(self):
        return {"canonical_reference": canonical_reference}
