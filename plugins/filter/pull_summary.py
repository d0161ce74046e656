# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: pull_summary
short_description: Say in a few lines what a pull will move, or moved
version_added: 0.1.0
description:
  - Turns the results of M(dockyard.images.image_pull) into lines a person reads while a fleet is pre-warmed
    a headline with the number of images and bytes, then one line per image that moves (or moved) with its
    platform, its bytes and its layers. Sizes are in the units C(docker images) uses.
  - Run on the results of a pull in check mode, it is the plan; on the results of a real pull, what was done.
    The P(dockyard.images.prewarm#role) role prints both.
positional: _input
options:
  _input:
    description:
      - The registered result of M(dockyard.images.image_pull), of a loop over it (with C(results)), or a list of them.
      - Items of a loop that were skipped are left out.
    type: raw
    required: true
  planned:
    description: Whether the results are a plan (check mode): the lines then say what will move rather than what moved.
    type: bool
    default: false
author:
  - Dockyard Images Maintainers (@dockyard)
"""

EXAMPLES = r"""
---
- name: Find what would move
  dockyard.images.image_pull:
    name: [redis:7, nginx:1.27]
  check_mode: true
  register: plan

- name: Say it
  ansible.builtin.debug:
    msg: "{{ plan | dockyard.images.pull_summary(planned=true) }}"
  # - "1 of 2 images to pull: 16.55MB to download, 3.1MB reused"
  # - "  docker.io/library/nginx:1.27 (linux/amd64): 6 of 7 layers to fetch, 16.55MB"
"""

RETURN = r"""
_value:
  description: The headline, then a line per image that moves, each starting with two spaces.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.dockyard.images.plugins.plugin_utils._report import human_size, plural


def pull_summary(results, planned=False):
    images = list(_images(results))
    moving = [image for image in images if image.get("changed")]
    downloaded = sum(image.get("downloaded_bytes") or 0 for image in images)
    reused = sum(image.get("reused_bytes") or 0 for image in images)
    if planned and not moving:
        return [f"nothing to pull: {plural(len(images), 'image')} already here"]
    if planned:
        headline = f"{len(moving)} of {plural(len(images), 'image')} to pull: {human_size(downloaded)} to download, {human_size(reused)} reused"
    else:
        headline = f"{len(moving)} pulled, {len(images) - len(moving)} already here: {human_size(downloaded)} downloaded, {human_size(reused)} reused"
    return [headline] + [_image_line(image, "to fetch" if planned else "fetched") for image in moving]


def _images(results):
    if isinstance(results, list):
        for result in results:
            yield from _images(result)
    elif isinstance(results, dict) and "results" in results:
        yield from _images(results["results"])
    elif isinstance(results, dict) and isinstance(results.get("images"), list):
        yield from results["images"]
    elif not (isinstance(results, dict) and results.get("skipped")):
        raise AnsibleFilterError("pull_summary expects the registered result of dockyard.images.image_pull, or of a loop over it")


def _image_line(image: dict, done: str) -> str:
    layers = image.get("layers") or []
    fetched = sum(1 for layer in layers if layer.get("status") == "pull_complete")
    platform = f" ({image['platform']})" if image.get("platform") else ""
    name = image.get("canonical") or image.get("reference")
    return f"  {name}{platform}: {fetched} of {plural(len(layers), 'layer')} {done}, {human_size(image.get('downloaded_bytes') or 0)}"


class FilterModule:
    def filters(self):
        return {"pull_summary": pull_summary}
