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

import math
from dataclasses import dataclass

from ansible_collections.dockyard.images.plugins.module_utils._stores import image_label


@dataclass(frozen=True)
class ImageSharing:
    """How many of an image's bytes it shares with other images, and how many are its own."""

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
        label = image_label(image)
        names.setdefault(image.id, [])
        if label not in names[image.id]:
            names[image.id].append(label)
    return names


def fleet_layer_report(facts_by_host: dict) -> dict:
    """Layer sharing across hosts, from each host's `dockyard_images` facts (plain dicts).

    Per layer: its size, the images that use it and the hosts that hold it. Per host and fleet-wide:
    logical bytes (the sum of image sizes), physical bytes (each layer once per host), bytes saved by
    sharing and shared layers. Per image: the hosts that hold it and those that lack it. The fleet's
    physical bytes add up the hosts' disks; `unique_bytes` counts each layer once in the whole fleet.
    """
    layer_size, layer_images, layer_hosts = {}, {}, {}
    image_info, image_hosts = {}, {}
    hosts, held = {}, {}
    all_hosts = sorted(facts_by_host)
    for host in all_hosts:
        facts = facts_by_host[host] or {}
        host_layers, host_users, configs, logical = {}, {}, {}, 0
        held[host] = {}
        for image in facts.get("images") or []:
            name = image.get("reference") or image.get("id")
            size = image.get("size") or 0
            logical += size
            image_layers = image.get("layers") or []
            configs[image.get("id")] = size - sum(layer.get("size") or 0 for layer in image_layers)
            image_info.setdefault(name, {"reference": name, "id": image.get("id"), "size": size})
            image_hosts.setdefault(name, set()).add(host)
            held[host][name] = image.get("id")
            for layer in image_layers:
                key = layer.get("chain_id") or layer["digest"]
                host_layers[key] = layer_size[key] = layer.get("size") or 0
                host_users.setdefault(key, set()).add(image.get("id"))
                layer_images.setdefault(key, {})[name] = None
                layer_hosts.setdefault(key, set()).add(host)
        physical = sum(host_layers.values()) + sum(configs.values())
        hosts[host] = {
            "store": (facts.get("store") or {}).get("type"),
            "images": len(configs),
            "layers": len(host_layers),
            "logical_bytes": logical,
            "physical_bytes": physical,
            "saved_bytes": logical - physical,
            "shared_layers": sum(1 for users in host_users.values() if len(users) > 1),
        }
    images = [
        dict(image_info[name], hosts=sorted(image_hosts[name]), missing_on=[h for h in all_hosts if h not in image_hosts[name]]) for name in sorted(image_info)
    ]
    layers = [
        {"digest": key, "size": layer_size[key], "images": list(layer_images[key]), "hosts": sorted(layer_hosts[key])}
        for key in sorted(layer_size, key=lambda key: (-layer_size[key], key))
    ]
    logical = sum(h["logical_bytes"] for h in hosts.values())
    physical = sum(h["physical_bytes"] for h in hosts.values())
    groups = host_groups(held, hosts)
    return {
        "fleet": {
            "hosts": len(hosts),
            "images": len(images),
            "layers": len(layers),
            "logical_bytes": logical,
            "physical_bytes": physical,
            "saved_bytes": logical - physical,
            "unique_bytes": sum(layer_size.values()),
            "shared_layers": sum(1 for users in layer_images.values() if len(users) > 1),
            "groups": len(groups),
            "outliers": sum(len(group["hosts"]) for group in groups if group["outlier"]),
        },
        "hosts": hosts,
        "images": images,
        "layers": layers,
        "groups": groups,
    }


COMMON_SHARE = 0.05  # a group of at least this share of the hosts (and at least two) is common; the other hosts are outliers


def host_groups(held: dict, hosts: dict) -> list:
    """Hosts that hold exactly the same images (the same references with the same ids) as groups.

    `held` maps each host to {reference: image id}, `hosts` to its figures. A group of at least
    COMMON_SHARE of the hosts and at least two hosts is common; the largest common group (ties go to
    the one with more images, then to the first host name) is the baseline. The hosts of the other
    groups are outliers. The baseline is compared with nothing, another common group with the
    baseline, an outlier group with the common group it differs least from (ties go to the larger):
    the references it lacks, those it holds extra, and those it holds with other ids. Outlier groups
    come first (more hosts first, then by host name), then the common groups, largest first. When no
    group is common there is no baseline and no outlier, and nothing is compared.
    """
    by_key = {}
    for host in sorted(held):
        by_key.setdefault(frozenset(held[host].items()), []).append(host)
    ranked = sorted(by_key.items(), key=lambda item: (-len(item[1]), -len(item[0]), item[1][0]))
    threshold = max(2, math.ceil(len(held) * COMMON_SHARE))
    common = [key for key, members in ranked if len(members) >= threshold]
    rank = {key: number for number, (key, _members) in enumerate(ranked)}

    def compared_with(key):
        if not common or key == common[0]:
            return None
        if key in common:
            return common[0]
        return min(common, key=lambda other: (len(key ^ other), rank[other]))

    outliers = [item for item in ranked if common and item[0] not in common]
    ordered = outliers + [item for item in ranked if not common or item[0] in common]
    index = {key: number for number, (key, _members) in enumerate(ordered)}
    groups = []
    for key, members in ordered:
        images = dict(key)
        other = compared_with(key)
        versus = dict(other or ())
        groups.append(
            {
                "hosts": members,
                "images": sorted(images),
                "baseline": bool(common) and key == common[0],
                "outlier": bool(common) and key not in common,
                "compared_with": None if other is None else index[other],
                "lacks": sorted(name for name in versus if name not in images) if other is not None else [],
                "extra": sorted(name for name in images if name not in versus) if other is not None else [],
                "other_ids": sorted(name for name in images if name in versus and versus[name] != images[name]),
                "logical_bytes": sum(hosts[host]["logical_bytes"] for host in members),
                "physical_bytes": sum(hosts[host]["physical_bytes"] for host in members),
                "saved_bytes": sum(hosts[host]["saved_bytes"] for host in members),
            }
        )
    return groups
