"""image_pull into the embedded OCI store, against the real distribution registry."""

from __future__ import annotations

import json
import os

from support.ansible import run_module


def pull(registry, store, names, **options):
    check = options.pop("check", False)
    args = {"name": names if isinstance(names, list) else [names], "store_path": store}
    args.update(options)
    return run_module("image_pull", args, check=check, diff=True)


def blob_gets(requests):
    return [path for method, path, _ in requests if method == "GET" and "/blobs/" in path]


def manifest_gets(requests):
    return [path for method, path, _ in requests if method == "GET" and "/manifests/" in path]


def index_entries(store):
    with open(os.path.join(store, "index.json"), encoding="utf-8") as handle:
        return json.load(handle)["manifests"]


def test_pulling_worker_after_app_reuses_the_shared_base_layer(registry, corpus, store):
    first = pull(registry, store, f"{registry.host}/team/app:1")
    assert first["changed"] is True, first
    assert [layer["status"] for layer in first["images"][0]["layers"]] == ["pull_complete", "pull_complete"]

    mark = registry.mark()
    second = pull(registry, store, f"{registry.host}/team/worker:1")
    image = second["images"][0]
    assert second["changed"] is True
    assert [(layer["digest"], layer["status"]) for layer in image["layers"]] == [
        (corpus.base.digest, "already_exists"),
        (corpus.worker.layers[1].digest, "pull_complete"),
    ]
    assert image["reused_bytes"] == corpus.base.size
    assert image["downloaded_bytes"] == corpus.worker.layers[1].size
    gets = blob_gets(registry.requests_since(mark))
    assert not any(corpus.base.digest in path for path in gets), gets
    assert image["id"] == corpus.worker.id
    assert image["digest"] == corpus.worker.digest
