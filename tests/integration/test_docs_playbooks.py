"""The guides in docs/docsite: each page's playbook runs as the page says, against real registries, and no
page, playbook or index entry can go missing, or drift from the file the tests run, without a test failing.

A page shows its playbook inline, in a ``.. code-block:: yaml`` announced by the comment
``.. playbook: ../playbooks/<page>.yml``: antsibull-docs copies only the .rst files of docs/docsite/rst
into a docsite, so a ``literalinclude`` of the playbook would be missing there (and GitHub does not render
it either). test_every_page_shows_its_own_playbook_verbatim holds the block to the file byte for byte;
after editing a playbook, run it with DOCKYARD_SYNC_DOCS=1 to copy the playbook into its page.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from types import SimpleNamespace

import pytest
import requests
import yaml

from support.ansible import REPO, run_module, run_playbook
from support.images import Image, Pusher, make_layer
from support.registry import RegistryServer

DOCSITE = os.path.join(REPO, "docs", "docsite")
RST = os.path.join(DOCSITE, "rst")
PLAYBOOKS = os.path.join(DOCSITE, "playbooks")
PAGES = sorted(name[: -len(".rst")] for name in os.listdir(RST) if name.endswith(".rst"))
LOCAL = ("-i", "localhost,", "-c", "local")
RELEASE = "2.4.1"

_MARKER = re.compile(r"^\.\. playbook: (?P<target>\S+)\n\n\.\. code-block:: yaml\n\n", re.M)


# ---------------------------------------------------------------- the pages, the index and the README


def playbook_blocks(text: str) -> list:
    """(target, start, end, content) of each playbook block: `content` is the block dedented, as a file."""
    blocks = []
    for match in _MARKER.finditer(text):
        lines, end = [], match.end()
        for line in text[match.end() :].splitlines(keepends=True):
            if line.strip() and not line.startswith("   "):
                break
            lines.append(line[3:] if line.strip() else "\n")
            end += len(line)
        while lines and lines[-1] == "\n":
            end -= 1
            lines.pop()
        blocks.append((match["target"], match.start(), end, "".join(lines)))
    return blocks


def indented(content: str) -> str:
    return "".join(f"   {line}" if line.strip() else "\n" for line in content.splitlines(keepends=True))


def test_extra_docs_lists_every_page_once():
    with open(os.path.join(DOCSITE, "extra-docs.yml"), encoding="utf-8") as handle:
        index = yaml.safe_load(handle)
    assert all(set(section) == {"title", "toctree"} for section in index["sections"]), index
    listed = [entry for section in index["sections"] for entry in section["toctree"]]
    assert sorted(listed) == PAGES and len(set(listed)) == len(listed), f"extra-docs.yml lists {listed}, the pages are {PAGES}"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_its_own_playbook_verbatim(page):
    path = os.path.join(RST, f"{page}.rst")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    # antsibull-docs takes a page into the docsite only with a label in the collection's namespace
    assert text.startswith(f".. _ansible_collections.dockyard.images.docsite.{page}:\n"), "the page's label"
    blocks = playbook_blocks(text)
    assert [block[0] for block in blocks] == [f"../playbooks/{page}.yml"], f"{page}.rst shows exactly its own playbook"
    target, start, end, shown = blocks[0]
    playbook = os.path.normpath(os.path.join(RST, target))
    assert os.path.isfile(playbook), f"{target} is missing"
    with open(playbook, encoding="utf-8") as handle:
        content = handle.read()
    if shown != content and os.environ.get("DOCKYARD_SYNC_DOCS") == "1":
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text[: start + len(f".. playbook: {target}\n\n.. code-block:: yaml\n\n")] + indented(content) + text[end:])
        return
    assert shown == content, f"{page}.rst no longer shows {target} as it is: run this test with DOCKYARD_SYNC_DOCS=1 to copy it in"


def test_every_playbook_is_shown_by_exactly_one_page():
    shown = Counter()
    for page in PAGES:
        with open(os.path.join(RST, f"{page}.rst"), encoding="utf-8") as handle:
            shown.update(os.path.normpath(os.path.join(RST, block[0])) for block in playbook_blocks(handle.read()))
    playbooks = {os.path.join(PLAYBOOKS, name) for name in os.listdir(PLAYBOOKS)}
    assert {path: shown[path] for path in playbooks} == dict.fromkeys(playbooks, 1)
    assert set(shown) <= playbooks


def test_the_readme_links_every_page_and_every_page_has_a_test_that_runs_its_playbook():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert [page for page in PAGES if f"(docs/docsite/rst/{page}.rst)" not in readme] == [], "README's Guides list"
    tests = [name for name in globals() if name.startswith("test_")]
    assert [page for page in PAGES if not any(name.startswith(f"test_{page}_") for name in tests)] == []


# ---------------------------------------------------------------- running the playbooks


@pytest.fixture(scope="module")
def release(registry, corpus):
    """The images the guides name, as `registry` serves them: team/{api,worker,web}:2.4.1 (web for three
    platforms) and an older team/api:2.3.0."""
    pusher = Pusher(registry.url)
    pusher.image("team/api", RELEASE, corpus.app)
    pusher.image("team/worker", RELEASE, corpus.worker)
    pusher.index("team/web", RELEASE, corpus.multi)
    pusher.image("team/api", "2.3.0", corpus.oci)
    names = {repo: f"{registry.host}/team/{repo}:{RELEASE}" for repo in ("api", "worker", "web")}
    # what each tag names at the registry, and the image this (linux/amd64) host gets for it
    digests = {names["api"]: corpus.app.digest, names["worker"]: corpus.worker.digest, names["web"]: corpus.multi.digest}
    return SimpleNamespace(names=names, digests=digests, images=[corpus.app, corpus.worker, corpus.amd64])


@pytest.fixture(autouse=True)
def nothing_written_next_to_the_playbooks():
    """Every test points the guides' outputs (stores, lockfile, report) elsewhere: docs/ stays as it is."""
    before = files_under(DOCSITE)
    yield
    assert files_under(DOCSITE) == before


def files_under(top: str) -> set:
    return {os.path.join(path, name) for path, dirs, names in os.walk(top) for name in names}


def play(page: str, extra: dict, args: tuple = LOCAL) -> tuple:
    return run_playbook(os.path.join(PLAYBOOKS, f"{page}.yml"), extra, args=list(args))


def recap(output: str) -> dict:
    """host: changed count, from the PLAY RECAP."""
    return {m["host"]: int(m["changed"]) for m in re.finditer(r"^(?P<host>\S+)\s+: ok=\d+\s+changed=(?P<changed>\d+)", output, re.M)}


def results_of(results: list, task: str) -> list:
    return [entry for entry in results if entry["task"].endswith(task)]


def held(store: str) -> dict:
    """reference: registry digest, for every image the OCI store holds."""
    facts = run_module("image_facts", {"store": "oci", "store_path": store})
    assert not facts["failed"], facts
    return {image["canonical"]: image["digest"] for image in facts["images"]}


def unique_blobs(images: list) -> dict:
    return {layer.digest: layer.size for image in images for layer in image.layers} | {image.id: len(image.config) for image in images}


def blob_gets(requests_seen) -> Counter:
    return Counter(path.rsplit("/", 1)[1] for method, path, status in requests_seen if method == "GET" and "/blobs/" in path)


def test_prewarm_a_fleet_pulls_the_release_and_a_second_run_changes_nothing(registry, release, tmp_path):
    store = str(tmp_path / "store")
    extra = {"registry": registry.host, "fleet_hosts": "all", "prewarm_store": "oci", "prewarm_store_path": store}

    done, results = play("prewarm_a_fleet", extra)
    assert done.returncode == 0, done.stdout + done.stderr
    pulled = results_of(results, "Pull the images")[0]["result"]["results"][0]
    assert pulled["downloaded_bytes"] == sum(layer.size for layer in {layer.digest: layer for image in release.images for layer in image.layers}.values())
    plan = done.stdout.index("3 of 3 images to pull: ")
    pull = done.stdout.index("TASK [dockyard.images.prewarm : Pull the images]")
    assert plan < pull < done.stdout.index("3 pulled, 0 already here: "), "the plan, then the pull"
    assert done.stdout.count(f"  {registry.host}/") >= 6, "a line per image in the plan and after the pull"
    assert held(store) == release.digests, "image_facts lists the release, each tag at the registry's digest"

    mark = registry.mark()
    again = play("prewarm_a_fleet", extra)[0]
    assert again.returncode == 0, again.stdout
    assert recap(again.stdout) == {"localhost": 0}
    assert "nothing to pull: 3 images already here" in again.stdout
    assert registry.requests_since(mark) == [], "a second run asks the registry nothing"


def test_pin_with_a_lockfile_pins_every_host_even_when_the_tag_moves(registry, corpus, tmp_path):
    release = "2.5.0"  # tags of this test's own, as it moves one
    pusher = Pusher(registry.url)
    pusher.image("team/api", release, corpus.app)
    pusher.image("team/worker", release, corpus.worker)
    pusher.index("team/web", release, corpus.multi)
    lockfile = tmp_path / "images.lock.yml"
    extra = {"registry": registry.host, "release": release, "fleet_hosts": "all", "prewarm_store": "oci", "prewarm_lockfile": str(lockfile)}

    first = dict(extra, prewarm_store_path=str(tmp_path / "first"))
    refused = play("pin_with_a_lockfile", first)[0]
    assert refused.returncode != 0
    assert "run this playbook once with -e prewarm_lock=true" in refused.stdout
    assert not (tmp_path / "first").exists(), "nothing happened without a lockfile"

    done = play("pin_with_a_lockfile", dict(first, prewarm_lock=True))[0]
    assert done.returncode == 0, done.stdout + done.stderr
    pinned = [
        (f"{registry.host}/team/{repo}:{release}", image.digest) for repo, image in (("api", corpus.app), ("worker", corpus.worker), ("web", corpus.multi))
    ]
    assert yaml.safe_load(lockfile.read_text()) == {"images": [{"reference": name, "digest": digest} for name, digest in pinned]}

    pusher.image("team/api", release, Image([corpus.base, make_layer({"moved": release.encode()})]))
    later = dict(extra, prewarm_store_path=str(tmp_path / "later"))
    rest = play("pin_with_a_lockfile", later)[0]
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert held(str(tmp_path / "later")) == dict(pinned), "the host pulled the pinned digests, under their tags, not the moved tag"

    mark = registry.mark()
    again = play("pin_with_a_lockfile", later)[0]
    assert again.returncode == 0 and recap(again.stdout) == {"localhost": 0}, again.stdout
    assert registry.requests_since(mark) == [], "pinned images a host holds are not asked about again"


def test_seed_a_mirror_has_the_upstream_send_each_blob_once_for_the_whole_fleet(registry, release, mirror, tmp_path):
    hosts = ["app-1", "app-2", "app-3"]
    inventory = tmp_path / "inventory.yml"
    stores = {host: str(tmp_path / "stores" / host) for host in hosts}
    inventory.write_text(
        yaml.safe_dump({"app_servers": {"hosts": {host: {"ansible_connection": "local", "prewarm_store_path": stores[host]} for host in hosts}}})
    )
    extra = {"registry": registry.host, "mirror": mirror.url, "seed_endpoint": mirror.seed.url, "prewarm_store": "oci"}

    mark = registry.mark()
    done, results = play("seed_a_mirror", extra, args=["-i", str(inventory), "-f", "3"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert [entry["host"] for entry in results_of(results, "each blob fetched from its registry once")] == ["app-1"], "the first host seeds"
    unique = unique_blobs(release.images)
    assert blob_gets(registry.requests_since(mark)) == Counter(dict.fromkeys(unique, 1)), "the upstream sent each blob once"
    assert blob_gets(mirror.requests_since(0)) == Counter(dict.fromkeys(unique, len(hosts))), "the cache served every host"
    pulled = {
        entry["host"]: {image["canonical"]: image["digest"] for image in entry["result"]["results"][0]["images"]}
        for entry in results_of(results, "Pull the images")
    }
    assert pulled == dict.fromkeys(hosts, release.digests)

    marks = registry.mark(), mirror.mark(), mirror.seed.mark()
    again = play("seed_a_mirror", extra, args=["-i", str(inventory), "-f", "3"])[0]
    assert again.returncode == 0, again.stdout
    assert recap(again.stdout) == dict.fromkeys(hosts, 0)
    assert [server.requests_since(m) for server, m in zip((registry, mirror, mirror.seed), marks)] == [[], [], []], "nothing to seed, nothing asked"


def test_scale_seeds_each_site_cache_once_and_each_batch_pulls_through_its_own_site(registry, release, mirror, tmp_path):
    """Two sites of two hosts, each through a cache of its own, one host at a time: the upstream sends each blob
    once per site, each cache serves only its site's hosts, and a second run asks nobody anything."""
    storage = str(tmp_path / "east-storage")
    east = RegistryServer(str(tmp_path / "east"), proxy={"remoteurl": registry.url}, storage=storage).start()
    east.seed = RegistryServer(str(tmp_path / "east-seed"), storage=storage).start()
    try:
        caches = {"west": mirror, "east": east}
        sites = {site: [f"{site}-{n}" for n in range(1, 3)] for site in caches}
        inventory = {
            site: {
                "hosts": {host: {"ansible_connection": "local", "prewarm_store_path": str(tmp_path / "stores" / host)} for host in hosts},
                "vars": {"site_cache": caches[site].url, "site_seed_endpoint": caches[site].seed.url},
            }
            for site, hosts in sites.items()
        }
        path = tmp_path / "inventory.yml"
        path.write_text(yaml.safe_dump(inventory))
        unique = unique_blobs(release.images)
        common = {"registry": registry.host, "prewarm_store": "oci", "batch": 1}
        for site, hosts in sites.items():
            marks = registry.mark(), caches[site].mark()
            done, results = play("scale", dict(common, site=site), args=["-i", str(path)])
            assert done.returncode == 0, done.stdout + done.stderr
            seeders = [entry["host"] for entry in results_of(results, "each blob fetched from its registry once") if entry["status"] != "skipped"]
            assert seeders == hosts, "the first host of each batch seeds what its batch lacks"
            assert blob_gets(registry.requests_since(marks[0])) == Counter(dict.fromkeys(unique, 1)), f"{site}: the upstream sent each blob once"
            assert blob_gets(caches[site].requests_since(marks[1])) == Counter(dict.fromkeys(unique, len(hosts))), f"{site}: its cache served its hosts"
            for host in hosts:
                assert held(str(tmp_path / "stores" / host)) == release.digests
        for site in sites:
            servers = (registry, mirror, mirror.seed, east, east.seed)
            marks = [server.mark() for server in servers]
            again = play("scale", dict(common, site=site), args=["-i", str(path)])[0]
            assert again.returncode == 0, again.stdout
            assert set(recap(again.stdout).values()) == {0}
            assert [server.requests_since(m) for server, m in zip(servers, marks)] == [[]] * len(servers), "nothing to seed, nothing asked"
    finally:
        east.seed.stop()
        east.stop()


def test_report_layer_sharing_counts_the_shared_base_once(registry, release, tmp_path):
    store, report = str(tmp_path / "store"), tmp_path / "report"
    pulled = run_module("image_pull", {"name": list(release.names.values()), "store": "oci", "store_path": store})
    assert not pulled["failed"], pulled
    extra = {"fleet_hosts": "all", "layer_report_store": "oci", "layer_report_store_path": store, "layer_report_dir": str(report)}

    done = play("report_layer_sharing", extra)[0]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "REPOSITORY" in done.stdout and "saved by sharing" in done.stdout
    fleet = json.loads((report / "layers.json").read_text())
    logical = sum(len(image.config) + sum(layer.size for layer in image.layers) for image in release.images)
    physical = sum(unique_blobs(release.images).values())
    base = release.images[0].layers[0]
    assert (fleet["fleet"]["hosts"], fleet["fleet"]["images"]) == (1, 3)
    assert (fleet["fleet"]["logical_bytes"], fleet["fleet"]["physical_bytes"]) == (logical, physical)
    assert fleet["fleet"]["saved_bytes"] == 2 * base.size, "three images share the base: two copies saved"
    shared = next(layer for layer in fleet["layers"] if layer["digest"] == base.digest)
    assert sorted(shared["images"]) == sorted(release.names.values()) and shared["hosts"] == ["localhost"]
    assert (report / "layers.html").read_text().startswith("<!DOCTYPE html>")
    assert (report / "layers.md").read_text().startswith("# Layer report")


def test_clean_up_safely_keeps_what_the_list_names_and_removes_the_rest(registry, corpus, release, tmp_path):
    store = str(tmp_path / "store")
    old = [f"{registry.host}/team/api:2.3.0", f"{registry.host}/team/app:1"]  # team/app:1 is the same image as api:2.4.1
    pulled = run_module("image_pull", {"name": [*release.names.values(), *old], "store": "oci", "store_path": store})
    assert not pulled["failed"], pulled
    index = tmp_path / "store" / "index.json"
    before = index.read_bytes()
    extra = {"registry": registry.host, "fleet_hosts": "all", "cleanup_store": "oci", "cleanup_store_path": store}

    checked, results = play("clean_up_safely", extra, args=[*LOCAL, "--check"])
    assert checked.returncode == 0, checked.stdout
    assert sorted(results_of(results, "not used by a container")[0]["result"]["untagged"]) == sorted(old)
    assert "Would remove:" in checked.stdout
    assert index.read_bytes() == before, "check mode removes nothing"

    done, results = play("clean_up_safely", extra)
    assert done.returncode == 0, done.stdout + done.stderr
    removed = results_of(results, "not used by a container")[0]["result"]
    assert sorted(removed["untagged"]) == sorted(old)
    assert removed["bytes_freed"] == sum(layer.size for layer in corpus.oci.layers) + len(corpus.oci.config) + len(corpus.oci.manifest), (
        "only api:2.3.0's own blobs are freed: team/app:1 shares everything with api:2.4.1"
    )
    assert corpus.base.digest not in {layer["digest"] for layer in removed["deleted_layers"]}
    assert held(store) == release.digests, "the kept images are all there"

    again = play("clean_up_safely", extra)[0]
    assert again.returncode == 0 and recap(again.stdout) == {"localhost": 0}, again.stdout


@pytest.fixture
def airgap(tmp_path):
    server = RegistryServer(str(tmp_path / "airgap")).start()
    yield server
    server.stop()


def test_copy_into_an_air_gapped_registry_keeps_every_digest(registry, corpus, release, airgap, tmp_path):
    extra = {"registry": registry.host, "airgap_registry": airgap.host}

    checked, results = play("copy_into_an_air_gapped_registry", extra, args=[*LOCAL, "--check"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert results_of(results, "only the blobs the air-gapped registry lacks")[0]["result"]["changed"] is True
    assert requests.get(f"{airgap.url}/v2/_catalog", timeout=10).json()["repositories"] == [], "check mode pushed nothing"

    done, results = play("copy_into_an_air_gapped_registry", extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert results_of(results, "same digest inside as outside")[0]["status"] == "ok"
    accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    for name, digest in release.digests.items():
        inside = requests.head(f"{airgap.url}/v2/{name.split('/', 1)[1].replace(':', '/manifests/')}", headers={"Accept": accept}, timeout=10)
        assert inside.headers["Docker-Content-Digest"] == digest, name
    arm64_only = corpus.arm64.layers[1].digest
    assert requests.head(f"{airgap.url}/v2/team/web/blobs/{arm64_only}", timeout=10).status_code == 200, "every platform was copied"

    mark = registry.mark()
    again = play("copy_into_an_air_gapped_registry", extra)[0]
    assert again.returncode == 0 and recap(again.stdout) == {"localhost": 0}, again.stdout
    heads = sorted(("HEAD", f"/v2/team/{repo}/manifests/{RELEASE}") for repo in ("api", "worker", "web"))
    assert sorted((method, path) for method, path, status in registry.image_requests_since(mark)) == heads

    # inside, hosts keep the outside names (and lockfile pins) and ask the air-gapped registry as a mirror
    mark = registry.mark()
    pinned = f"{release.names['web']}@{corpus.multi.digest}"
    inside = run_module(
        "image_pull", {"name": [release.names["api"], pinned], "store": "oci", "store_path": str(tmp_path / "inside"), "mirrors": {registry.host: [airgap.url]}}
    )
    assert not inside["failed"] and [image["changed"] for image in inside["images"]] == [True, True], inside
    assert registry.requests_since(mark) == [], "the outside registry was not needed"


def test_airgap_fleet_sends_each_host_only_what_it_lacks_from_one_pull_on_the_controller(registry, corpus, release, tmp_path):
    hosts = ["air-1", "air-2"]
    stores = {host: str(tmp_path / "stores" / host) for host in hosts}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump({"airgap_servers": {"hosts": {host: {"ansible_connection": "local", "prewarm_store_path": stores[host]} for host in hosts}}})
    )
    # air-2 holds the previous release's api, the same image as 2.4.1's, and with it the base all three share
    held_before = run_module("image_pull", {"name": [release.names["api"]], "store": "oci", "store_path": stores["air-2"]})
    assert not held_before["failed"], held_before
    extra = {"registry": registry.host, "prewarm_source_path": str(tmp_path / "controller")}
    args = ["-i", str(inventory), "-f", "2"]
    # every manifest, config and layer of the release once (web's index aside: see the bounds below)
    everything = len(corpus.app.manifest) + len(corpus.worker.manifest) + len(corpus.amd64.manifest) + sum(unique_blobs(release.images).values())
    api = len(corpus.app.manifest) + len(corpus.app.config) + sum(layer.size for layer in corpus.app.layers)

    mark = registry.mark()
    checked, results = play("airgap_fleet", extra, args=[*args, "--check"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    planned = {entry["host"]: entry["result"]["results"][0]["sent_bytes"] for entry in results_of(results, "how many bytes will be sent")}
    assert everything <= planned["air-1"] <= everything + len(corpus.multi.manifest), planned
    assert planned["air-1"] - planned["air-2"] == api, "air-2 is not sent what it holds: api's manifest, config and layers, the base among them"
    assert "3 of 3 images to deliver: " in checked.stdout and "2 of 3 images to deliver: " in checked.stdout
    assert not os.path.exists(stores["air-1"]) and held(stores["air-2"]) == {release.names["api"]: corpus.app.digest}, "check mode changes no host"
    assert blob_gets(registry.requests_since(mark)) == Counter(dict.fromkeys(unique_blobs(release.images), 1)), "the controller pulled each blob once"

    mark = registry.mark()
    done, results = play("airgap_fleet", extra, args=args)
    assert done.returncode == 0, done.stdout + done.stderr
    sent = {entry["host"]: entry["result"]["results"][0]["sent_bytes"] for entry in results_of(results, "Deliver the images")}
    assert sent == planned, "each host got what its plan said"
    assert "3 delivered, 0 already here: " in done.stdout and "2 delivered, 1 already here: " in done.stdout
    ids = {release.names["api"]: corpus.app.id, release.names["worker"]: corpus.worker.id, release.names["web"]: corpus.amd64.id}
    for host in hosts:
        facts = run_module("image_facts", {"store": "oci", "store_path": stores[host]})
        assert {image["canonical"]: image["id"] for image in facts["images"]} == ids, f"{host} holds the release, web for its own platform"

    again = play("airgap_fleet", extra, args=args)[0]
    assert again.returncode == 0, again.stdout
    assert recap(again.stdout) == dict.fromkeys(hosts, 0)
    assert again.stdout.count("nothing to deliver: 3 images already here") == 2
    assert registry.requests_since(mark) == [], "the controller's store had the release: no registry was asked"
