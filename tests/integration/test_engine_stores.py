"""image_pull and image_facts on the engines where containers run: Docker Engine and Podman."""

from __future__ import annotations

import json

from support.ansible import run_module
from support.images import Pusher
from support.proxy import Fault, FaultProxy
from support.registry import PASSWORD, USER


def pull(engine, names, check=False, **options):
    args = {"name": names if isinstance(names, list) else [names], "store": engine.kind, "docker_host": engine.docker_host}
    args.update(options)
    return run_module("image_pull", args, check=check, diff=True)


def facts(engine, **options):
    return run_module("image_facts", dict({"store": engine.kind, "docker_host": engine.docker_host}, **options))


def statuses(result):
    return [(layer["id"], layer["status"]) for layer in result["images"][0]["layers"]]


def test_pulling_worker_after_app_reuses_the_shared_base_layer(engine, registry, corpus):
    first = pull(engine, f"{registry.host}/team/app:1")
    assert first["changed"] is True, first
    assert first["store"]["type"] == engine.kind
    mark = registry.mark()
    second = pull(engine, f"{registry.host}/team/worker:1")
    assert second["changed"] is True, second
    assert statuses(second) == [(corpus.base.digest[7:19], "already_exists"), (corpus.worker.layers[1].digest[7:19], "pull_complete")]
    assert not [path for method, path, status in registry.requests_since(mark) if method == "GET" and corpus.base.digest in path]
    image = second["images"][0]
    assert image["id"] == corpus.worker.id
    assert image["digest"] == corpus.worker.digest
    assert engine.inspect(f"{registry.host}/team/worker:1")["Id"] == corpus.worker.id


def test_reruns_are_unchanged_and_ask_the_registry_at_most_a_head(engine, registry, corpus):
    name = f"{registry.host}/team/app:1"
    pull(engine, name)
    mark = registry.mark()
    again = pull(engine, name)
    assert again["changed"] is False and registry.requests_since(mark) == []
    always = pull(engine, name, policy="always")
    assert always["changed"] is False, always
    assert [method for method, path, status in registry.image_requests_since(mark)] == ["HEAD"]
    assert always["images"][0]["digest"] == corpus.app.digest


def test_a_policy_always_rerun_asks_about_every_image_at_once(docker_engine, registry, corpus):
    """With nothing moved, a re-run waits on one round of HEADs however many images it names, not one
    round per `concurrency` images: each HEAD is held a moment at the proxy, and all of them are there at once."""
    docker_engine.remove_all_images()
    docker_engine.kind = "docker"
    names = [f"team/wide:{n}" for n in range(1, 7)]  # more than the 3 pulls the engine runs at once
    pusher = Pusher(registry.url)
    for name in names:
        pusher.image(*name.split(":"), corpus.app)
    proxy = FaultProxy(registry.url).start()
    try:
        names = [f"{proxy.host}/{name}" for name in names]
        assert pull(docker_engine, names)["changed"] is True
        proxy.add(Fault("/manifests/", "delay", times=len(names), method="HEAD", seconds=1.0))
        proxy.most_in_flight = 0
        again = pull(docker_engine, names, policy="always")
        assert again["changed"] is False, again
        assert [method for method, path, _range, status in proxy.log[-len(names) :]] == ["HEAD"] * len(names)
        assert proxy.most_in_flight == len(names)
    finally:
        proxy.stop()


def test_an_image_named_twice_is_pulled_once(engine, registry, corpus):
    name = f"{registry.host}/team/app:1"
    mark = registry.mark()
    result = pull(engine, [name, name])
    assert [image["changed"] for image in result["images"]] == [True, False], result
    assert [image["digest"] for image in result["images"]] == [corpus.app.digest] * 2
    layer_gets = [path for method, path, status in registry.requests_since(mark) if method == "GET" and corpus.app.layers[1].digest in path]
    assert len(layer_gets) == 1, layer_gets


def test_check_mode_agrees_with_the_real_run(engine, registry, corpus):
    pull(engine, f"{registry.host}/team/app:1")
    name = f"{registry.host}/team/worker:1"
    predicted = pull(engine, name, check=True)
    assert engine.inspect(name) is None, "check mode pulled nothing"
    real = pull(engine, name)
    assert predicted["changed"] is real["changed"] is True
    assert statuses(predicted) == statuses(real)
    assert predicted["images"][0]["id"] == real["images"][0]["id"] == corpus.worker.id
    assert predicted["diff"] == real["diff"] == {"before": {name: None}, "after": {name: corpus.worker.digest}}
    assert pull(engine, name, check=True, policy="always")["changed"] is False


def test_errors_inside_the_engine_stream_fail_with_a_reason(engine, registry, corpus):
    result = pull(engine, f"{registry.host}/team/nope:1")
    assert result["failed"] and result["reason"] == "not_found", result
    assert "team/nope" in result["msg"]


def test_task_credentials_reach_the_engine_for_tls_and_token_registries(engine, tls_registry, token_registry, corpus, ca_file):
    for server in (tls_registry, token_registry):
        auth = [{"registry": server.host, "username": USER, "password": PASSWORD}]
        predicted = pull(engine, f"{server.host}/team/app:1", check=True, registry_auth=auth, ca_path=ca_file)
        assert predicted["changed"] is True, predicted
        result = pull(engine, f"{server.host}/team/app:1", registry_auth=auth)
        assert result["changed"] is True, result
        assert PASSWORD not in json.dumps(result) + result["_stdout"]
        engine.remove_all_images()
        wrong = pull(engine, f"{server.host}/team/app:1", registry_auth=[dict(auth[0], password="nope")])
        assert wrong["failed"] and wrong["reason"] == "unauthorized", wrong


def test_facts_list_images_with_layers_and_the_containers_using_them(engine, registry, corpus):
    pull(engine, [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"])
    engine.create_container(f"{registry.host}/team/app:1", "uses-app")
    found = facts(engine)
    by_ref = {image["reference"]: image for image in found["images"]}
    app = by_ref[f"{registry.host}/team/app:1"]
    assert app["id"] == corpus.app.id
    assert [layer["digest"] for layer in app["layers"]] == [layer.diff_id for layer in corpus.app.layers]
    assert [(c["name"], c["state"]) for c in app["containers"]] == [("uses-app", "created")]
    assert by_ref[f"{registry.host}/team/worker:1"]["containers"] == []
    assert sorted(found["summary"]["shared_layers"][0]["images"]) == [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]
    assert found["ansible_facts"]["dockyard_images"]["store"]["type"] == engine.kind


def test_docker_sharing_figures_equal_docker_system_df(docker_engine, registry, corpus):
    docker_engine.remove_all_images()
    docker_engine.kind = "docker"
    pull(docker_engine, [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1", f"{registry.host}/team/oci:1"])
    found = facts(docker_engine)
    status, df = docker_engine.api("GET", "/system/df")
    assert status == 200
    by_id = {image["Id"]: image for image in df["Images"]}
    for image in found["images"]:
        engine_view = by_id[image["id"]]
        assert image["size"] == engine_view["Size"]
        assert image["shared_size"] == engine_view["SharedSize"]
        assert image["unique_size"] == engine_view["Size"] - engine_view["SharedSize"]
    assert found["summary"]["unique_size"] == df["LayersSize"]
    assert found["summary"]["total_size"] == sum(image["Size"] for image in df["Images"])


def test_auto_uses_the_engine_that_answers_and_the_oci_store_otherwise(docker_engine, tmp_path):
    assert facts(docker_engine, store="auto")["store"]["type"] == "docker"
    absent = run_module("image_facts", {"store": "auto", "docker_host": f"unix://{tmp_path}/no.sock"})
    assert absent["store"]["type"] == "oci"


def test_a_layer_two_images_of_one_call_need_is_fetched_once(engine, registry, corpus):
    mark = registry.mark()
    result = pull(engine, [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"])
    app, worker = result["images"]
    assert app["layers"][0]["status"] == "pull_complete"
    assert worker["layers"][0]["status"] == "already_exists"
    base_gets = [path for method, path, status in registry.requests_since(mark) if method == "GET" and corpus.base.digest in path]
    assert len(base_gets) == 1, base_gets


def test_a_tag_pinned_to_a_digest_keeps_its_tag_on_the_engine(engine, registry, corpus):
    from support.images import Pusher

    Pusher(registry.url).image("team/enginepin", "stable", corpus.app)
    pinned = f"{registry.host}/team/enginepin:stable@{corpus.app.digest}"
    result = pull(engine, pinned)
    assert result["changed"] is True, result
    assert engine.inspect(f"{registry.host}/team/enginepin:stable")["Id"] == corpus.app.id
    assert pull(engine, pinned)["changed"] is False
