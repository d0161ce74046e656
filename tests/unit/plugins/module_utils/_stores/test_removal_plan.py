"""Choosing what a removal takes, and what happens to each layer."""

from __future__ import annotations

from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import ImageRecord, LayerRecord, RemovalPlan, layer_fate, plan_targets, select_all

BASE, APP, WORKER = (LayerRecord(f"sha256:{c * 64}", size) for c, size in (("a", 100), ("b", 10), ("c", 20)))


def image(ref, image_id, *layers, containers=()):
    return ImageRecord(parse_reference(ref), image_id, None, None, None, None, list(layers), 0, list(containers))


APP_1 = image("app:1", "sha256:" + "1" * 64, BASE, APP)
APP_LATEST = image("app:latest", "sha256:" + "1" * 64, BASE, APP)
WORKER_1 = image("worker:1", "sha256:" + "2" * 64, BASE, WORKER, containers=[{"id": "abc", "name": "w", "state": "running"}])
RECORDS = [APP_1, APP_LATEST, WORKER_1]


def test_names_select_by_reference_or_id_prefix_and_report_what_is_missing():
    targets, remaining, missing, in_use = plan_targets(RECORDS, ["app:1", "2222222222222", "nope:1"], None)
    assert targets == [APP_1, WORKER_1] and remaining == [APP_LATEST]
    assert missing == ["nope:1"] and in_use == []


def test_keep_takes_everything_else_except_images_in_use():
    targets, remaining, missing, in_use = plan_targets(RECORDS, None, ["app:latest"])
    assert targets == [APP_1] and in_use == [WORKER_1] and missing == []
    assert remaining == [APP_LATEST, WORKER_1]


def test_untagging_one_of_two_tags_deletes_nothing():
    plan = RemovalPlan([APP_1], [APP_LATEST, WORKER_1])
    assert plan.untagged == ["app:1"] and plan.deleted_images == [] and plan.bytes_freed == 0


def test_shared_layers_are_kept_and_named_and_only_deleted_ones_count():
    deleted, kept = layer_fate([APP_1, APP_LATEST], [WORKER_1], {APP.digest})
    assert deleted == [APP]
    assert kept == [(BASE, ["worker:1"])]
    plan = RemovalPlan([APP_1, APP_LATEST], [WORKER_1], deleted_layers=deleted, kept_layers=kept, deleted_blobs={APP.digest: 10})
    assert plan.to_dict()["bytes_freed"] == 10
    assert plan.deleted_images == [APP_1.id]


def test_a_tag_pinned_to_a_digest_means_the_image_held_under_that_tag_with_that_digest():
    digest, other = "sha256:" + "d" * 64, "sha256:" + "e" * 64
    pinned = ImageRecord(parse_reference("app:2"), "sha256:" + "3" * 64, digest, "sha256:" + "f" * 64, None, None, [BASE], 0)
    records = [*RECORDS, pinned]
    chosen, missing = select_all(records, [f"app:2@{digest}", f"app:2@{other}", f"app:1@{digest}"])
    assert chosen == [pinned]
    assert missing == [f"app:2@{other}", f"app:1@{digest}"], "another digest, or the digest under another tag, is not held"
