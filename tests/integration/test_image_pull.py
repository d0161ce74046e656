"""image_pull into the embedded OCI store, against the real distribution registry."""

from __future__ import annotations

import json
import os
import sys

from support.ansible import run_module


def pull(registry, store, names, **options):
    check = options.pop("check", False)
    args = {"name": names if isinstance(names, list) else [names], "store_path": store}
    args.update(options)
    return run_module("image_pull", args, check=check, diff=True)


def blob_gets(requests):
    return [path for method, path, status in requests if method == "GET" and "/blobs/" in path]


def manifest_gets(requests):
    return [path for method, path, status in requests if method == "GET" and "/manifests/" in path]


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
    # a tag the store lacks costs one GET for its manifest, then only the blobs the store lacks
    requests = [(method, path) for method, path, status in registry.image_requests_since(mark)]
    assert requests[0] == ("GET", "/v2/team/worker/manifests/1")
    assert sorted(requests[1:]) == sorted(("GET", f"/v2/team/worker/blobs/{blob}") for blob in (corpus.worker.id, corpus.worker.layers[1].digest))
    assert image["id"] == corpus.worker.id
    assert image["digest"] == corpus.worker.digest
    # a single-manifest image names its platform only in its config
    assert image["platform"] == "linux/amd64"
    entry = next(e for e in index_entries(store) if e["annotations"]["org.opencontainers.image.ref.name"].endswith("team/worker:1"))
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}


def test_a_layer_two_images_of_one_call_need_is_fetched_once(registry, corpus, store):
    mark = registry.mark()
    result = pull(registry, store, [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"])
    app, worker = result["images"]
    assert app["layers"][0] == {"digest": corpus.base.digest, "id": corpus.base.digest[7:19], "size": corpus.base.size, "status": "pull_complete"}
    assert worker["layers"][0]["status"] == "already_exists"
    gets = blob_gets(registry.requests_since(mark))
    assert sum(corpus.base.digest in path for path in gets) == 1, gets
    unique = {corpus.base.digest, corpus.app.layers[1].digest, corpus.worker.layers[1].digest}
    assert result["downloaded_bytes"] == sum(layer.size for layer in (corpus.base, corpus.app.layers[1], corpus.worker.layers[1]))
    assert result["reused_bytes"] == corpus.base.size
    assert {path.rsplit("/", 1)[1] for path in gets} == unique | {corpus.app.id, corpus.worker.id}


def test_a_rerun_changes_nothing_and_fetches_nothing(registry, corpus, store):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]
    pull(registry, store, names)
    mark = registry.mark()
    again = pull(registry, store, names)
    assert again["changed"] is False
    assert again["downloaded_bytes"] == 0
    assert all(layer["status"] == "already_exists" for image in again["images"] for layer in image["layers"])
    assert registry.requests_since(mark) == [], "policy missing must not contact the registry"

    always = pull(registry, store, names, policy="always")
    seen = registry.image_requests_since(mark)
    assert always["changed"] is False
    assert [entry[0] for entry in seen] == ["HEAD", "HEAD"], seen
    assert always["images"][0]["digest"] == corpus.app.digest


def test_a_rerun_that_finds_every_image_in_its_store_loads_no_http_library(registry, corpus, store, tmp_path):
    """The common re-run (policy missing, everything held) starts no registry client at all; a bad mirror is
    still refused at once, before the store is looked at."""
    imports = tmp_path / "imports.log"
    python = tmp_path / "python"  # the module's interpreter, logging what the module process loads
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -X importtime "$@" 2>>"{imports}"\n')
    python.chmod(0o755)
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]
    env = {"ANSIBLE_PYTHON_INTERPRETER": str(python)}
    assert run_module("image_pull", {"name": names, "store_path": store}, env=env)["changed"] is True
    assert " requests\n" in imports.read_text(), "a pull that fetches loads requests"

    imports.write_text("")
    again = run_module("image_pull", {"name": names, "store_path": store}, env=env)

    assert again["changed"] is False and not again["failed"], again
    loaded = imports.read_text()
    assert "_oci" in loaded, "the log is of the module process"
    assert " requests\n" not in loaded and "urllib3" not in loaded and "._registry\n" not in loaded
    refused = run_module("image_pull", {"name": names, "store_path": store, "mirrors": {registry.host: ["ftp://nowhere"]}})
    assert refused["failed"] and refused["reason"] == "invalid_argument", refused


def test_check_mode_predicts_exactly_what_the_real_run_does(registry, corpus, store):
    pull(registry, store, f"{registry.host}/team/app:1")
    names = [f"{registry.host}/team/worker:1", f"{registry.host}/team/multi:1"]
    mark = registry.mark()
    predicted = pull(registry, store, names, check=True, platform="linux/amd64")
    assert predicted["changed"] is True
    layer_digests = {layer["digest"] for image in predicted["images"] for layer in image["layers"]}
    assert not [path for path in blob_gets(registry.requests_since(mark)) if path.rsplit("/", 1)[1] in layer_digests]
    assert not os.path.exists(os.path.join(store, "blobs", "sha256", corpus.worker.layers[1].digest.split(":")[1]))
    assert not os.path.exists(os.path.join(store, "blobs", "sha256", corpus.worker.id.split(":")[1]))
    real = pull(registry, store, names, platform="linux/amd64")
    strip = ("changed",)
    for guess, done in zip(predicted["images"], real["images"]):
        assert {k: v for k, v in guess.items() if k not in strip} == {k: v for k, v in done.items() if k not in strip}
    assert predicted["downloaded_bytes"] == real["downloaded_bytes"]
    assert predicted["diff"] == real["diff"]
    assert real["diff"]["before"] == {f"{registry.host}/team/worker:1": None, f"{registry.host}/team/multi:1": None}
    assert real["diff"]["after"][f"{registry.host}/team/multi:1"] == corpus.multi.digest
    after = pull(registry, store, names, check=True, platform="linux/amd64")
    assert after["changed"] is False


def test_a_moved_tag_is_pulled_only_with_policy_always(registry, corpus, store):
    from support.images import Image, Pusher, make_layer

    repo = f"{registry.host}/team/moving:stable"
    first = Image([corpus.base, make_layer({"v": b"1"})])
    Pusher(registry.url).image("team/moving", "stable", first)
    pull(registry, store, repo)
    second = Image([corpus.base, make_layer({"v": b"2"})])
    Pusher(registry.url).image("team/moving", "stable", second)

    assert pull(registry, store, repo)["changed"] is False
    predicted = pull(registry, store, repo, policy="always", check=True)
    moved = pull(registry, store, repo, policy="always")
    assert predicted["changed"] is moved["changed"] is True
    assert moved["diff"] == {"before": {repo: first.digest}, "after": {repo: second.digest}}
    assert [layer["status"] for layer in moved["images"][0]["layers"]] == ["already_exists", "pull_complete"]
    entries = [e for e in index_entries(store) if e["annotations"]["org.opencontainers.image.ref.name"] == repo]
    assert len(entries) == 1 and entries[0]["annotations"]["io.dockyard.image.digest"] == second.digest


def test_a_pinned_digest_is_never_resolved_again(registry, corpus, store):
    pinned = f"{registry.host}/team/app@{corpus.app.digest}"
    mark = registry.mark()
    first = pull(registry, store, pinned, policy="always")
    assert first["changed"] is True
    assert not [r for r in registry.image_requests_since(mark) if r[0] == "HEAD"]
    mark = registry.mark()
    assert pull(registry, store, pinned, policy="always")["changed"] is False
    assert registry.requests_since(mark) == []


def test_multi_platform_index_picks_the_platform_and_skips_attestations(registry, corpus, store):
    result = pull(registry, store, f"{registry.host}/team/multi:1", platform="linux/arm64")
    image = result["images"][0]
    assert image["digest"] == corpus.multi.digest
    assert image["manifest_digest"] == corpus.arm64.digest
    assert image["platform"] == "linux/arm64" and image["platform_fallback"] is False
    assert [layer["digest"] for layer in image["layers"]] == [layer.digest for layer in corpus.arm64.layers]
    entry = index_entries(store)[0]
    assert entry["platform"] == {"architecture": "arm64", "os": "linux"}
    assert entry["digest"] == corpus.arm64.digest, "an OCI manifest is recorded as the registry served it"

    fallback = pull(registry, store, f"{registry.host}/team/multi:1", platform="linux/arm/v8")
    assert fallback["images"][0]["manifest_digest"] == corpus.armv7.digest
    assert fallback["images"][0]["platform_fallback"] is True


def test_a_missing_platform_fails_and_names_the_available_ones(registry, corpus, store):
    result = pull(registry, store, f"{registry.host}/team/multi:1", platform="linux/s390x")
    assert result["failed"] is True and result["reason"] == "platform_not_found"
    assert "linux/amd64, linux/arm64, linux/arm/v7" in result["msg"]
    assert "unknown" not in result["msg"]
    assert "team/multi" in result["msg"]


def test_a_docker_schema2_image_is_recorded_as_its_oci_equivalent(registry, corpus, store):
    pull(registry, store, f"{registry.host}/team/app:1")
    entry = index_entries(store)[0]
    blobs = os.path.join(store, "blobs", "sha256")
    with open(os.path.join(blobs, entry["digest"].split(":")[1]), "rb") as handle:
        manifest = json.load(handle)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["digest"] == corpus.app.id
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    with open(os.path.join(blobs, corpus.app.digest.split(":")[1]), "rb") as handle:
        assert handle.read() == corpus.app.manifest, "the registry's manifest is kept byte for byte"
    assert entry["annotations"]["io.dockyard.image.digest"] == corpus.app.digest
    assert entry["annotations"]["io.containerd.image.name"] == f"{registry.host}/team/app:1"


def test_a_tag_pinned_to_a_digest_is_stored_as_the_tag_and_moved_back_when_it_drifts(registry, corpus, store):
    from support.images import Image, Pusher, make_layer

    Pusher(registry.url).image("team/pinned", "stable", corpus.app)
    pinned = f"{registry.host}/team/pinned:stable@{corpus.app.digest}"
    first = pull(registry, store, pinned)
    assert first["changed"] is True and first["images"][0]["digest"] == corpus.app.digest
    entry = [e for e in index_entries(store) if "team/pinned" in e["annotations"]["org.opencontainers.image.ref.name"]]
    assert [e["annotations"]["org.opencontainers.image.ref.name"] for e in entry] == [f"{registry.host}/team/pinned:stable"]

    Pusher(registry.url).image("team/pinned", "stable", Image([corpus.base, make_layer({"drift": b"1"})]))
    pull(registry, store, f"{registry.host}/team/pinned:stable", policy="always")
    mark = registry.mark()
    back = pull(registry, store, pinned)
    assert back["changed"] is True and back["diff"]["after"][pinned] == corpus.app.digest
    assert not [r for r in registry.image_requests_since(mark) if r[0] == "HEAD"], "a pin is never resolved"
    assert pull(registry, store, pinned)["changed"] is False


def test_concurrent_pulls_into_one_store_lose_no_tag(registry, corpus, store):
    import concurrent.futures

    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1", f"{registry.host}/team/oci:1", f"{registry.host}/team/multi:1"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda name: pull(registry, store, name), names))
    assert all(result["changed"] is True for result in results), results
    tagged = sorted(entry["annotations"]["org.opencontainers.image.ref.name"] for entry in index_entries(store))
    assert tagged == sorted(names)
    assert pull(registry, store, names)["changed"] is False
