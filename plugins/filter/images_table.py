# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: images_table
short_description: Format image facts as a C(docker images)-style table
version_added: 0.1.0
description:
  - Turns the C(dockyard_images) facts that M(dockyard.images.image_facts) sets into the lines of a table
    with the columns REPOSITORY, TAG, IMAGE ID, CREATED, SIZE, SHARED and UNIQUE, sizes in the units
    C(docker images) uses, followed by a line with the totals and the bytes saved by sharing.
positional: _input
options:
  _input:
    description: The value of C(ansible_facts.dockyard_images), or the result of M(dockyard.images.image_facts).
    type: dict
    required: true
author:
  - Dockyard Images Maintainers (@dockyard)
"""

EXAMPLES = r"""
---
- name: Gather image facts
  dockyard.images.image_facts:

- name: Print the table
  ansible.builtin.debug:
    msg: "{{ ansible_facts.dockyard_images | dockyard.images.images_table }}"
"""

RETURN = r"""
_value:
  description: The table, one string per line.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.dockyard.images.plugins.plugin_utils._report import human_size, plural, time_ago

COLUMNS = ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED", "UNIQUE")


def images_table(facts):
    if not isinstance(facts, dict) or "images" not in facts:
        raise AnsibleFilterError("images_table expects the dockyard_images facts from dockyard.images.image_facts")
    rows = [COLUMNS]
    for image in facts["images"]:
        rows.append(
            (
                image.get("repository") or "<none>",
                image.get("tag") or "<none>",
                (image.get("id") or "").split(":")[-1][:12],
                time_ago(image.get("created")),
                human_size(image.get("size") or 0),
                human_size(image.get("shared_size") or 0),
                human_size(image.get("unique_size") or 0),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    summary = facts.get("summary") or {}
    if summary:
        lines.append(
            f"{plural(summary.get('images', 0), 'image')}, {plural(summary.get('layers', 0), 'layer')}: "
            f"{human_size(summary.get('total_size', 0))} logical, {human_size(summary.get('unique_size', 0))} on disk, "
            f"{human_size(summary.get('saved_size', 0))} saved by sharing {plural(len(summary.get('shared_layers') or []), 'layer')}"
        )
    return lines


class FilterModule:
    def filters(self):
        return {"images_table": images_table}
