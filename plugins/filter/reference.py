# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: parse_reference
short_description: Parse a container image reference into its parts
version_added: 0.1.0
description:
  - Parses and normalises an image reference exactly as the distribution/reference grammar does
    (C(docker.io) as the default registry, C(library/) for official images, C(latest) when neither tag nor digest is given).
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
- name: Show the canonical form of a reference
  ansible.builtin.debug:
    msg: "{{ 'redis:7' | dockyard.images.parse_reference }}"
  # domain: docker.io, path: library/redis, tag: "7", digest: null,
  # name: docker.io/library/redis, canonical: docker.io/library/redis:7, familiar: redis:7
"""

RETURN = r"""
_value:
  description: The parts of the reference.
  type: dict
  contains:
    domain:
      description: Registry host and port.
      type: str
    path:
      description: Repository path within the registry.
      type: str
    tag:
      description: The tag, or null when only a digest was given.
      type: str
    digest:
      description: The digest, or null.
      type: str
    name:
      description: C(domain/path).
      type: str
    canonical:
      description: The fully qualified reference.
      type: str
    familiar:
      description: The short form Docker shows, such as C(redis:7).
      type: str
"""

from ansible_collections.dockyard.images.plugins.plugin_utils._references import filter_reference


def parse_reference(text):
    return filter_reference(text).to_dict()


class FilterModule:
    def filters(self):
        return {"parse_reference": parse_reference}
