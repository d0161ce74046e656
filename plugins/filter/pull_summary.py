# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: pull_summary
short_description: Say in a few lines what a pull or a delivery will move, or moved
version_added: 0.1.0
description:
  - Turns the results of M(dockyard.images.image_pull) into lines a person reads while a fleet is pre-warmed;
    a headline with the number of images and bytes, then one line per image that moves (or moved) with its
    platform, its bytes and its layers. Sizes are in the units C(docker images) uses.
  - Run on the results of a pull in check mode, it is the plan; on the results of a real pull, what was done.
    The P(dockyard.images.prewarm#role) role prints both.
  - The results of M(dockyard.images.image_deliver) read the same way, in its words. The headline counts the bytes
    sent over the connection (RV(dockyard.images.image_deliver#module:sent_bytes), for the task as a whole) and the
    layer bytes the host held already; an image's line counts the layers the host loaded. A delivery in check mode
    names the images it would send.
positional: _input
options:
  _input:
    description:
      - The registered result of M(dockyard.images.image_pull) or M(dockyard.images.image_deliver), of a loop over it
        (with C(results)), a list of them, or a list of the images such results of M(dockyard.images.image_pull) hold.
      - Items of a loop that were skipped are left out; images that failed are counted and named with their reason.
    type: raw
    required: true
  planned:
    description: Whether the results are a plan, from check mode; the lines then say what will move rather than what moved.
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

- name: Send an air-gapped host what it lacks
  dockyard.images.image_deliver:
    name: [registry.example.com/team/api:2.4.1, registry.example.com/team/worker:2.4.1]
  register: delivered

- name: Say what went over the connection
  ansible.builtin.debug:
    msg: "{{ delivered | dockyard.images.pull_summary }}"
  # - "1 delivered, 1 already here: 9.441MB sent, 58.72MB reused"
  # - "  registry.example.com/team/worker:2.4.1 (linux/amd64): 1 of 3 layers loaded, 9.437MB"
"""

RETURN = r"""
_value:
  description: The headline, then a line per image that moves, each starting with two spaces.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.dockyard.images.plugins.plugin_utils._report import human_size, plural

# The words of a pull, and of a delivery (image_deliver: what the controller sends, the host loads).
PULL = {"verb": "pull", "done": "pulled", "to_move": "to download", "moved": "downloaded", "to_layer": "to fetch", "layered": "fetched"}
DELIVERY = {"verb": "deliver", "done": "delivered", "to_move": "to send", "moved": "sent", "to_layer": "to load", "layered": "loaded"}
MOVED_LAYER = ("pull_complete", "loaded")  # a layer image_pull fetched, or image_load and image_deliver loaded


def pull_summary(results, planned=False):
    images, failures, deliveries = [], [], []
    for item in _items(results):
        if "sent_bytes" in item:  # image_deliver's: the bytes sent are the task's, not an image's
            deliveries.append(item)
        if isinstance(item.get("images"), list):
            images.extend(item["images"])
        elif "reference" in item:
            images.append(item)
        elif item.get("failed") or item.get("reason"):  # the whole task failed before any image (a plan too, run as ok): its message
            failures.append(f"  failed: {item.get('msg') or 'no message'}")
    words = DELIVERY if deliveries else PULL
    failed = [image for image in images if image.get("failed")]
    moving = [image for image in images if image.get("changed") and not image.get("failed")]
    present = len(images) - len(moving) - len(failed)
    if deliveries:
        moved = sum(item.get("sent_bytes") or 0 for item in deliveries)
        reused = sum(item.get("held_bytes") or 0 for item in deliveries)
        unknown = ""
    else:
        moved = sum(image.get("downloaded_bytes") or 0 for image in moving)
        reused = sum(image.get("reused_bytes") or 0 for image in images if not image.get("failed"))
        unknown = " (the engine reports no sizes)" if any(_size_unknown(image) for image in moving) else ""
    if planned:
        headline = (
            f"{len(moving)} of {plural(len(images), 'image')} to {words['verb']}: {human_size(moved)} {words['to_move']}{unknown}, {human_size(reused)} reused"
            if moving
            else (f"nothing to {words['verb']}: {plural(present, 'image')} already here" if present else f"no image to {words['verb']}")
        )
    else:
        headline = f"{len(moving)} {words['done']}, {present} already here: {human_size(moved)} {words['moved']}{unknown}, {human_size(reused)} reused"
    if failed:
        headline += f"; {len(failed)} failed"
    lines = [_image_line(image, words["to_layer"] if planned else words["layered"]) for image in moving]
    lines += [f"  {_name(image)}: failed, {image.get('reason') or 'see the task result'}" for image in failed]
    return [headline, *lines, *failures]


def _items(results):
    """Each result dict in `results`: a result, a loop's results, or lists of them; skipped loop items left out."""
    if isinstance(results, list):
        for result in results:
            yield from _items(result)
    elif isinstance(results, dict) and isinstance(results.get("results"), list):
        yield from _items(results["results"])
    elif isinstance(results, dict):
        if not results.get("skipped"):
            yield results
    else:
        raise AnsibleFilterError(
            "pull_summary expects the registered result of dockyard.images.image_pull or image_deliver, of a loop over it,"
            f" or its images, not {type(results).__name__}"
        )


def _name(image: dict) -> str:
    """The image as the task asked for it, without a lockfile's pinned digest when a tag names it."""
    name = image.get("reference") or image.get("canonical") or "?"
    named, _at, digest = name.partition("@")
    return named if digest and ":" in named.rsplit("/", 1)[-1] else name


def _size_unknown(image: dict) -> bool:
    return any(layer.get("size") is None for layer in image.get("layers") or [] if layer.get("status") in MOVED_LAYER)


def _image_line(image: dict, done: str) -> str:
    platform = f" ({image['platform']})" if image.get("platform") else ""
    if "layers" not in image:  # a delivery's plan names the images it sends; the bytes are the task's
        return f"  {_name(image)}{platform}"
    layers = image["layers"] or []
    fetched = sum(1 for layer in layers if layer.get("status") in MOVED_LAYER)
    size = "size unknown" if _size_unknown(image) else human_size(image.get("downloaded_bytes", image.get("loaded_bytes")) or 0)
    return f"  {_name(image)}{platform}: {fetched} of {plural(len(layers), 'layer')} {done}, {size}"


class FilterModule:
    def filters(self):
        return {"pull_summary": pull_summary}
