"""The filters: parse_reference, what a fleet lacks by platform, and the docker images-style table."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.dockyard.images.plugins.filter.canonical_reference import canonical_reference
from ansible_collections.dockyard.images.plugins.filter.images_table import images_table
from ansible_collections.dockyard.images.plugins.filter.lacking_by_platform import lacking_by_platform
from ansible_collections.dockyard.images.plugins.filter.pin import pin
from ansible_collections.dockyard.images.plugins.filter.pull_summary import pull_summary
from ansible_collections.dockyard.images.plugins.filter.reference import parse_reference
from ansible_collections.dockyard.images.plugins.plugin_utils._report import human_size, time_ago


def test_parse_reference_returns_the_parts_or_a_filter_error():
    assert parse_reference("redis:7")["canonical"] == "docker.io/library/redis:7"
    with pytest.raises(AnsibleFilterError, match="lowercase"):
        parse_reference("Redis")


def test_references_written_differently_have_one_canonical_form():
    assert canonical_reference("redis:7") == canonical_reference("docker.io/library/redis:7") == "docker.io/library/redis:7"
    assert canonical_reference("localhost:5000/app") == "localhost:5000/app:latest"
    with pytest.raises(AnsibleFilterError, match="lowercase"):
        canonical_reference("Redis")


def test_a_pin_is_found_by_canonical_name_and_a_required_one_names_the_tag_the_lockfile_lacks():
    digest = "sha256:" + "a" * 64
    pins = {"docker.io/library/redis:7": digest}
    assert pin("redis:7", pins) == f"redis:7@{digest}"
    assert pin("nginx:1", pins) == "nginx:1"
    assert pin(f"nginx@{digest}", pins, True) == f"nginx@{digest}", "a digest reference pins itself"
    with pytest.raises(AnsibleFilterError, match=r"^nginx:1 has no digest in the lockfile"):
        pin("nginx:1", pins, True)


def test_what_a_fleet_lacks_is_grouped_by_the_platform_each_host_pulls_for():
    def held(platform, names, missing, host="linux/amd64"):
        return {"item": {"platform": platform, "names": names}, "missing": missing, "host_platform": host, "changed": False}

    results = [
        held("", ["redis:7", "app:1"], ["app:1"]),  # an amd64 host, pulling for itself
        held("", ["redis:7", "app:1"], ["redis:7", "app:1"], host="linux/arm64"),
        held("arm64", ["tool:2"], ["tool:2"]),  # asked for arm64 on an amd64 host
        held("", ["redis:7", "app:1"], []),  # holds everything
    ]
    assert lacking_by_platform(results) == [
        {"platform": "linux/amd64", "names": ["app:1"]},
        {"platform": "linux/arm64", "names": ["redis:7", "app:1", "tool:2"]},
    ]
    assert lacking_by_platform(results, only_missing=False) == [
        {"platform": "linux/amd64", "names": ["redis:7", "app:1"]},
        {"platform": "linux/arm64", "names": ["redis:7", "app:1", "tool:2"]},
    ]
    assert lacking_by_platform([held("", ["redis:7"], [])]) == [], "a fleet that lacks nothing seeds nothing"
    with pytest.raises(AnsibleFilterError, match="image_facts in a loop"):
        lacking_by_platform([{"skipped": True}])
    with pytest.raises(AnsibleFilterError, match="invalid platform"):
        lacking_by_platform([held("linux/arm64/v8/extra", ["tool:2"], ["tool:2"])])


@pytest.mark.parametrize(("size", "text"), [(0, "0B"), (999, "999B"), (1000, "1kB"), (77_812_345, "77.81MB"), (1_234_567_890, "1.235GB")])
def test_sizes_print_in_docker_units(size, text):
    assert human_size(size) == text


def test_created_prints_as_an_age():
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    assert time_ago("2026-02-28T00:00:00Z", now) == "24 hours ago"
    assert time_ago("2026-02-01T00:00:00.123456789Z", now) == "3 weeks ago"
    assert time_ago(None, now) == "N/A"


def test_the_table_has_docker_columns_plus_sharing():
    facts = {
        "images": [
            {
                "repository": "redis",
                "tag": "7",
                "id": "sha256:" + "ab" * 32,
                "created": None,
                "size": 2_000_000,
                "shared_size": 1_500_000,
                "unique_size": 500_000,
            }
        ],
        "summary": {"images": 1, "layers": 3, "total_size": 2_000_000, "unique_size": 2_000_000, "saved_size": 0, "shared_layers": []},
    }
    lines = images_table(facts)
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE", "SHARED", "UNIQUE"]
    assert lines[1].split() == ["redis", "7", "abababababab", "N/A", "2MB", "1.5MB", "500kB"]
    assert lines[2].startswith("1 image, 3 layers: 2MB logical, 2MB on disk")
    with pytest.raises(AnsibleFilterError):
        images_table("nope")


def test_a_pull_is_summed_up_in_a_headline_and_a_line_per_image_that_moves():
    def image(name, changed, downloaded, reused, statuses):
        layers = [{"digest": f"sha256:{n}", "size": 1000, "status": status} for n, status in enumerate(statuses)]
        return {"canonical": name, "platform": "linux/amd64", "changed": changed, "downloaded_bytes": downloaded, "reused_bytes": reused, "layers": layers}

    web = image("r.test/web:1", True, 12_000_000, 3_000_000, ["already_exists", "pull_complete"])
    base = image("r.test/base:1", False, 0, 3_000_000, ["already_exists"])
    looped = {"results": [{"images": [web]}, {"skipped": True, "item": {}}, {"images": [base]}]}
    assert pull_summary(looped, planned=True) == [
        "1 of 2 images to pull: 12MB to download, 6MB reused",
        "  r.test/web:1 (linux/amd64): 1 of 2 layers to fetch, 12MB",
    ]
    assert pull_summary([{"images": [web]}, {"images": [base]}]) == [
        "1 pulled, 1 already here: 12MB downloaded, 6MB reused",
        "  r.test/web:1 (linux/amd64): 1 of 2 layers fetched, 12MB",
    ]
    assert pull_summary({"images": [base]}, planned=True) == ["nothing to pull: 1 image already here"]
    assert pull_summary([], planned=True) == ["no image to pull"]
    with pytest.raises(AnsibleFilterError, match="image_pull"):
        pull_summary(None)


def test_a_pull_summary_counts_and_names_what_failed_and_says_when_sizes_are_unknown():
    pinned = {"reference": "r.test/web:1@sha256:" + "a" * 64, "changed": True, "downloaded_bytes": 0, "reused_bytes": 0}
    pinned["layers"] = [{"digest": "b", "size": None, "status": "pull_complete"}]  # an engine that reported no size
    broken = {"reference": "r.test/nope:9", "changed": False, "failed": True, "reason": "not_found", "layers": []}
    lines = pull_summary([{"failed": True, "images": [pinned, broken]}, {"failed": True, "msg": "store_path is a file"}], planned=True)
    assert lines == [
        "1 of 2 images to pull: 0B to download (the engine reports no sizes), 0B reused; 1 failed",
        "  r.test/web:1: 1 of 1 layer to fetch, size unknown",
        "  r.test/nope:9: failed, not_found",
        "  failed: store_path is a file",
    ]


def test_a_delivery_is_summed_up_in_its_own_words_with_the_bytes_sent_over_the_connection():
    # image_deliver in check mode: the images it would send, the bytes for the task as a whole
    plan = {
        "changed": True,
        "sent_bytes": 12_500_000,
        "held_bytes": 3_000_000,
        "platform": "linux/amd64",
        "images": [
            {"reference": "r.test/web:1", "id": "sha256:1", "changed": True},
            {"reference": "r.test/base:1", "id": "sha256:2", "changed": False},
        ],
    }
    assert pull_summary({"results": [plan, {"skipped": True, "item": {}}]}, planned=True) == [
        "1 of 2 images to deliver: 12.5MB to send, 3MB reused",
        "  r.test/web:1",
    ]
    # a real delivery: the images it loaded, shaped as image_load returns them, and those the host held
    layers = [{"digest": "sha256:a", "size": 3_000_000, "status": "already_exists"}, {"digest": "sha256:b", "size": 12_000_000, "status": "loaded"}]
    web = {"reference": "r.test/web:1", "platform": "linux/amd64", "changed": True, "loaded_bytes": 12_000_000, "reused_bytes": 3_000_000, "layers": layers}
    done = dict(plan, images=[web, plan["images"][1]])
    assert pull_summary(done) == [
        "1 delivered, 1 already here: 12.5MB sent, 3MB reused",
        "  r.test/web:1 (linux/amd64): 1 of 2 layers loaded, 12MB",
    ]
    unchanged = dict(plan, changed=False, sent_bytes=0, images=[dict(image, changed=False) for image in plan["images"]])
    assert pull_summary([unchanged], planned=True) == ["nothing to deliver: 2 images already here"]
    assert pull_summary([unchanged]) == ["0 delivered, 2 already here: 0B sent, 3MB reused"]
    failed = dict(plan, failed=True, images=[dict(web, changed=False, failed=True, reason="digest_mismatch")])
    assert pull_summary(failed) == ["0 delivered, 0 already here: 12.5MB sent, 3MB reused; 1 failed", "  r.test/web:1: failed, digest_mismatch"]
    # a plan that failed as a whole (a name the controller lacks), registered as ok so that the delivery says why
    lacking = {"changed": False, "failed": False, "reason": "not_found", "msg": "the controller's store holds no image named r.test/web:1"}
    assert pull_summary({"results": [lacking]}, planned=True) == ["no image to pull", "  failed: the controller's store holds no image named r.test/web:1"]
