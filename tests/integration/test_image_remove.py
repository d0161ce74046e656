"""image_remove: untag or delete like docker rmi, keep what others share, count only real bytes."""

from __future__ import annotations

import os

import pytest

from support.ansible import run_module


def remove(store_args, check=False, **options):
    return run_module("image_remove", dict(store_args, **options), check=check, diff=True)


@pytest.fixture
def oci(store):
    return {"store": "oci", "store_path": store}


def blob_files(store):
    folder = os.path.join(store, "blobs", "sha256")
    return {name: os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)}


def test_removing_one_of_two_images_keeps_the_shared_base_and_frees_only_its_own_blobs(registry, corpus, oci, store):
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    run_module("image_pull", {"name": [app, worker], "store_path": store})
    before = blob_files(store)
    predicted = remove(oci, check=True, name=[app])
    assert blob_files(store) == before, "check mode deleted nothing"
    result = remove(oci, name=[app])
    after = blob_files(store)
    freed = {name: size for name, size in before.items() if name not in after}
    own = {corpus.app.layers[1].digest, corpus.app.id, corpus.app.digest}
    assert {f"sha256:{name}" for name in freed} >= own
    assert result["bytes_freed"] == sum(freed.values())
    assert result["untagged"] == [app] and result["deleted_images"] == [corpus.app.id]
    assert [layer["digest"] for layer in result["deleted_layers"]] == [corpus.app.layers[1].digest]
    assert result["kept_layers"] == [{"digest": corpus.base.digest, "size": corpus.base.size, "images": [worker]}]
    assert corpus.base.digest.split(":")[1] in after
    for key in ("untagged", "deleted_images", "deleted_layers", "kept_layers", "bytes_freed", "changed", "diff"):
        assert predicted[key] == result[key], key
    assert result["diff"] == {"before": "".join(f"{name}\n" for name in sorted([app, worker])), "after": f"{worker}\n"}
    facts = run_module("image_facts", {"store_path": store})
    assert [image["reference"] for image in facts["images"]] == [worker]
    again = remove(oci, name=[app])
    assert again["changed"] is False and again["missing"] == [app] and again["bytes_freed"] == 0


def test_removing_one_of_two_tags_of_an_image_only_untags(registry, corpus, oci, store):
    from support.images import Pusher

    Pusher(registry.url).image("team/app", "also", corpus.app)
    run_module("image_pull", {"name": [f"{registry.host}/team/app:1", f"{registry.host}/team/app:also"], "store_path": store})
    result = remove(oci, name=[f"{registry.host}/team/app:also"])
    assert result["untagged"] == [f"{registry.host}/team/app:also"]
    assert result["deleted_images"] == [] and result["deleted_layers"] == [] and result["bytes_freed"] == 0
    assert run_module("image_pull", {"name": [f"{registry.host}/team/app:1"], "store_path": store})["changed"] is False


def test_keep_removes_everything_else_and_a_multi_platform_tag_loses_only_what_is_its_own(registry, corpus, oci, store):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1", f"{registry.host}/team/multi:1"]
    run_module("image_pull", {"name": names, "store_path": store})
    run_module("image_pull", {"name": [names[2]], "store_path": store, "platform": "linux/arm64"})
    result = remove(oci, keep=[names[1]])
    assert sorted(result["untagged"]) == sorted([names[0], names[2], names[2]])
    assert result["kept_in_use"] == []
    left = blob_files(store)
    assert corpus.base.digest.split(":")[1] in left
    assert corpus.multi.digest.split(":")[1] not in left and corpus.arm64.digest.split(":")[1] not in left
    assert run_module("image_pull", {"name": [names[1]], "store_path": store})["changed"] is False


def held(store):
    return sorted(image["reference"] for image in run_module("image_facts", {"store_path": store})["images"])


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(lambda host, corpus: f"{host}/team/app@{corpus.app.digest}", id="repository@digest"),
        pytest.param(lambda host, corpus: f"{host}/team/app:1@{corpus.app.digest}", id="tag@digest"),
        pytest.param(lambda host, corpus: corpus.app.id, id="image id"),
        pytest.param(lambda host, corpus: corpus.app.id.split(":")[1][:12], id="id prefix"),
    ],
)
def test_keep_keeps_the_image_an_entry_names_in_any_form_and_removes_the_other(registry, corpus, oci, store, entry):
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    run_module("image_pull", {"name": [app, worker], "store_path": store})
    keep = [entry(registry.host, corpus)]
    predicted = remove(oci, check=True, keep=keep)
    result = remove(oci, keep=keep)
    assert result["untagged"] == [worker] and result["missing"] == [], result
    for key in ("untagged", "deleted_images", "deleted_layers", "kept_layers", "bytes_freed", "diff"):
        assert predicted[key] == result[key], key
    assert held(store) == [app]
    assert run_module("image_pull", {"name": [app], "store_path": store})["changed"] is False


def test_keep_by_index_or_platform_manifest_digest_keeps_every_platform_or_only_that_one(registry, corpus, oci, store):
    multi = f"{registry.host}/team/multi:1"
    for platform in ("linux/amd64", "linux/arm64"):
        run_module("image_pull", {"name": [multi], "store_path": store, "platform": platform})
    assert remove(oci, check=True, keep=[f"{registry.host}/team/multi@{corpus.multi.digest}"])["untagged"] == []
    result = remove(oci, keep=[f"{registry.host}/team/multi@{corpus.arm64.digest}"])
    assert result["untagged"] == [multi]
    platforms = [image["platform"] for image in run_module("image_facts", {"store_path": store})["images"]]
    assert platforms == ["linux/arm64"]


def test_a_keep_entry_that_names_no_image_fails_and_removes_nothing_in_check_mode_and_for_real(registry, corpus, oci, store):
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    run_module("image_pull", {"name": [app, worker], "store_path": store})
    before = blob_files(store)
    typos = [f"{registry.host}/team/ap:1", f"{registry.host}/team/worker@sha256:{'0' * 64}"]
    outcomes = [remove(oci, check=check, keep=[app, *typos]) for check in (True, False)]
    for outcome in outcomes:
        assert outcome["failed"] and outcome["reason"] == "invalid_argument", outcome
        assert outcome["missing"] == typos
        for text in (*typos, store, "keep_missing: ignore"):
            assert text in outcome["msg"], text
    assert outcomes[0]["msg"] == outcomes[1]["msg"], "check mode and the real run agree"
    assert blob_files(store) == before and held(store) == sorted([app, worker])

    ignored = remove(oci, keep=[app, *typos], keep_missing="ignore")
    assert ignored["untagged"] == [worker] and ignored["missing"] == typos
    assert held(store) == [app]


def test_an_empty_keep_is_refused_unless_keep_missing_is_ignore(registry, corpus, oci, store):
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    run_module("image_pull", {"name": [app, worker], "store_path": store})
    for check in (True, False):
        refused = remove(oci, check=check, keep=[])
        assert refused["failed"] and refused["reason"] == "invalid_argument", refused
        assert "keep is empty" in refused["msg"] and "keep_missing: ignore" in refused["msg"]
    assert held(store) == sorted([app, worker])
    emptied = remove(oci, keep=[], keep_missing="ignore")
    assert sorted(emptied["untagged"]) == sorted([app, worker]) and held(store) == []


@pytest.fixture
def engine_args(engine):
    return {"store": engine.kind, "docker_host": engine.docker_host}


def df_layers_size(engine):
    return engine.api("GET", "/system/df")[1]["LayersSize"]


def test_engine_removal_keeps_the_shared_base_and_frees_the_image_own_layer(engine, engine_args, registry, corpus):
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    run_module("image_pull", dict(engine_args, name=[app, worker]))
    predicted = remove(engine_args, check=True, name=[app])
    assert engine.inspect(app) is not None
    result = remove(engine_args, name=[app])
    assert engine.inspect(app) is None and engine.inspect(worker) is not None
    assert result["deleted_images"] == [corpus.app.id]
    assert [layer["digest"] for layer in result["kept_layers"]] == [corpus.base.diff_id]
    assert len(result["deleted_layers"]) == 1
    for key in ("untagged", "deleted_images", "deleted_layers", "kept_layers", "bytes_freed", "diff"):
        assert predicted[key] == result[key], key


def test_docker_bytes_freed_equal_what_docker_system_df_loses(docker_engine, registry, corpus):
    docker_engine.remove_all_images()
    args = {"store": "docker", "docker_host": docker_engine.docker_host}
    run_module("image_pull", dict(args, name=[f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]))
    before = df_layers_size(docker_engine)
    result = remove(args, name=[f"{registry.host}/team/app:1"])
    assert result["bytes_freed"] == before - df_layers_size(docker_engine) > 0


def test_an_image_a_container_uses_is_refused_and_named_unless_forced(engine, engine_args, registry, corpus):
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    run_module("image_pull", dict(engine_args, name=[app, worker]))
    engine.create_container(app, "busy-app")
    predicted = remove(engine_args, check=True, name=[worker, app])
    refused = remove(engine_args, name=[worker, app])
    for outcome in (predicted, refused):
        assert outcome["failed"] and outcome["reason"] == "in_use", outcome
        assert "busy-app" in outcome["msg"] and "team/app" in outcome["msg"]
        assert [(c["name"], c["state"], c["image"]) for c in outcome["containers"]] == [("busy-app", "created", app)]
    assert engine.inspect(worker) is not None, "nothing was removed"

    kept = remove(engine_args, keep=[], keep_missing="ignore")
    assert kept["untagged"] == [worker]
    assert kept["kept_in_use"] == [{"image": app, "containers": kept["kept_in_use"][0]["containers"]}]
    assert engine.inspect(app) is not None

    forced = remove(engine_args, name=[app], force=True)
    assert forced["changed"] is True and engine.inspect(app) is None


def test_engine_keep_by_digest_keeps_that_image_even_untagged_and_a_typo_removes_nothing(engine, engine_args, registry, corpus):
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    loose = f"{registry.host}/team/oci@{corpus.oci.digest}"  # a pull by digest leaves the image untagged
    run_module("image_pull", dict(engine_args, name=[app, worker, loose]))
    keep = [f"{registry.host}/team/app@{corpus.app.digest}", loose]

    typo = [*keep, f"{registry.host}/team/app@sha256:{'0' * 64}"]
    for outcome in (remove(engine_args, check=True, keep=typo), remove(engine_args, keep=typo)):
        assert outcome["failed"] and outcome["reason"] == "invalid_argument", outcome
        assert outcome["missing"] == typo[2:] and engine.docker_host in outcome["msg"]
    assert all(engine.inspect(name) is not None for name in (app, worker, loose)), "nothing was removed"

    predicted = remove(engine_args, check=True, keep=keep)
    result = remove(engine_args, keep=keep)
    for key in ("untagged", "deleted_images", "deleted_layers", "kept_layers", "bytes_freed", "diff"):
        assert predicted[key] == result[key], key
    assert result["untagged"] == [worker] and result["missing"] == [], result
    assert engine.inspect(worker) is None
    assert engine.inspect(app)["Id"] == corpus.app.id and engine.inspect(loose)["Id"] == corpus.oci.id


def test_a_removal_waits_for_a_pull_in_progress_and_never_collects_its_blobs(registry, corpus, oci, store):
    import fcntl

    run_module("image_pull", {"name": [f"{registry.host}/team/app:1"], "store_path": store})
    with open(os.path.join(store, ".dockyard", "gc.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # what a pull holds while it adds blobs
        blocked = remove(oci, keep=[], keep_missing="ignore", timeout=1)
    assert blocked["failed"] and blocked["reason"] == "store_locked", blocked
    assert corpus.app.layers[1].digest.split(":")[1] in blob_files(store)
