"""Layer-sharing arithmetic, as docker system df -v counts it."""

from __future__ import annotations

from ansible_collections.dockyard.images.plugins.module_utils._layers import sharing_by_image, sharing_summary
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import ImageRecord, LayerRecord

BASE, RUNTIME, WEB, API = (LayerRecord(f"sha256:{c * 64}", size) for c, size in (("a", 1000), ("b", 300), ("c", 50), ("d", 20)))


def image(ref, image_id, *layers, config=5):
    return ImageRecord(parse_reference(ref), image_id, None, None, None, None, list(layers), config)


def test_shared_layers_are_counted_once_on_disk_and_attributed_to_every_user():
    images = [image("web:1", "i1", BASE, WEB), image("api:1", "i2", BASE, RUNTIME, API), image("worker:1", "i3", BASE, RUNTIME)]
    summary = sharing_summary(images)
    logical = (1000 + 50 + 5) + (1000 + 300 + 20 + 5) + (1000 + 300 + 5)
    physical = 1000 + 300 + 50 + 20 + 15
    assert summary["total_size"] == logical
    assert summary["unique_size"] == physical
    assert summary["saved_size"] == logical - physical
    assert summary["shared_size"] == 1300
    assert summary["shared_layers"] == [
        {"digest": BASE.digest, "size": 1000, "images": ["web:1", "api:1", "worker:1"]},
        {"digest": RUNTIME.digest, "size": 300, "images": ["api:1", "worker:1"]},
    ]
    per_image = sharing_by_image(images)
    assert (per_image["i1"].shared_size, per_image["i1"].unique_size) == (1000, 55)
    assert (per_image["i2"].shared_size, per_image["i2"].unique_size) == (1300, 25)


def test_two_tags_of_one_image_are_one_image_and_share_nothing_with_themselves():
    images = [image("web:1", "same", BASE, WEB), image("web:latest", "same", BASE, WEB)]
    summary = sharing_summary(images)
    assert (summary["images"], summary["tags"]) == (1, 2)
    assert summary["shared_layers"] == [] and summary["saved_size"] == 0
    assert sharing_by_image(images)["same"].unique_size == 1055


def test_nothing_adds_up_to_zero():
    assert sharing_summary([])["total_size"] == 0
