"""The fleet roles end to end: ten hosts pre-warmed through a pull-through mirror whose seed endpoint
the first one fills, a second run that moves nothing, a lockfile that pins tags, and the layer report's numbers."""
# The registry's access log counts requests as the relay saw them: that is how egress is proved here.

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
import yaml

from support.ansible import REPO, run_playbook
from support.images import Image, Pusher, make_layer

HOSTS = [f"host{n:02d}" for n in range(1, 11)]
PREWARM_MODULE_TASKS = (  # the prewarm role's tasks that run a module on the host
    "Find what each host lacks for each platform it pulls",
    "Copy the images into the mirrors' seed endpoints",
    "Find what each host lacks and how many bytes will move",
    "Pull the images",
    "Remove images not in the list",
)


@pytest.fixture
def fleet(tmp_path):
    inventory = {"all": {"hosts": {host: {"ansible_connection": "local", "prewarm_store_path": str(tmp_path / "stores" / host)} for host in HOSTS}}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return str(path)


def recap(output: str) -> dict:
    changed = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0] in HOSTS and parts[1] == ":":
            fields = dict(part.split("=") for part in parts[2:])
            changed[parts[0]] = (int(fields["changed"]), int(fields["failed"]))
    return changed


def blob_gets(requests):
    return [path.rsplit("/", 1)[1] for method, path, status in requests if method == "GET" and "/blobs/" in path]


def fleet_with_a_broken_store(tmp_path, count: int, broken: str) -> str:
    """An inventory of `count` local hosts, each with its own OCI store, but `broken`'s store path lies under a file."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text(f"a file where {broken}'s store would go")
    hosts = {f"host{n:02d}": {"ansible_connection": "local", "prewarm_store_path": str(tmp_path / "stores" / f"host{n:02d}")} for n in range(1, count + 1)}
    hosts[broken]["prewarm_store_path"] = str(blocker / "store")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    return str(inventory)


def prewarm_only(tmp_path) -> str:
    """A playbook of the prewarm role alone, without the layer report."""
    playbook = tmp_path / "prewarm-only.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Pre-warm", "hosts": "all", "gather_facts": False, "roles": ["dockyard.images.prewarm"]}]))
    return str(playbook)


def seeded(names: list, registry, mirror, tmp_path) -> dict:
    """Variables that pre-warm `names` through the mirror, the first host seeding it through its seed endpoint."""
    return {
        "prewarm_images": names,
        "prewarm_store": "oci",
        "prewarm_mirrors": {registry.host: [mirror.url]},
        "prewarm_seed": True,
        "prewarm_seed_registries": {registry.host: mirror.seed.url},
        "layer_report_dir": str(tmp_path / "report"),
    }


def test_a_fleet_prewarmed_through_a_seeded_mirror_costs_one_upstream_fetch_per_blob(registry, corpus, mirror, fleet, tmp_path):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1", f"{registry.host}/team/multi:1"]
    extra = seeded(names, registry, mirror, tmp_path)
    playbook = os.path.join(REPO, "playbooks", "prewarm.yml")
    mark = registry.mark()
    done = run_playbook(playbook, extra, args=["-i", fleet, "-f", "10"])[0]
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(changed > 0 and failed == 0 for changed, failed in recap(done.stdout).values())

    images = [corpus.app, corpus.worker, corpus.amd64]
    unique = {layer.digest for image in images for layer in image.layers} | {image.id for image in images}
    upstream = Counter(blob_gets(registry.requests_since(mark)))
    assert upstream == Counter(dict.fromkeys(unique, 1)), f"ten hosts, and the upstream served each blob once: {upstream}"
    mirror_gets = Counter(blob_gets(mirror.requests_since(0)))
    assert mirror_gets == Counter(dict.fromkeys(unique, len(HOSTS))), "every host was served by the cache"

    mark, mirror_mark, seed_mark = registry.mark(), mirror.mark(), mirror.seed.mark()
    again, results = run_playbook(playbook, extra, args=["-i", fleet, "-f", "10"])
    assert again.returncode == 0, again.stdout
    assert set(recap(again.stdout).values()) == {(0, 0)}, again.stdout
    # every host holds every image: the seed is not copied again, and no registry is asked anything
    assert registry.requests_since(mark) + mirror.requests_since(mirror_mark) + mirror.seed.requests_since(seed_mark) == []
    modules_run = Counter(r["host"] for r in results if r["status"] != "skipped" and any(task in r["task"] for task in PREWARM_MODULE_TASKS))
    assert modules_run == Counter(dict.fromkeys(HOSTS, 1)), f"an unchanged host costs the prewarm role one module run, its store read: {modules_run}"

    report = json.loads((tmp_path / "report" / "layers.json").read_text())
    per_host_logical = sum(len(image.config) + sum(layer.size for layer in image.layers) for image in images)
    per_host_physical = sum(len(image.config) for image in images) + sum({layer.digest: layer.size for image in images for layer in image.layers}.values())
    assert report["fleet"]["hosts"] == 10
    assert report["fleet"]["logical_bytes"] == 10 * per_host_logical
    assert report["fleet"]["physical_bytes"] == 10 * per_host_physical
    assert report["fleet"]["saved_bytes"] == 10 * (per_host_logical - per_host_physical)
    base = next(layer for layer in report["layers"] if layer["digest"] == corpus.base.digest)
    assert base["hosts"] == HOSTS and sorted(base["images"]) == sorted(names)
    assert all(image["missing_on"] == [] for image in report["images"])
    assert (tmp_path / "report" / "layers.html").read_text().startswith("<!DOCTYPE html>")


def test_a_fleet_of_mixed_hardware_is_seeded_for_each_platform_and_the_upstream_serves_each_blob_once(registry, corpus, mirror, tmp_path):
    """Half the hosts pull for arm64: the first host (amd64) seeds their images too, not only its own."""
    app, worker, multi = (f"{registry.host}/team/{name}:1" for name in ("app", "worker", "multi"))
    hosts = {}
    for n, host in enumerate(HOSTS):
        hosts[host] = {"ansible_connection": "local", "prewarm_store_path": str(tmp_path / "stores" / host), "prewarm_images": [app, worker, multi]}
        if n >= len(HOSTS) // 2:
            hosts[host].update(prewarm_platform="linux/arm64", prewarm_images=[multi])
    inventory = tmp_path / "mixed.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    extra = {key: value for key, value in seeded([], registry, mirror, tmp_path).items() if key != "prewarm_images"}
    playbook = os.path.join(REPO, "playbooks", "prewarm.yml")

    mark = registry.mark()
    done = run_playbook(playbook, extra, args=["-i", str(inventory), "-f", "10"])[0]
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(changed > 0 and failed == 0 for changed, failed in recap(done.stdout).values())
    images = [corpus.app, corpus.worker, corpus.amd64, corpus.arm64]
    unique = {layer.digest for image in images for layer in image.layers} | {image.id for image in images}
    upstream = Counter(blob_gets(registry.requests_since(mark)))
    assert upstream == Counter(dict.fromkeys(unique, 1)), f"both platforms seeded, and the upstream served each blob once: {upstream}"
    arm64_only = {layer.digest for layer in corpus.arm64.layers} - {layer.digest for layer in corpus.amd64.layers}
    assert all(count == len(HOSTS) // 2 for digest, count in Counter(blob_gets(mirror.requests_since(0))).items() if digest in arm64_only)

    mark, mirror_mark, seed_mark = registry.mark(), mirror.mark(), mirror.seed.mark()
    again = run_playbook(playbook, extra, args=["-i", str(inventory), "-f", "10"])[0]
    assert again.returncode == 0, again.stdout
    assert set(recap(again.stdout).values()) == {(0, 0)}, again.stdout
    assert registry.requests_since(mark) + mirror.requests_since(mirror_mark) + mirror.seed.requests_since(seed_mark) == []


def test_check_mode_with_seeding_predicts_the_copy_and_pushes_nothing(registry, corpus, mirror, fleet, tmp_path):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]
    extra = seeded(names, registry, mirror, tmp_path)
    done, results = run_playbook(os.path.join(REPO, "playbooks", "prewarm.yml"), extra, args=["-i", fleet, "--limit", "host01,host02", "--check"])
    assert done.returncode == 0, done.stdout
    copied = next(r["result"] for r in results if r["task"].endswith("each blob fetched from its registry once"))
    layers = {layer.digest: layer.size for image in (corpus.app, corpus.worker) for layer in image.layers}
    assert copied["changed"] is True
    assert copied["results"][0]["copied_bytes"] == sum(layers.values()) + len(corpus.app.config) + len(corpus.worker.config)
    assert [m for m, path, status in mirror.seed.requests_since(0) if m in ("POST", "PUT", "PATCH")] == [], "nothing was pushed"
    assert not (tmp_path / "stores").exists(), "check mode created no store"


def test_a_lockfile_pins_the_fleet_even_when_the_tag_moves(registry, corpus, fleet, tmp_path):
    Pusher(registry.url).image("team/rolling", "1", corpus.app)
    name = f"{registry.host}/team/rolling:1"
    lockfile = tmp_path / "images.lock.yml"
    extra = {"prewarm_images": [name], "prewarm_store": "oci", "prewarm_lockfile": str(lockfile), "prewarm_lock": True, "layer_report_print_tables": False}
    playbook = os.path.join(REPO, "playbooks", "prewarm.yml")
    done = run_playbook(playbook, extra, args=["-i", fleet, "--limit", "host01"])[0]
    assert done.returncode == 0, done.stdout
    assert yaml.safe_load(lockfile.read_text()) == {"images": [{"reference": name, "digest": corpus.app.digest}]}

    Pusher(registry.url).image("team/rolling", "1", Image([corpus.base, make_layer({"moved": b"1"})]))
    rest, results = run_playbook(playbook, dict(extra, prewarm_lock=False), args=["-i", fleet, "--limit", "host02,host03"])
    assert rest.returncode == 0, rest.stdout
    pulled = [r["result"] for r in results if r["task"].endswith("Pull the images") and r["host"] in ("host02", "host03")]
    assert len(pulled) == 2, [r["task"] for r in results]
    digests = {image["digest"] for result in pulled for item in result["results"] for image in item["images"]}
    assert digests == {corpus.app.digest}, "every host got the locked digest, not the moved tag"


def one_play(tmp_path, **play) -> str:
    """A playbook of one play that applies the prewarm role, with `play`'s keywords (serial, vars)."""
    playbook = tmp_path / "one-play.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Pre-warm", "hosts": "all", "gather_facts": False, **play, "roles": ["dockyard.images.prewarm"]}]))
    return str(playbook)


def test_a_lock_pins_every_host_s_own_list_across_batches_and_an_unpinned_image_fails_before_any_pull(registry, corpus, tmp_path):
    """Hosts whose inventory gives each its own list, one host per batch: the lockfile holds every list of the
    play, not the first host's nor the last batch's alone. An image added to the list later, which the lockfile
    does not pin, fails the host with its name before anything is pulled, rather than being pulled by its tag."""
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    lists = {"host01": [app], "host02": [worker], "host03": [app]}
    hosts = {host: {"ansible_connection": "local", "prewarm_store_path": str(tmp_path / host), "prewarm_images": names} for host, names in lists.items()}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    lockfile = tmp_path / "images.lock.yml"
    extra = {"prewarm_store": "oci", "prewarm_lockfile": str(lockfile), "prewarm_lock": True}

    done = run_playbook(one_play(tmp_path, serial=1), extra, args=["-i", str(inventory)])[0]

    assert done.returncode == 0, done.stdout
    pins = {entry["reference"]: entry["digest"] for entry in yaml.safe_load(lockfile.read_text())["images"]}
    assert pins == {app: corpus.app.digest, worker: corpus.worker.digest}

    Pusher(registry.url).image("team/added", "1", corpus.worker)
    relisted = dict(extra, prewarm_lock=False, prewarm_images=[app, f"{registry.host}/team/added:1"])
    (tmp_path / "host01").rename(tmp_path / "host01-before")
    again = run_playbook(one_play(tmp_path), relisted, args=["-i", str(inventory), "--limit", "host01"])[0]

    assert again.returncode != 0
    assert f"{registry.host}/team/added:1 has no digest in the lockfile" in again.stdout
    assert not (tmp_path / "host01").exists(), "nothing was pulled"


def test_a_lock_pins_the_list_the_play_gives_over_the_inventory_s(registry, corpus, tmp_path):
    """The list a host pulls is the play's when the play sets one, whatever the inventory says (even where the
    inventory's would not do): the lock pins that list, and the host pulls its pinned digest."""
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    hosts = {host: {"ansible_connection": "local", "prewarm_store_path": str(tmp_path / host)} for host in ("host01", "host02")}
    hosts["host02"]["prewarm_images"] = worker  # a string, not a list: wrong, but never used
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts, "vars": {"prewarm_images": [app]}}}))
    lockfile = tmp_path / "images.lock.yml"
    extra = {"prewarm_store": "oci", "prewarm_lockfile": str(lockfile), "prewarm_lock": True}

    done, results = run_playbook(one_play(tmp_path, vars={"prewarm_images": [worker]}), extra, args=["-i", str(inventory)])

    assert done.returncode == 0, done.stdout
    assert yaml.safe_load(lockfile.read_text()) == {"images": [{"reference": worker, "digest": corpus.worker.digest}]}
    pulled = [r["result"] for r in results if r["task"].endswith("Pull the images")]
    references = {image["reference"] for result in pulled for item in result["results"] for image in item["images"]}
    assert len(pulled) == 2 and references == {f"{worker}@{corpus.worker.digest}"}


def test_check_mode_predicts_per_host_what_would_be_pulled_and_writes_nothing(registry, corpus, fleet, tmp_path):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]
    lockfile = tmp_path / "check.lock.yml"
    extra = {"prewarm_images": names, "prewarm_store": "oci", "prewarm_lockfile": str(lockfile), "prewarm_lock": True, "layer_report_dir": str(tmp_path / "r")}
    done, results = run_playbook(os.path.join(REPO, "playbooks", "prewarm.yml"), extra, args=["-i", fleet, "--limit", "host01,host02", "--check", "--diff"])
    assert done.returncode == 0, done.stdout
    assert not [r for r in results if r["task"].endswith("Pull the images") and r["status"] != "skipped"], "check mode pulls nothing"
    pulled = [r for r in results if r["task"].endswith("Find what each host lacks and how many bytes will move")]
    assert sorted(r["host"] for r in pulled) == ["host01", "host02"]
    expected = sum(layer.size for layer in {layer.digest: layer for image in (corpus.app, corpus.worker) for layer in image.layers}.values())
    for r in pulled:
        assert r["result"]["changed"] is True
        assert sum(item["downloaded_bytes"] for item in r["result"]["results"]) == expected
    assert not lockfile.exists()
    assert not (tmp_path / "stores").exists(), "check mode created no store"


def test_a_rollout_in_batches_stops_when_too_many_hosts_fail(registry, corpus, tmp_path):
    inventory = fleet_with_a_broken_store(tmp_path, 6, "host03")
    extra = {
        "prewarm_images": [f"{registry.host}/team/app:1"],
        "prewarm_store": "oci",
        "prewarm_serial": 2,
        "prewarm_max_fail_percentage": 0,
        "layer_report_print_tables": False,
        "layer_report_dir": str(tmp_path / "report"),
    }
    done, results = run_playbook(os.path.join(REPO, "playbooks", "prewarm.yml"), extra, args=["-i", inventory])
    assert done.returncode != 0
    planned = sorted({r["host"] for r in results if r["task"].endswith("Find what each host lacks and how many bytes will move")})
    assert planned == ["host01", "host02", "host03", "host04"], "the batch after the failure never started"
    failure = next(r["result"] for r in results if r["host"] == "host03" and r["status"] == "failed")
    assert failure["results"][0]["reason"] in ("invalid_argument", "store_corrupt"), failure


def test_an_image_that_cannot_be_pulled_fails_its_host_but_the_others_arrive_and_the_plan_names_it(registry, corpus, tmp_path):
    store = tmp_path / "store"
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/nope:9", f"{registry.host}/team/worker:1"]
    extra = {"prewarm_images": names, "prewarm_store": "oci", "prewarm_store_path": str(store)}
    done, results = run_playbook(prewarm_only(tmp_path), extra, args=["-i", "localhost,", "-c", "local"])
    assert done.returncode != 0
    assert f"  {registry.host}/team/nope:9: failed, not_found" in done.stdout, "the plan names the image and why"
    failed = next(r["result"] for r in results if r["status"] == "failed")
    assert failed["results"][0]["reason"] == "not_found"
    held = {image["canonical"] for image in failed["results"][0]["images"] if not image.get("failed")}
    assert held == {names[0], names[2]}
    index = json.loads((store / "index.json").read_text())
    tagged = {m["annotations"]["io.containerd.image.name"] for m in index["manifests"]}
    assert tagged == {names[0], names[2]}, "the good images were pulled and tagged"


def test_when_the_host_that_warms_the_cache_fails_the_next_one_still_pulls(registry, corpus, mirror, tmp_path):
    """Seeding without a seed endpoint: the first host pulls through the cache before the others. When it fails,
    the next host becomes the first of the batch; it must still pull, not take itself for the one that did."""
    inventory = fleet_with_a_broken_store(tmp_path, 3, "host01")
    extra = {"prewarm_images": [f"{registry.host}/team/app:1"], "prewarm_store": "oci", "prewarm_mirrors": {registry.host: [mirror.url]}, "prewarm_seed": True}
    done = run_playbook(prewarm_only(tmp_path), extra, args=["-i", inventory])[0]
    assert done.returncode != 0 and recap(done.stdout)["host01"][1] == 1
    for host in ("host02", "host03"):
        assert (tmp_path / "stores" / host / "index.json").exists(), f"{host} pulled: {done.stdout}"


def test_a_plan_that_fails_as_a_whole_says_why_and_the_pull_still_runs(tmp_path):
    """A plan that fails before any image (here an engine that does not answer) is reported by the summary with
    its message, and the pull runs after it and fails with its reason, as it would if the engine came back."""
    extra = {"prewarm_images": ["registry.invalid/team/app:1"], "prewarm_store": "docker", "prewarm_docker_host": f"unix://{tmp_path}/none.sock"}
    done, results = run_playbook(prewarm_only(tmp_path), extra, args=["-i", "localhost,", "-c", "local"])
    assert done.returncode != 0
    summary = next(r for r in results if r["task"].endswith("Say what each host will pull"))
    assert summary["status"] == "ok" and any(line.startswith("  failed: ") for line in summary["result"]["msg"]), summary
    pulled = next(r for r in results if r["task"].endswith("Pull the images"))
    assert pulled["status"] == "failed" and pulled["result"]["results"][0]["reason"] == "unreachable", pulled


@pytest.mark.parametrize("applied", ["include_role", "roles"])
def test_a_role_applied_to_some_hosts_pins_and_pulls_them_though_the_first_host_is_left_out(registry, corpus, mirror, tmp_path, applied):
    """The role applied to every host but the first of the play, with a lock to take and seeding on: the
    hosts it runs on resolve the lock, read their stores and pull the pinned digest; the first host is left alone."""
    inventory = fleet_with_a_broken_store(tmp_path, 3, "host01")  # host01 is left out: its store is never touched
    name = f"{registry.host}/team/app:1"
    lockfile = tmp_path / "images.lock.yml"
    extra = dict(seeded([name], registry, mirror, tmp_path), prewarm_lock=True, prewarm_lockfile=str(lockfile))
    left_out = "inventory_hostname != 'host01'"
    if applied == "include_role":
        play = {"tasks": [{"ansible.builtin.include_role": {"name": "dockyard.images.prewarm"}, "when": left_out}]}
    else:
        play = {"roles": [{"role": "dockyard.images.prewarm", "when": left_out}]}
    playbook = tmp_path / "some-hosts.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Pre-warm some hosts", "hosts": "all", "gather_facts": False, **play}]))

    done, results = run_playbook(str(playbook), extra, args=["-i", inventory])

    assert done.returncode == 0, done.stdout
    assert recap(done.stdout)["host01"] == (0, 0)
    assert yaml.safe_load(lockfile.read_text()) == {"images": [{"reference": name, "digest": corpus.app.digest}]}
    pulled = {r["host"]: r["result"] for r in results if r["task"].endswith("Pull the images")}
    assert sorted(pulled) == ["host02", "host03"], [r["task"] for r in results]
    references = {image["reference"] for result in pulled.values() for item in result["results"] for image in item["images"]}
    assert references == {f"{name}@{corpus.app.digest}"}, "the hosts pulled the digest the lock resolved"
    if applied == "include_role":  # with a when on the role, a task that runs once asks the first host's when, which is false
        assert "0 of 2 hosts hold every image already" in done.stdout
