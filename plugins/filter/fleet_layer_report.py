# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_layer_report
short_description: Aggregate image facts from many hosts into a fleet-wide layer-sharing report
version_added: 0.1.0
description:
  - Takes a mapping of host name to the C(dockyard_images) facts that M(dockyard.images.image_facts) sets, and returns
    which layers are shared by which images and hosts, logical against physical bytes and the bytes saved by sharing,
    per host and fleet-wide, and which images some hosts hold and others lack.
positional: _input
options:
  _input:
    description: Host name to C(dockyard_images) facts, such as a dict built from C(hostvars).
    type: dict
    required: true
author:
  - Dockyard Images Maintainers (@dockyard)
"""

EXAMPLES = r"""
---
- name: Aggregate on the controller
  ansible.builtin.set_fact:
    fleet: >-
      {{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, ['ansible_facts', 'dockyard_images'])))
         | dockyard.images.fleet_layer_report }}
  run_once: true
"""

RETURN = r"""
_value:
  description: The report.
  type: dict
  contains:
    fleet:
      description:
        - Totals. C(logical_bytes) sums every host's image sizes, C(physical_bytes) every host's disk (each layer once
          per host), C(saved_bytes) their difference, C(unique_bytes) each layer once in the whole fleet.
      type: dict
    hosts:
      description: Per host, C(images), C(layers), C(logical_bytes), C(physical_bytes), C(saved_bytes), C(shared_layers).
      type: dict
    images:
      description: Per image, C(reference), C(id), C(size), the C(hosts) that hold it and those it is C(missing_on).
      type: list
      elements: dict
    layers:
      description: Per layer, C(digest), C(size), the C(images) that use it and the C(hosts) that hold it, largest first.
      type: list
      elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.dockyard.images.plugins.module_utils._layers import fleet_layer_report as _report


def fleet_layer_report(facts_by_host):
    if not isinstance(facts_by_host, dict):
        raise AnsibleFilterError("fleet_layer_report expects a mapping of host name to dockyard_images facts")
    try:
        return _report(facts_by_host)
    except (KeyError, TypeError, AttributeError) as exc:
        raise AnsibleFilterError(f"fleet_layer_report got facts it cannot read: {exc}") from None


class FilterModule:
    def filters(self):
        return {"fleet_layer_report": fleet_layer_report}
