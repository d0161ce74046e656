"""The containerd store against a real containerd (Debian's, with its CRI plugin on): what we pull is
complete, unpacked and runs; what containerd pulled itself is listed and removed; containers block
removals; a second pull asks the registry nothing; bytes freed are what containerd really lost."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import time
import uuid

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._auth import CredentialStore
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._platform import host_platform, parse_platform
from ansible_collections.dockyard.images.plugins.module_utils._reference import parse_reference
from ansible_collections.dockyard.images.plugins.module_utils._registry import RegistryClient
from ansible_collections.dockyard.images.plugins.module_utils._stores import (
    ALREADY_EXISTS,
    PULL_COMPLETE,
    PullRequest,
    RemovalRequest,
    StoreOptions,
    image_label,
    open_store,
)
from ansible_collections.dockyard.images.plugins.module_utils._transport import RegistryOptions
from support.ansible import run_module
from support.cri import CriImage, ImageService
from support.images import Image, Layer, Pusher
from support.proxy import Fault

TOP_FILE = "dockyard/hello.txt"
TOP_TEXT = b"hello from the top layer\n"


def executable_layer(files: dict) -> Layer:
    """A tar+gzip layer of `files` (path → bytes), every file executable."""
    import gzip

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(content), 1700000000, 0o755
            tar.addfile(info, io.BytesIO(content))
    raw = buffer.getvalue()
    return Layer(raw, gzip.compress(raw, compresslevel=1, mtime=0))


def host_cat_files() -> dict:
    """The host's cat and the shared libraries it loads, at the same paths: enough to run it in a container."""
    files = {"bin/cat": open("/usr/bin/cat", "rb").read()}  # noqa: SIM115
    for line in subprocess.run(["ldd", "/usr/bin/cat"], capture_output=True, text=True, check=True).stdout.splitlines():
        found = re.search(r"(/\S+)", line.split("=>")[-1])
        if found and os.path.exists(found.group(1)):
            with open(found.group(1), "rb") as handle:
                files[found.group(1).lstrip("/")] = handle.read()
    return files


@pytest.fixture(scope="session")
def runnable(registry):
    """An image that runs on this host: the host's cat in its base layer, a text file in its top layer."""
    image = Image([executable_layer(host_cat_files()), executable_layer({TOP_FILE: TOP_TEXT})], architecture=host_platform().architecture)
    Pusher(registry.url).image("team/runnable", "1", image)
    return image


@pytest.fixture
def containerd(containerd_service):
    containerd_service.remove_all()
    return containerd_service


@pytest.fixture
def store(containerd):
    return open_store("containerd", StoreOptions(containerd_address=containerd.socket_path))


def client() -> RegistryClient:
    return RegistryClient(CredentialStore([]), RegistryOptions())


def pull(store, names, platform=None, check_mode=False, policy="missing"):
    wanted = parse_platform(platform) if platform else host_platform()
    requests = [PullRequest(parse_reference(name), wanted, platform_explicit=platform is not None, policy=policy) for name in names]
    results = store.puller(client(), 3, check_mode).pull(requests)
    for result in results:
        assert result.error is None, result.error
    return results


def checked(containerd) -> dict:
    """`ctr images check`: name → (status, unpacked)."""
    rows = [line.split() for line in containerd.ok("images", "check").splitlines()[1:]]
    return {row[0]: (row[3], row[-1]) for row in rows if len(row) >= 6}


def content_sizes(containerd) -> dict:
    """digest → size of every blob of the namespace, as containerd serves it (a blob its garbage
    collector takes between the listing and the reading, left by an earlier test, is left out)."""
    sizes = {}
    for digest in containerd.ok("content", "ls", "--quiet").split():
        done = subprocess.run(containerd.ctr("content", "get", digest).args, capture_output=True, check=False)
        if done.returncode == 0:
            sizes[digest] = len(done.stdout)
    return sizes


def wait_for_cri_id(containerd, image_id: str) -> None:
    """The CRI plugin names each image it sees by its id too; wait until it has, so removals meet it."""
    deadline = time.monotonic() + 10
    while image_id not in containerd.image_names():
        assert time.monotonic() < deadline, f"the CRI plugin never named {image_id}"
        time.sleep(0.05)


def test_pulled_images_are_complete_unpacked_shared_and_run(store, containerd, cri, registry, corpus, runnable):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1", f"{registry.host}/team/multi:1", f"{registry.host}/team/runnable:1"]
    app, worker, multi, run = pull(store, names)
    assert [layer.status for layer in app.layers] == [PULL_COMPLETE, PULL_COMPLETE]
    assert [layer.status for layer in worker.layers] == [ALREADY_EXISTS, PULL_COMPLETE], "the base layer came with app"
    assert multi.digest == corpus.multi.digest and multi.manifest_digest == corpus.amd64.digest and multi.id == corpus.amd64.id
    held = containerd.image_names()
    for name, result in zip(names, (app, worker, multi, run)):
        assert held[name] == result.digest, "tagged under its full reference with the registry's digest"
    status = checked(containerd)
    for name in names:
        assert status[name] == ("complete", "true"), f"{name}: {status.get(name)}"
    for name, result in zip(names, (app, worker, multi, run)):  # the kubelet sees each image by its name and id, at our digest
        assert wait_for_cri_image(cri, name).id == result.id
        assert cri.image_status(result.id).repo_tags == (name,)
        assert containerd.image_names()[result.id] == result.digest, "the CRI plugin's id name"
    assert corpus.arm64.digest not in containerd.ok("content", "ls", "--quiet"), "one platform only"
    container = f"dockyard-{uuid.uuid4().hex[:8]}"
    ran = containerd.ctr("run", "--rm", "--snapshotter", "overlayfs", names[3], container, "/bin/cat", f"/{TOP_FILE}")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.encode() == TOP_TEXT


def test_images_lists_tags_with_their_layers_and_hides_the_cri_ids(store, containerd, registry, corpus):
    pull(store, [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"])
    wait_for_cri_id(containerd, corpus.app.id)
    records = {record.reference.familiar: record for record in store.images()}
    assert set(records) == {f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"}
    app = records[f"{registry.host}/team/app:1"]
    assert app.id == corpus.app.id and app.digest == corpus.app.digest == app.manifest_digest
    assert [(layer.digest, layer.size) for layer in app.layers] == [(layer.digest, layer.size) for layer in corpus.app.layers]
    assert str(app.platform) == "linux/amd64" and app.created == corpus.app.created
    assert app.containers == []


def test_a_second_pull_moves_nothing_and_asks_the_registry_nothing(store, registry, corpus):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1", f"{registry.host}/team/multi:1"]
    pull(store, names)
    mark = registry.mark()
    again = pull(store, names)
    assert registry.requests_since(mark) == []
    assert not any(result.changed for result in again)
    assert sum(result.downloaded_bytes for result in again) == 0
    assert [result.id for result in again] == [corpus.app.id, corpus.worker.id, corpus.amd64.id]


def test_policy_always_sends_one_head_per_tag_and_nothing_else(store, registry, corpus):
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]
    pull(store, names)
    mark = registry.mark()
    again = pull(store, names, policy="always")
    assert not any(result.changed for result in again)
    assert sorted(method for method, _path, _status in registry.image_requests_since(mark)) == ["HEAD", "HEAD"]


def test_check_mode_writes_nothing(store, containerd, registry, corpus):
    predicted = pull(store, [f"{registry.host}/team/app:1"], check_mode=True)
    assert predicted[0].changed and [layer.status for layer in predicted[0].layers] == [PULL_COMPLETE, PULL_COMPLETE]
    assert containerd.image_names() == {}
    assert containerd.ok("content", "ls", "--quiet").split() == []


def test_a_platform_other_than_the_hosts_is_imported_for_that_platform(store, containerd, registry, corpus):
    (result,) = pull(store, [f"{registry.host}/team/multi:1"], platform="linux/arm64")
    assert result.manifest_digest == corpus.arm64.digest and result.platform == "linux/arm64"
    held = containerd.ok("content", "ls", "--quiet").split()
    assert corpus.arm64.digest in held and corpus.amd64.digest not in held
    (record,) = store.images()
    assert str(record.platform) == "linux/arm64" and record.id == corpus.arm64.id
    assert containerd.ok("snapshots", "ls").count("Committed") == len(corpus.arm64.layers), "unpacked"


def test_an_image_containerd_pulled_itself_is_listed_and_removed_cleanly(store, containerd, registry, corpus):
    name = f"{registry.host}/team/oci:1"
    containerd.ok("images", "pull", "--plain-http", name)
    wait_for_cri_id(containerd, corpus.oci.id)
    (record,) = store.images()
    assert record.reference.familiar == name and record.id == corpus.oci.id and record.digest == corpus.oci.digest
    assert [layer.digest for layer in record.layers] == [layer.digest for layer in corpus.oci.layers]
    before = content_sizes(containerd)
    planned = store.remove(RemovalRequest(names=[name]), check_mode=True)
    assert containerd.image_names() != {}, "check mode removed nothing"
    done = store.remove(RemovalRequest(names=[name]), check_mode=False)
    assert containerd.image_names() == {}, "the tag and the CRI plugin's id name are both gone"
    after = containerd.ok("content", "ls", "--quiet").split()
    freed_by_containerd = sum(size for digest, size in before.items() if digest not in after)
    assert planned.bytes_freed == done.bytes_freed == freed_by_containerd > 0
    assert after == []
    assert containerd.ok("snapshots", "ls").count("Committed") == 0, "containerd collected the snapshots too"
    assert [layer.digest for layer in done.deleted_layers] == [layer.digest for layer in corpus.oci.layers]


def test_removing_one_of_two_images_frees_only_what_it_alone_used(store, containerd, registry, corpus):
    app, worker = f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"
    pull(store, [app, worker])
    wait_for_cri_id(containerd, corpus.app.id)
    before = content_sizes(containerd)
    done = store.remove(RemovalRequest(names=[app]), check_mode=False)
    after = containerd.ok("content", "ls", "--quiet").split()
    assert done.bytes_freed == sum(size for digest, size in before.items() if digest not in after)
    assert corpus.app.layers[0].digest in after, "the base stays for worker"
    assert set(before) - set(after) == {corpus.app.digest, corpus.app.id, corpus.app.layers[1].digest}
    assert set(containerd.image_names()) - {corpus.worker.id} == {worker, f"{registry.host}/team/worker@{corpus.worker.digest}"}


def test_a_container_blocks_the_removal_of_its_image_and_is_named(store, containerd, registry, corpus):
    name = f"{registry.host}/team/app:1"
    pull(store, [name])
    containerd.ok("containers", "create", "--snapshotter", "overlayfs", name, "blocker-1")
    (record,) = store.images()
    assert [(c["name"], c["state"]) for c in record.containers] == [("blocker-1", "created")]
    for check_mode in (True, False):
        with pytest.raises(DockyardError) as refused:
            store.remove(RemovalRequest(names=[name]), check_mode=check_mode)
        assert refused.value.reason == "in_use" and "blocker-1" in refused.value.message
    assert name in containerd.image_names()
    keep_all_else = store.remove(RemovalRequest(keep=[f"{registry.host}/team/worker:1"], keep_missing="ignore"), check_mode=False)
    assert keep_all_else.untagged == [] and [r.id for r in keep_all_else.in_use] == [corpus.app.id]
    forced = store.remove(RemovalRequest(names=[name], force=True), check_mode=False)
    assert forced.untagged == [name]
    assert name not in containerd.image_names()


def test_an_unreachable_containerd_fails_with_a_reason_at_once(tmp_path):
    store = open_store("containerd", StoreOptions(containerd_address=str(tmp_path / "no.sock")))
    started = time.monotonic()
    with pytest.raises(DockyardError) as failed:
        store.images()
    assert failed.value.reason == "unreachable" and str(tmp_path / "no.sock") in failed.value.message
    assert time.monotonic() - started < 1
    with pytest.raises(DockyardError) as invalid:
        open_store("containerd", StoreOptions(containerd_namespace="no spaces"))
    assert invalid.value.reason == "invalid_argument"


def test_auto_picks_containerd_when_no_engine_answers(containerd, tmp_path):
    found = open_store("auto", StoreOptions(docker_host=f"unix://{tmp_path}/no-docker.sock", containerd_address=containerd.socket_path))
    assert found.name == "containerd"
    nothing = open_store("auto", StoreOptions(docker_host=f"unix://{tmp_path}/no-docker.sock", containerd_address=str(tmp_path / "no.sock")))
    assert nothing.name == "oci"


def test_the_modules_pull_list_and_remove_with_store_containerd(containerd, registry, corpus):
    options = {"store": "containerd", "containerd_address": containerd.socket_path}
    names = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"]
    pulled = run_module("image_pull", dict(options, name=names))
    assert pulled["changed"] and pulled["store"]["type"] == "containerd"
    again = run_module("image_pull", dict(options, name=names))
    assert not again["changed"]
    facts = run_module("image_facts", options)
    assert sorted(image["reference"] for image in facts["images"]) == sorted(names)
    assert facts["summary"]["shared_layers"][0]["digest"] == corpus.app.layers[0].digest
    planned = run_module("image_remove", dict(options, name=[names[0]]), check=True)
    removed = run_module("image_remove", dict(options, name=[names[0]]))
    assert removed["changed"] and removed["untagged"] == [names[0]]
    assert removed["bytes_freed"] == planned["bytes_freed"] == len(corpus.app.manifest) + len(corpus.app.config) + corpus.app.layers[1].size
    assert [layer["digest"] for layer in removed["kept_layers"]] == [corpus.app.layers[0].digest]


def test_a_pin_by_digest_alone_and_the_cri_digest_name_are_one_image(store, containerd, registry, corpus):
    tag, pinned = f"{registry.host}/team/worker:1", f"{registry.host}/team/app@{corpus.app.digest}"
    (by_digest,) = pull(store, [pinned])
    assert by_digest.changed and containerd.image_names()[pinned] == corpus.app.digest
    pull(store, [tag])
    assert containerd.image_names()[f"{registry.host}/team/worker@{corpus.worker.digest}"] == corpus.worker.digest, "named as the CRI plugin names a pull"
    labels = sorted(record.reference.familiar for record in store.images())
    assert labels == sorted([pinned, tag]), "the digest name beside a tag is that image, not another"
    done = store.remove(RemovalRequest(names=[tag]), check_mode=False)
    assert done.untagged == [tag] and set(containerd.image_names()) <= {pinned, corpus.app.id}
    assert corpus.worker.layers[1].digest not in containerd.ok("content", "ls", "--quiet")


def test_corrupt_bytes_fail_their_image_only_and_containerd_never_sees_them(store, containerd, proxy, corpus):
    import tempfile

    before = {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("dockyard-containerd-")}
    layer = corpus.app.layers[1].digest
    proxy.add(Fault(path=f"/blobs/{layer}", kind="corrupt", times=100))
    requests = [PullRequest(parse_reference(f"{proxy.host}/team/{repo}:1"), host_platform()) for repo in ("app", "worker")]
    app, worker = store.puller(client(), 3, False).pull(requests)
    assert app.error is not None and app.error.reason == "digest_mismatch" and layer in app.error.message
    assert worker.error is None and worker.changed
    assert set(containerd.image_names()) - {corpus.worker.id} == {f"{proxy.host}/team/worker:1", f"{proxy.host}/team/worker@{corpus.worker.digest}"}
    assert layer not in containerd.ok("content", "ls", "--quiet")
    after = {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("dockyard-containerd-")}
    assert after <= before, "the private directory is removed in every outcome"


def test_a_tag_that_moved_is_pulled_again_under_policy_always(store, containerd, registry, corpus):
    name = f"{registry.host}/team/moving:1"
    pusher = Pusher(registry.url)
    pusher.image("team/moving", "1", corpus.app)
    (first,) = pull(store, [name])
    assert first.digest == corpus.app.digest
    pusher.image("team/moving", "1", corpus.worker)
    (unchanged,) = pull(store, [name])
    assert not unchanged.changed and unchanged.digest == corpus.app.digest, "policy missing asks nothing"
    (moved,) = pull(store, [name], policy="always")
    assert moved.changed and moved.before == corpus.app.digest and moved.digest == corpus.worker.digest
    assert [layer.status for layer in moved.layers] == [ALREADY_EXISTS, PULL_COMPLETE]
    assert containerd.image_names()[name] == corpus.worker.digest
    assert checked(containerd)[name] == ("complete", "true")
    listed = {image_label(record): record.digest for record in store.images()}
    assert listed[name] == corpus.worker.digest and listed[f"{registry.host}/team/moving@{corpus.app.digest}"] == corpus.app.digest, (
        "the image the tag left stays, named by its digest, until a removal takes it (as after containerd's own pulls)"
    )


@pytest.fixture
def cri(containerd):
    """The CRI image service of the test containerd, on its main socket, as the kubelet reaches it."""
    service = ImageService(containerd.socket_path)
    yield service
    service.close()


def wait_for_cri_image(cri, name: str) -> CriImage:
    """The CRI plugin learns of an image from containerd's events, a moment after it is stored: wait for it."""
    deadline = time.monotonic() + 10
    while (image := cri.image_status(name)) is None:
        assert time.monotonic() < deadline, f"the CRI image service never saw {name}"
        time.sleep(0.05)
    return image


def test_the_kubelet_sees_what_image_pull_put_into_containerd(containerd, cri, registry, corpus):
    options = {"store": "containerd", "containerd_address": containerd.socket_path}
    tags = [f"{registry.host}/team/app:1", f"{registry.host}/team/multi:1"]
    pin = f"{registry.host}/team/worker@{corpus.worker.digest}"
    predicted = run_module("image_pull", dict(options, name=[*tags, pin]), check=True)
    assert predicted["changed"]
    assert [cri.image_status(name) for name in [*tags, pin]] == [None, None, None], "check mode stored nothing the kubelet could see"
    pulled = run_module("image_pull", dict(options, name=[*tags, pin]))
    assert pulled["changed"]
    assert [(image["id"], image["digest"]) for image in pulled["images"]] == [
        (corpus.app.id, corpus.app.digest),
        (corpus.amd64.id, corpus.multi.digest),
        (corpus.worker.id, corpus.worker.digest),
    ]
    for name, image in zip([*tags, pin], pulled["images"]):
        seen = wait_for_cri_image(cri, name)
        assert seen.id == image["id"], f"{name}: the kubelet knows the image by its config digest"
        assert name in (seen.repo_tags if name in tags else seen.repo_digests), f"{name}: {seen}"
        assert cri.image_status(image["id"]) == seen, "and finds it by that id"
    assert cri.image_status(f"{registry.host}/team/oci:1") is None, "an image never pulled is absent"


def test_a_pod_pinned_by_digest_finds_an_image_pulled_by_tag(containerd, cri, registry, corpus):
    name = f"{registry.host}/team/app:1"
    (image,) = run_module("image_pull", {"store": "containerd", "containerd_address": containerd.socket_path, "name": [name]})["images"]
    pinned = f"{registry.host}/team/app@{image['digest']}"
    seen = wait_for_cri_image(cri, name)
    assert seen.repo_digests == (pinned,), "the kubelet reports the digest pulled"
    assert cri.image_status(pinned) == seen, "a pod that names the image by its digest needs no pull"


def test_facts_call_missing_what_a_pull_would_bring_again(store, containerd, registry, corpus):
    """image_facts' `missing` is the pull's own rule: a tag whose digest name is gone is pulled again, so the
    prewarm role, which skips the pull of a host whose store misses nothing, does not skip that one."""
    from ansible_collections.dockyard.images.plugins.module_utils._facts import store_facts

    tag = f"{registry.host}/team/worker:1"
    pull(store, [tag])
    assert store_facts(store, [tag], None)[1] == []
    containerd.ok("images", "rm", f"{registry.host}/team/worker@{corpus.worker.digest}")
    assert store_facts(store, [tag], None)[1] == [tag], "the CRI's digest name is gone: a pull brings it back"
    pull(store, [tag])
    assert containerd.image_names()[f"{registry.host}/team/worker@{corpus.worker.digest}"] == corpus.worker.digest
    assert store_facts(store, [tag], None)[1] == []


def ctr_wrapper(folder, real_ctr: str, before_import: str) -> str:
    """PATH with a `ctr` first that runs `before_import` (shell) before each `images import`, then the real ctr."""
    script = folder / "ctr"
    script.write_text(f'#!/bin/sh\ncase " $* " in *" images import "*) {before_import} ;; esac\nexec {real_ctr} "$@"\n')
    script.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def collect_garbage(containerd, real_ctr: str) -> str:
    """Shell that makes containerd collect its garbage at once: a lease deleted with --sync runs the collector."""
    ctr = f"{real_ctr} --address {containerd.socket_path}"
    return f"{ctr} leases create --id gc-now >/dev/null && {ctr} leases delete --sync gc-now >/dev/null || exit 3"


def test_blobs_written_before_their_import_outlive_the_garbage_collector_and_leave_with_a_failed_pull(containerd, registry, corpus, tmp_path, monkeypatch):
    """Each blob is in containerd before its image is imported; the pull's lease keeps it from the collector
    meanwhile (a collection forced before every import takes nothing), and goes with the pull: nothing a
    failed pull wrote stays behind once the collector runs."""
    names, real_ctr = [f"{registry.host}/team/app:1", f"{registry.host}/team/worker:1"], shutil.which("ctr")
    stray = os.urandom(64)  # a blob no image and no lease holds: the collector takes it when it runs
    containerd.ok("content", "ingest", "--expected-digest", f"sha256:{hashlib.sha256(stray).hexdigest()}", "stray", stdin=stray)
    assert f"sha256:{hashlib.sha256(stray).hexdigest()}" in containerd.ok("content", "ls", "--quiet")
    monkeypatch.setenv("PATH", ctr_wrapper(tmp_path, real_ctr, collect_garbage(containerd, real_ctr)))
    store = open_store("containerd", StoreOptions(containerd_address=containerd.socket_path))
    pull(store, names)
    assert f"sha256:{hashlib.sha256(stray).hexdigest()}" not in containerd.ok("content", "ls", "--quiet"), "the collector ran"
    assert checked(containerd)[names[0]] == ("complete", "true") and checked(containerd)[names[1]] == ("complete", "true")
    assert not [line for line in containerd.ok("leases", "ls").splitlines()[1:] if line.startswith("dockyard-")], "no lease left"

    containerd.remove_all()
    monkeypatch.setenv("PATH", ctr_wrapper(tmp_path, real_ctr, "exit 1"))  # every import fails
    store = open_store("containerd", StoreOptions(containerd_address=containerd.socket_path))
    wanted = [PullRequest(parse_reference(name), host_platform()) for name in names]
    results = store.puller(client(), 3, False).pull(wanted)
    assert all(result.error is not None and result.error.reason == "engine_error" for result in results)
    subprocess.run(["sh", "-c", collect_garbage(containerd, real_ctr)], check=True)
    assert containerd.image_names() == {} and containerd.ok("content", "ls", "--quiet").split() == [], "nothing half-written stays"
    assert not [line for line in containerd.ok("leases", "ls").splitlines()[1:] if line.startswith("dockyard-")]
