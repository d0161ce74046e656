"""image_facts: what a host holds, layer by layer, and what the images share."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter

import requests
import urllib3

from support.ansible import run_module
from support.images import Pusher


def test_facts_report_layers_and_sharing_like_docker_system_df(registry, corpus, store):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]
    run_module("image_pull", {"name": names, "store_path": store})
    facts = run_module("image_facts", {"store_path": store})
    assert facts["changed"] is False
    by_ref = {image["reference"]: image for image in facts["images"]}
    app, worker = by_ref[names[0]], by_ref[names[1]]
    assert app["id"] == corpus.app.id and app["digest"] == corpus.app.digest
    assert app["repository"] == f"{registry.host}/team/app" and app["tag"] == "1"
    assert app["created"] == corpus.app.created
    assert [layer["digest"] for layer in app["layers"]] == [layer.digest for layer in corpus.app.layers]
    app_size = len(corpus.app.config) + sum(layer.size for layer in corpus.app.layers)
    assert app["size"] == app_size
    assert app["shared_size"] == corpus.base.size
    assert app["unique_size"] == app_size - corpus.base.size

    summary = facts["summary"]
    worker_size = len(corpus.worker.config) + sum(layer.size for layer in corpus.worker.layers)
    assert summary["total_size"] == app_size + worker_size
    assert summary["unique_size"] == app_size + worker_size - corpus.base.size
    assert summary["saved_size"] == corpus.base.size
    assert summary["shared_layers"] == [{"digest": corpus.base.digest, "size": corpus.base.size, "images": names}]
    assert facts["ansible_facts"]["dockyard_images"]["summary"] == summary
    assert worker["platform"] == "linux/amd64"


def test_facts_for_named_images_say_which_are_missing(registry, corpus, store):
    run_module("image_pull", {"name": [f"{registry.host}/team/app:1"], "store_path": store})
    facts = run_module("image_facts", {"store_path": store, "name": [f"{registry.host}/team/app:1", "redis:7", corpus.app.id[7:19]]})
    assert [image["id"] for image in facts["images"]] == [corpus.app.id]
    assert facts["missing"] == ["redis:7"]
    assert facts["summary"]["shared_layers"] == []


def test_facts_for_a_platform_count_an_image_held_for_another_platform_as_missing(registry, corpus, store):
    multi, app = f"{registry.host}/team/multi:1", f"{registry.host}/team/app:1"
    run_module("image_pull", {"name": [multi], "platform": "linux/arm64", "store_path": store})
    run_module("image_pull", {"name": [app], "store_path": store})

    amd64 = run_module("image_facts", {"store_path": store, "name": [multi, app], "platform": "linux/amd64"})
    assert amd64["missing"] == [multi], "multi:1 is held for arm64 only"
    assert [image["id"] for image in amd64["images"]] == [corpus.app.id]
    arm64 = run_module("image_facts", {"store_path": store, "name": [multi, app], "platform": "linux/arm64"})
    assert arm64["missing"] == [app]
    assert [image["platform"] for image in arm64["images"]] == ["linux/arm64"]
    every = run_module("image_facts", {"store_path": store, "name": [multi, app]})
    assert every["missing"] == [] and len(every["images"]) == 2
    assert every["host_platform"] == "linux/amd64"


def test_remote_facts_inspect_the_registry_without_pulling(registry, corpus, store):
    mark = registry.mark()
    facts = run_module("image_facts", {"name": [f"{registry.host}/team/multi:1"], "remote": True, "platform": "linux/arm64", "store_path": store})
    image = facts["images"][0]
    assert image["digest"] == corpus.multi.digest and image["manifest_digest"] == corpus.arm64.digest
    assert image["platforms"] == ["linux/amd64", "linux/arm64", "linux/arm/v7"]
    assert image["size"] == len(corpus.arm64.config) + sum(layer.size for layer in corpus.arm64.layers)
    layer_digests = {layer.digest for layer in corpus.arm64.layers}
    layer_gets = [path for method, path, status in registry.requests_since(mark) if method == "GET" and path.rsplit("/", 1)[-1] in layer_digests]
    assert layer_gets == []
    assert "ansible_facts" not in facts or not facts["ansible_facts"]


def test_remote_facts_of_tags_naming_one_image_read_it_once_in_each_repository(registry, corpus):
    for tag in ("1", "2", "3"):
        Pusher(registry.url).index("facts/shared", tag, corpus.multi)
    names = [f"{registry.host}/facts/shared:{tag}" for tag in ("1", "2", "3")] + [f"{registry.host}/team/multi:1", f"{registry.host}/team/app:1"]
    mark = registry.mark()
    facts = run_module("image_facts", {"name": names, "remote": True, "platform": "linux/arm64"})
    assert [image["reference"] for image in facts["images"]] == names
    assert [image["manifest_digest"] for image in facts["images"]] == [corpus.arm64.digest] * 4 + [corpus.app.digest]
    requests = registry.image_requests_since(mark)
    assert [method for method, _path, _status in requests].count("HEAD") == 5
    expected = Counter({f"/v2/team/app/manifests/{corpus.app.digest}": 1, f"/v2/team/app/blobs/{corpus.app.id}": 1})
    for repository in ("facts/shared", "team/multi"):  # the same image in two repositories: read through each, once
        for path in (f"manifests/{corpus.multi.digest}", f"manifests/{corpus.arm64.digest}", f"blobs/{corpus.arm64.id}"):
            expected[f"/v2/{repository}/{path}"] = 1
    assert Counter(path for method, path, _status in requests if method == "GET") == expected


def test_an_empty_or_absent_store_has_no_images(store):
    facts = run_module("image_facts", {"store_path": store})
    assert facts["images"] == [] and facts["summary"]["total_size"] == 0 and facts["missing"] == []


def test_remote_digests_only_cost_one_head_each(registry, corpus, store):
    mark = registry.mark()
    facts = run_module("image_facts", {"name": [f"{registry.host}/team/app:1", f"{registry.host}/team/multi:1"], "remote": True, "digests_only": True})
    assert [image["digest"] for image in facts["images"]] == [corpus.app.digest, corpus.multi.digest]
    assert [method for method, path, status in registry.image_requests_since(mark)] == ["HEAD", "HEAD"]


def test_a_tag_pinned_to_a_digest_is_found_only_with_that_digest(registry, corpus, store):
    pinned = f"{registry.host}/team/app:1@{corpus.app.digest}"
    run_module("image_pull", {"name": [pinned], "store_path": store})
    elsewhere = f"{registry.host}/team/app:1@{corpus.worker.digest}"
    facts = run_module("image_facts", {"store_path": store, "name": [pinned, elsewhere]})
    assert [image["digest"] for image in facts["images"]] == [corpus.app.digest]
    assert facts["missing"] == [elsewhere]


def test_a_host_without_requests_is_told_what_to_install(registry, store, tmp_path):
    """requests is only loaded once a task talks to a registry, yet a host without it is told so by every task,
    a read of its store too, rather than failing later with a traceback or working for some tasks only."""
    python = tmp_path / "bare" / "bin" / "python3"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    assert subprocess.run([str(python), "-c", "import requests"], capture_output=True, check=False).returncode != 0

    for args in ({"store": "oci", "store_path": store}, {"name": [f"{registry.host}/team/app:1"], "remote": True}):
        result = run_module("image_facts", args, env={"ANSIBLE_PYTHON_INTERPRETER": str(python)})
        assert result["failed"] and result["reason"] == "invalid_argument", result
        assert "install python3-requests" in result["msg"]

    # requests and urllib3 there but not what requests needs (idna, certifi): found, yet it cannot be loaded
    site = next((tmp_path / "bare" / "lib").glob("python3*/site-packages"))
    for package in (requests, urllib3):
        shutil.copytree(os.path.dirname(package.__file__), site / package.__name__)
    for module, args in (
        ("image_pull", {"name": [f"{registry.host}/team/app:1"], "store_path": store}),
        ("image_search", {"registry": registry.host, "term": "team"}),
    ):
        result = run_module(module, args, env={"ANSIBLE_PYTHON_INTERPRETER": str(python)})
        assert result["failed"] and result["reason"] == "invalid_argument", result
        assert "install python3-requests" in result["msg"]
