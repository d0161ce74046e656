# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: render_layer_report
short_description: Render a fleet layer report as Markdown or as a self-contained HTML page
version_added: 0.1.0
description:
  - Renders what P(dockyard.images.fleet_layer_report#filter) returns as a Markdown summary, or as one HTML page with inline
    CSS and SVG pictures (logical against physical bytes per host, an images by layers sharing matrix, a hosts by
    images presence grid) that fetches nothing from elsewhere and runs no script.
  - The page opens on a summary that fits a window - the fleet's totals, the baseline group and the outliers first, with
    what each lacks and holds extra - followed by the table of the groups of hosts that hold the same images, each
    group's host names folded in an HTML C(details) element.
  - Up to 20 hosts, the pictures show every host. Above 20 hosts, they show groups instead - a bar per group with its
    hosts' logical and physical bytes, a groups by images presence grid that marks what outliers lack or hold extra - and
    the table of every host is folded away. The Markdown summary lists the groups too.
positional: _input, format
options:
  _input:
    description: The report.
    type: dict
    required: true
  format:
    description: What to render.
    type: str
    choices: [markdown, html]
    default: markdown
author:
  - Dockyard Images Maintainers (@dockyard)
"""

EXAMPLES = r"""
---
- name: Write the HTML page
  ansible.builtin.copy:
    content: "{{ report | dockyard.images.render_layer_report('html') }}"
    dest: /tmp/layers.html
    mode: "0644"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
_value:
  description: The rendered document.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.dockyard.images.plugins.plugin_utils._report import render_html, render_markdown


def render_layer_report(report, format="markdown"):
    if not isinstance(report, dict) or "fleet" not in report:
        raise AnsibleFilterError("render_layer_report expects what dockyard.images.fleet_layer_report returns")
    if format not in ("markdown", "html"):
        raise AnsibleFilterError(f"render_layer_report: format must be markdown or html, not {format!r}")
    return render_html(report) if format == "html" else render_markdown(report)


class FilterModule:
    def filters(self):
        return {"render_layer_report": render_layer_report}
