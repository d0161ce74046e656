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
  - Hosts that hold exactly the same images (the same references with the same image ids) form a group. A group of at
    least 5% of the hosts and at least two hosts is common, and the largest common group is the baseline; the hosts of
    the other groups are outliers. Each group but the baseline says what it lacks and holds extra against a common group,
    so that a fleet of a thousand hosts reads as a few groups and the hosts that stray from them.
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
        - C(groups) counts the groups of hosts that hold the same images, C(outliers) the hosts outside the common groups.
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
    groups:
      description:
        - The hosts grouped by the images they hold, every host in exactly one group. Outlier groups come first (more hosts
          first, then by host name), then the common groups, largest first, the baseline before the others. When no group
          is common there is no baseline and no outlier, and nothing is compared.
        - Per group, its C(hosts) (sorted), the references of the C(images) they hold, whether it is the C(baseline) and
          whether it is an C(outlier) group; C(compared_with), the index in this list of the group it is compared with
          (none for the baseline; the baseline for another common group; for an outlier group, the common group it
          differs least from, ties going to the larger); what it C(lacks) and holds C(extra) against that group, and the
          references it holds with C(other_ids); and the sums over its hosts of C(logical_bytes), C(physical_bytes) and
          C(saved_bytes).
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
