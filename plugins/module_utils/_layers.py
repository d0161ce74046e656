# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Layer-sharing arithmetic over the images of one host. No I/O.

Sizes follow `docker system df -v`: an image's shared size is the size of its layers that at
least one other image also uses, its unique size the rest. Several tags of one image (same id)
are one image here, so they never make a layer look shared.
This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageSharing:
    shared_size: int
    unique_size: int


def _unique_images(images: list) -> dict:
    by_id = {}
    for image in images:
        by_id.setdefault(image.id, image)
    return by_id


def _layer_users(by_id: dict) -> tuple:
    """(size by layer key, ids of the images using each layer), in first-seen order."""
    layer_size, layer_users = {}, {}
    for image_id, image in by_id.items():
        for layer in image.layers:
            layer_size[layer.key] = layer.size
            users = layer_users.setdefault(layer.key, [])
            if image_id not in users:
                users.append(image_id)
    return layer_size, layer_users


def sharing_summary(images: list) -> dict:
    """Totals and per-layer users for a list of ImageRecords; see the module docstring."""
    by_id = _unique_images(images)
    layer_size, layer_users = _layer_users(by_id)
    names = _names_by_id(images)
    logical = sum(image.size for image in by_id.values())
    physical = sum(layer_size.values()) + sum(image.config_size for image in by_id.values())
    shared = {digest: users for digest, users in layer_users.items() if len(users) > 1}
    return {
        "images": len(by_id),
        "tags": sum(len(n) for n in names.values()),
        "layers": len(layer_size),
        "total_size": logical,
        "unique_size": physical,
        "shared_size": sum(layer_size[d] for d in shared),
        "saved_size": logical - physical,
        "shared_layers": [
            {"digest": digest, "size": layer_size[digest], "images": [name for image_id in users for name in names[image_id]]}
            for digest, users in sorted(shared.items(), key=lambda item: (-layer_size[item[0]], item[0]))
        ],
    }


def sharing_by_image(images: list) -> dict:
    """ImageSharing for every image id: what it shares with other images, and what only it has."""
    by_id = _unique_images(images)
    layer_size, layer_users = _layer_users(by_id)
    result = {}
    for image_id, image in by_id.items():
        shared = sum(layer_size[key] for key in {layer.key for layer in image.layers} if len(layer_users[key]) > 1)
        result[image_id] = ImageSharing(shared_size=shared, unique_size=image.size - shared)
    return result


def _names_by_id(images: list) -> dict:
    names = {}
    for image in images:
        label = image.reference.familiar if image.reference else image.id
        names.setdefault(image.id, [])
        if label not in names[image.id]:
            names[image.id].append(label)
    return names
