"""Choosing what a removal takes, and what happens to each layer."""

from __future__ import annotations

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._stores import (
    ImageRecord,
    LayerRecord,
    RemovalPlan,
    RemovalRequest,
    layer_fate,
    plan_targets,
    select_all,
    select_images,
)

BASE, APP, WORKER = (LayerRecord(f"sha256:{c * 64}", size) for c, size in (("a", 100), ("b", 10), ("c", 20)))


def image(ref, image_id, *layers, containers=()):
    return ImageRecord(parse_reference(ref), image_id, None, None, None, None, list(layers), 0, list(containers))


APP_1 = image("app:1", "sha256:" + "1" * 64, BASE, APP)
APP_LATEST = image("app:latest", "sha256:" + "1" * 64, BASE, APP)
WORKER_1 = image("worker:1", "sha256:" + "2" * 64, BASE, WORKER, containers=[{"id": "abc", "name": "w", "state": "running"}])
RECORDS = [APP_1, APP_LATEST, WORKER_1]


def test_names_select_by_reference_or_id_prefix_and_report_what_is_missing():
    targets, remaining, missing, in_use = plan_targets(RECORDS, RemovalRequest(names=["app:1", "2222222222222", "nope:1"]))
    assert targets == [APP_1, WORKER_1] and remaining == [APP_LATEST]
    assert missing == ["nope:1"] and in_use == []


def test_keep_takes_everything_else_except_images_in_use():
    targets, remaining, missing, in_use = plan_targets(RECORDS, RemovalRequest(keep=["app:latest"]))
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


INDEX, M_AMD64, M_ARM64, REDIS_DIGEST, LOOSE_DIGEST = ("sha256:" + c * 64 for c in "89abc")
MULTI_AMD64 = ImageRecord(parse_reference("registry.example.com/team/multi:1"), "sha256:" + "4" * 64, INDEX, M_AMD64, None, None, [BASE], 0)
MULTI_ARM64 = ImageRecord(parse_reference("registry.example.com/team/multi:1"), "sha256:" + "5" * 64, INDEX, M_ARM64, None, None, [BASE], 0)
REDIS = ImageRecord(parse_reference("redis:7"), "sha256:" + "6" * 64, REDIS_DIGEST, REDIS_DIGEST, None, None, [WORKER], 0)
LOOSE = ImageRecord(None, "sha256:" + "7" * 64, LOOSE_DIGEST, None, None, None, [APP], 0)  # held under no tag, as an engine keeps a pull by digest
STORE = [*RECORDS, MULTI_AMD64, MULTI_ARM64, REDIS, LOOSE]
TYPO = "sha256:" + "8" * 63 + "9"  # the index digest, one digit off


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("app:1", [APP_1], id="tag"),
        pytest.param("docker.io/library/redis:7", [REDIS], id="normalised name"),
        pytest.param("index.docker.io/library/redis:7", [REDIS], id="legacy hub domain"),
        pytest.param("app", [APP_LATEST], id="no tag means latest"),
        pytest.param(f"registry.example.com/team/multi@{INDEX}", [MULTI_AMD64, MULTI_ARM64], id="index digest: every platform"),
        pytest.param(f"registry.example.com/team/multi@{M_ARM64}", [MULTI_ARM64], id="manifest digest: that platform"),
        pytest.param(f"registry.example.com/team/multi:1@{M_AMD64}", [MULTI_AMD64], id="tag@digest"),
        pytest.param(f"redis@{REDIS_DIGEST}", [REDIS], id="digest of a familiar name"),
        pytest.param(f"registry.example.com/team/other@{INDEX}", [], id="digest under another repository"),
        pytest.param(f"registry.example.com/team/multi:2@{INDEX}", [], id="digest under another tag"),
        pytest.param(f"team/loose@{LOOSE_DIGEST}", [LOOSE], id="digest of an image held under no tag"),
        pytest.param("sha256:" + "6" * 64, [REDIS], id="image id"),
        pytest.param("666666666666", [REDIS], id="id prefix"),
        pytest.param("sha256:666666666666", [REDIS], id="id prefix with sha256"),
        pytest.param("11111111111111", [APP_1, APP_LATEST], id="id prefix: every tag of the image"),
        pytest.param("66666666666", [], id="eleven hex digits are a repository name"),
        pytest.param("redis:6", [], id="another tag"),
    ],
)
def test_a_name_selects_the_images_it_means_in_every_form(text, expected):
    assert select_images(STORE, text) == expected


@pytest.mark.parametrize(
    ("keep", "kept"),
    [
        pytest.param([f"registry.example.com/team/multi@{INDEX}"], [MULTI_AMD64, MULTI_ARM64], id="index digest"),
        pytest.param([f"registry.example.com/team/multi@{M_ARM64}"], [MULTI_ARM64], id="manifest digest"),
        pytest.param([f"registry.example.com/team/multi:1@{M_AMD64}"], [MULTI_AMD64], id="tag@digest"),
        pytest.param(["docker.io/library/redis:7", "app:1"], [REDIS, APP_1], id="normalised name and tag"),
        pytest.param(["666666666666", "sha256:" + "4" * 64], [REDIS, MULTI_AMD64], id="id prefix and id"),
        pytest.param([f"team/loose@{LOOSE_DIGEST}"], [LOOSE], id="digest of an untagged image"),
    ],
)
def test_keep_keeps_every_image_an_entry_names_and_removes_the_rest_not_in_use(keep, kept):
    targets, remaining, missing, in_use = plan_targets(STORE, RemovalRequest(keep=keep))
    assert missing == [] and in_use == [WORKER_1]
    assert remaining == [r for r in STORE if any(r is k for k in [*kept, WORKER_1])]
    assert targets == [r for r in STORE if not any(r is k for k in [*kept, WORKER_1])]


@pytest.mark.parametrize(
    ("keep", "named_nothing"),
    [
        pytest.param(["app:1", "ap:1"], ["ap:1"], id="typo in a tag"),
        pytest.param([f"registry.example.com/team/multi@{TYPO}", "redis:7"], [f"registry.example.com/team/multi@{TYPO}"], id="wrong digest"),
        pytest.param(["777777777778"], ["777777777778"], id="id prefix of no image"),
    ],
)
def test_a_keep_entry_that_names_no_image_fails_before_any_target_is_chosen(keep, named_nothing):
    with pytest.raises(DockyardError) as failed:
        plan_targets(STORE, RemovalRequest(keep=keep), where="the oci store at /srv/oci")
    assert failed.value.reason == "invalid_argument"
    assert failed.value.details["missing"] == named_nothing
    for text in (*named_nothing, "the oci store at /srv/oci", "keep_missing: ignore"):
        assert text in failed.value.message


def test_keep_missing_ignore_keeps_what_the_other_entries_name_and_reports_the_rest():
    _targets, remaining, missing, in_use = plan_targets(STORE, RemovalRequest(keep=["app:1", "ap:1"], keep_missing="ignore"))
    assert missing == ["ap:1"] and in_use == [WORKER_1]
    assert remaining == [APP_1, WORKER_1]


def test_an_empty_keep_is_refused_unless_keep_missing_is_ignore():
    with pytest.raises(DockyardError) as failed:
        plan_targets(STORE, RemovalRequest(keep=[]), where="the docker engine at unix:///run/docker.sock")
    assert failed.value.reason == "invalid_argument"
    assert "keep_missing: ignore" in failed.value.message and "unix:///run/docker.sock" in failed.value.message
    targets, remaining, missing, in_use = plan_targets(STORE, RemovalRequest(keep=[], keep_missing="ignore"))
    assert remaining == in_use == [WORKER_1] and missing == []
    assert targets == [r for r in STORE if r is not WORKER_1]


def test_names_that_mean_nothing_are_only_reported_whatever_keep_missing_says():
    targets, _remaining, missing, _in_use = plan_targets(STORE, RemovalRequest(names=["ap:1", f"redis@{REDIS_DIGEST}"]))
    assert targets == [REDIS] and missing == ["ap:1"]
